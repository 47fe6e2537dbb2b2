"""Which HTTP server a node runs on, and what both must refuse: starting on
an address something else already listens on (granian binds with
SO_REUSEPORT, so a second node would otherwise share the first one's port)."""

from __future__ import annotations

import socket
import subprocess

import httpx
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
from aspen.node.http_server import check_listen_free, server_kind
from tests.node.node_process import ASPEN, HTTP_SERVERS, NodeProcess, admin_headers, free_port


def test_auto_is_uvicorn_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("ASPEN_HTTP_SERVER", raising=False)
    assert server_kind(load_config()) == "uvicorn"
    assert server_kind(load_config(http_server="granian")) == "granian"
    monkeypatch.setenv("ASPEN_HTTP_SERVER", "granian")
    assert server_kind(load_config()) == "granian"
    assert server_kind(load_config(http_server="uvicorn")) == "uvicorn"  # the config's own choice wins
    monkeypatch.setenv("ASPEN_HTTP_SERVER", "nonsense")  # ignored, not a crash
    assert server_kind(load_config()) == "uvicorn"


def test_an_unknown_server_is_a_config_error():
    with pytest.raises(AspenError) as err:
        load_config(http_server="gunicorn")
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and "http_server" in err.value.message


def test_a_taken_listen_or_metrics_address_is_refused_up_front():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        for config in (load_config(listen=busy), load_config(listen=f"127.0.0.1:{free_port()}", metrics_listen=busy)):
            with pytest.raises(AspenError) as err:
                check_listen_free(config)
            assert err.value.code == ErrorCode.LISTEN_ADDRESS_IN_USE and busy in err.value.message
    check_listen_free(load_config(listen=busy))  # free again once the listener is gone


@pytest.mark.parametrize("server", HTTP_SERVERS)
def test_a_second_node_on_a_served_port_exits_with_a_clear_error(tmp_path, server):
    with NodeProcess(tmp_path / "first", "--http-server", server) as first:
        second = subprocess.run(
            [ASPEN, "node", "start", "--data-dir", str(tmp_path / "second"), "--listen", f"127.0.0.1:{first.port}",
             "--http-server", server],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode != 0
        assert "LISTEN_ADDRESS_IN_USE" in second.stderr + second.stdout
        # the first node still serves every request on its port
        for _ in range(20):
            r = httpx.post(f"{first.url}/v1/rpc", json={"type": "Ping"}, headers=admin_headers(first.data_dir))
            assert r.json()["type"] == "Pong"


@pytest.mark.parametrize("server", HTTP_SERVERS)
def test_both_servers_answer_the_guarded_surface_alike(tmp_path, server):
    with NodeProcess(tmp_path / "data", "--http-server", server) as node:
        assert f"({server})" in node.log()
        anonymous = httpx.post(f"{node.url}/v1/rpc", json={"type": "Ping"})
        assert anonymous.status_code == 401 and anonymous.json()["body"]["code"] == "UNAUTHENTICATED"
        form = httpx.post(f"{node.url}/v1/rpc", content=b"type=Ping", headers={"content-type": "text/plain"})
        assert form.status_code == 415 and form.json()["body"]["code"] == "UNSUPPORTED_MEDIA_TYPE"
        rebound = httpx.get(f"{node.url}/healthz", headers={"host": "evil.example"})
        assert rebound.status_code == 403 and rebound.json()["body"]["code"] == "HOST_NOT_ALLOWED"
        huge = httpx.post(
            f"{node.url}/v1/rpc",
            content=b"{" + b" " * (5 << 20) + b"}",
            headers={**admin_headers(node.data_dir), "content-type": "application/json"},
        )
        assert huge.status_code == 413 and huge.json()["body"]["code"] == "MESSAGE_TOO_LARGE"
        wrong_method = httpx.get(f"{node.url}/v1/rpc")
        assert wrong_method.status_code == 405
