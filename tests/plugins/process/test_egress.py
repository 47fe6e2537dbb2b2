"""``allowed_hosts``: a real plugin process in the real sandbox reaches the
hosts its manifest allows through the node's egress proxy, and nothing else."""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aspen.plugins.process.egress import EgressLimits
from tests.plugins.process.conftest import until


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from {self.server.server_port}{self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def hello_servers():
    """Two real HTTP servers on the host's loopback: the allowed one, and one
    standing for the node's own ports (etcd, admin). Yields their ports."""
    started = [ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in started:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [s.server_port for s in started]
    finally:
        for server in started:
            server.shutdown()
            server.server_close()


@pytest.fixture
def servers():
    with hello_servers() as ports:
        yield ports


async def call(plugin, type: str, **body) -> dict:
    return (await plugin.request(type, body))["body"]


async def test_allowed_host_is_reached_through_the_proxy(launch, servers):
    port, _ = servers
    plugin = await launch("egress", allowed_hosts=(f"127.0.0.1:{port}",))
    fetched = await call(plugin, "Fetch", url=f"http://127.0.0.1:{port}/plain?q=1")
    assert fetched == {"status": 200, "body": f"hello from {port}/plain?q=1"}
    tunneled = await call(plugin, "Tunnel", target=f"127.0.0.1:{port}")
    assert tunneled == {"status": 200, "body": f"hello from {port}/"}


async def test_other_ports_hosts_and_names_are_refused(launch, servers):
    port, node_port = servers
    plugin = await launch("egress", allowed_hosts=(f"127.0.0.1:{port}", f"localhost:{port}", "*.example.com"))
    denied = {"status": 403, "code": "PLUGIN_EGRESS_DENIED"}
    assert await call(plugin, "Fetch", url=f"http://127.0.0.1:{node_port}/") == denied
    assert await call(plugin, "Tunnel", target=f"127.0.0.1:{node_port}") == denied
    assert await call(plugin, "Tunnel", target=f"127.0.0.2:{port}") == denied
    assert await call(plugin, "Tunnel", target="example.com:443") == denied  # the wildcard is below it only
    assert await call(plugin, "Tunnel", target="api.example.com:22") == denied  # no port: 80 and 443 only
    # a name that resolves to loopback never reaches it, even when its pattern allows the name
    refused = {"status": 403, "code": "PLUGIN_EGRESS_ADDRESS_REFUSED"}
    assert await call(plugin, "Tunnel", target=f"localhost:{port}") == refused
    assert await call(plugin, "Fetch", url=f"http://localhost:{port}/") == refused
    malformed = {"status": 400, "code": "BAD_REQUEST"}
    assert await call(plugin, "Tunnel", target="127.0.0.1") == malformed  # CONNECT names a port
    assert await call(plugin, "Tunnel", target="bad_name!:443") == malformed
    assert await call(plugin, "Raw", data="GET / HTTP/1.1\r\nHost: x\r\n\r\n") == malformed  # not a proxy request
    assert await call(plugin, "Raw", data="GET https://x.example.com/ HTTP/1.1\r\nHost: x\r\n\r\n") == malformed
    assert await call(plugin, "Raw", data="\x00\xffgarbage\r\n\r\n") == malformed
    assert await call(plugin, "Raw", data="GET http://a/ HTTP/1.1\r\nX: " + "a" * 100, times=200) == malformed
    assert await call(plugin, "Raw", data="GET http://user@127.0.0.1/ HTTP/1.1\r\nHost: a\r\n\r\n") == malformed
    assert plugin.restarts == 0


async def test_direct_connections_have_no_network(launch, servers):
    port, _ = servers
    plugin = await launch("egress", allowed_hosts=(f"127.0.0.1:{port}",))
    for host, target in (("127.0.0.1", port), ("1.1.1.1", 80), ("10.0.0.1", 80)):
        assert (await call(plugin, "Direct", host=host, port=target))["connected"] is False, host


async def test_without_allowed_hosts_no_proxy_and_no_network(launch, servers):
    port, _ = servers
    sup, _ = launch.make("egress")
    await sup.start()
    assert sup.egress is None
    assert "error" in await call(sup, "Fetch", url=f"http://127.0.0.1:{port}/")
    assert (await call(sup, "Direct", host="127.0.0.1", port=3128))["connected"] is False
    assert (await call(sup, "Direct", host="127.0.0.1", port=port))["connected"] is False


async def test_connection_quota_and_cleanup(launch, servers):
    port, _ = servers
    plugin = await launch("egress", allowed_hosts=(f"127.0.0.1:{port}",), egress=EgressLimits(max_connections=2))
    held = await call(plugin, "Hold", target=f"127.0.0.1:{port}", count=3)
    assert held["statuses"] == [[200, None], [200, None], [429, "PLUGIN_EGRESS_TOO_MANY_CONNECTIONS"]]
    await call(plugin, "Release")
    await until(lambda: plugin.egress.open == 0, what="the proxy's connections to close")
    assert (await call(plugin, "Tunnel", target=f"127.0.0.1:{port}"))["status"] == 200
    directory = plugin.egress.directory
    assert directory.is_dir() and (directory.stat().st_mode & 0o777) == 0o711
    await plugin.stop()
    assert not directory.exists()


async def test_an_idle_connection_is_closed(launch, servers):
    port, _ = servers
    idle = EgressLimits(idle_seconds=0.3)
    plugin = await launch("egress", allowed_hosts=(f"127.0.0.1:{port}",), egress=idle)
    assert (await call(plugin, "Hold", target=f"127.0.0.1:{port}", count=1))["statuses"] == [[200, None]]
    assert plugin.egress.open == 1
    await until(lambda: plugin.egress.open == 0, what="the idle tunnel to close")
