"""What a web page could make a browser send to a node on 127.0.0.1 is refused:
a non-JSON/msgpack POST to /v1/rpc (415), a foreign Origin (403, on every route
and on the WebSocket handshake) and a DNS-rebinding Host (403), each with the
error envelope and a stable code. A real node process over real HTTP."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
import websockets
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from websockets.exceptions import InvalidStatus

from aspen.node.config import load_config
from aspen.node.http_guard import HttpGuard, allowed_host_names
from tests.node.admin_token import auth_headers
from tests.node.node_process import NodeProcess

ALLOWED_ORIGIN = "https://dashboard.example"
ALLOWED_HOST = "aspen.internal"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    config = root / "aspen.toml"
    config.write_text(f'[node]\nallowed_origins = ["{ALLOWED_ORIGIN}/"]\nallowed_hosts = ["{ALLOWED_HOST}"]\n')
    with NodeProcess(root / "data", "--config", str(config)) as proc:
        yield proc


def _rpc(node, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{node.url}/v1/rpc", content=content, headers={**auth_headers(node.data_dir), **headers})


def _error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["type"] == "Error" and doc["body"]["code"] == code and doc["body"]["message"]
    return doc["body"]


PING = b'{"type": "Ping"}'


@pytest.mark.parametrize(
    "media",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "",
    ],
)
def test_rpc_refuses_other_content_types(guarded, media):
    r = _rpc(guarded, PING, **({"content-type": media} if media else {}))
    body = _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "application/json" in body["message"]


def test_refused_rpc_is_not_run(guarded):
    write = msgspec.json.encode({"type": "WriteKey", "body": {"key": "guard/plain", "value": "eA=="}})
    _error(_rpc(guarded, write, **{"content-type": "text/plain"}), 415, "UNSUPPORTED_MEDIA_TYPE")
    read = _rpc(guarded, b'{"type": "ReadKey", "body": {"key": "guard/plain"}}', **{"content-type": "application/json"})
    assert read.status_code == 200 and read.json()["body"]["was_found"] is False


@pytest.mark.parametrize("media", ["application/json", "Application/JSON; charset=utf-8"])
def test_rpc_takes_json(guarded, media):
    r = _rpc(guarded, PING, **{"content-type": media})
    assert r.status_code == 200 and r.json()["type"] == "Pong"


def test_rpc_takes_msgpack(guarded):
    r = _rpc(guarded, msgspec.msgpack.encode({"type": "Ping"}), **{"content-type": "application/msgpack"})
    assert r.status_code == 200 and msgspec.msgpack.decode(r.content)["type"] == "Pong"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_rpc_takes_only_post(guarded, method):
    """POST /v1/rpc skips the router (HttpGuard calls the endpoint itself); every other method still meets it."""
    r = httpx.request(method, f"{guarded.url}/v1/rpc", content=PING, headers={"content-type": "application/json"})
    assert r.status_code == 405 and "POST" in r.headers["allow"]


FOREIGN_ORIGINS = ["https://evil.example", "null", "http://127.0.0.1:1", "https://dashboard.example:444"]


@pytest.mark.parametrize("origin", FOREIGN_ORIGINS)
def test_foreign_origin_refused_on_rpc(guarded, origin):
    body = _error(
        _rpc(guarded, PING, **{"content-type": "application/json", "origin": origin}), 403, "ORIGIN_NOT_ALLOWED"
    )
    assert body["details"]["origin"] == origin


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/v1/watch?prefix=g/"),
        ("PUT", "/v1/blobs"),
        ("GET", "/v1/blobs/ab"),
    ],
)
def test_foreign_origin_refused_on_every_route(guarded, method, path):
    headers = {**auth_headers(guarded.data_dir), "origin": "https://evil.example"}
    r = httpx.request(method, guarded.url + path, headers=headers, content=b"x" if method == "PUT" else None)
    _error(r, 403, "ORIGIN_NOT_ALLOWED")


def test_allowed_origin_passes(guarded):
    r = _rpc(guarded, PING, **{"content-type": "application/json", "origin": ALLOWED_ORIGIN})
    assert r.status_code == 200 and r.json()["type"] == "Pong"


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.", "[::2]:{port}"]
)
def test_rebinding_host_refused(guarded, host):
    host = host.format(port=guarded.port)
    body = _error(_rpc(guarded, PING, **{"content-type": "application/json", "host": host}), 403, "HOST_NOT_ALLOWED")
    assert body["details"]["host"] == host
    r = httpx.get(f"{guarded.url}/healthz", headers={"host": host})
    _error(r, 403, "HOST_NOT_ALLOWED")


@pytest.mark.parametrize(
    "host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST", "[::1]:{port}", f"{ALLOWED_HOST}:80", ALLOWED_HOST]
)
def test_own_names_pass_on_any_port(guarded, host):
    r = _rpc(guarded, PING, **{"content-type": "application/json", "host": host.format(port=guarded.port)})
    assert r.status_code == 200 and r.json()["type"] == "Pong"


def test_wildcard_listen_allows_only_named_hosts():
    names = allowed_host_names(load_config(listen="0.0.0.0:7420", allowed_hosts=["Node-1.Example:7420", "[fd00::5]"]))
    assert names == {"localhost", "127.0.0.1", "::1", "node-1.example", "fd00::5"}
    names = allowed_host_names(load_config(listen="[::]:7420"))
    assert names == {"localhost", "127.0.0.1", "::1"}


def _ws_url(node, host: str | None = None) -> str:
    return f"ws://{host or f'127.0.0.1:{node.port}'}/v1/watch/ws"


async def _ws_refused(node, code: str, **kwargs) -> None:
    with pytest.raises(InvalidStatus) as err:
        async with websockets.connect(additional_headers=auth_headers(node.data_dir), open_timeout=10, **kwargs):
            pass
    response = err.value.response
    assert response.status_code == 403
    doc = json.loads(response.body)
    assert doc["type"] == "Error" and doc["body"]["code"] == code


async def test_websocket_foreign_origin_refused(guarded):
    await _ws_refused(guarded, "ORIGIN_NOT_ALLOWED", uri=_ws_url(guarded), origin="https://evil.example")


async def test_websocket_rebinding_host_refused(guarded):
    uri = _ws_url(guarded, f"evil.example:{guarded.port}")
    await _ws_refused(guarded, "HOST_NOT_ALLOWED", uri=uri, host="127.0.0.1", port=guarded.port)


@pytest.mark.parametrize("origin", [None, ALLOWED_ORIGIN])
async def test_websocket_without_or_with_allowed_origin_works(guarded, origin):
    async with websockets.connect(
        _ws_url(guarded), origin=origin, additional_headers=auth_headers(guarded.data_dir), open_timeout=10
    ) as ws:
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": "guard/ws/"}}))
        assert json.loads(await ws.recv())["type"] == "WatchCreateResult"


async def test_star_turns_the_host_check_off_but_not_the_origin_check():
    inner = Starlette(routes=[Route("/", lambda request: PlainTextResponse("ok"))])
    app = HttpGuard(inner, load_config(allowed_hosts=["*"]))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://anything.example") as h:
        assert (await h.get("/")).text == "ok"
        _error(await h.get("/", headers={"origin": "http://anything.example"}), 403, "ORIGIN_NOT_ALLOWED")
