"""A real node (SQLite or etcd) that may reach webhooks on 127.0.0.1, a
webhook receiver that records every POST, and token and polling helpers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aspen.client import SyncClient
from tests.etcd_fixtures import etcd_cluster, open_wiped_store  # noqa: F401
from tests.hooks.real_nodes import until  # noqa: F401 -- polling (the sandbox-reachable `home` is in tests/conftest.py)
from tests.node.node_process import NodeProcess


class Receiver:
    """Records each POST (headers, body) and when it came; answers 500 to the
    first ``fail_first``, then ``status``."""

    def __init__(self) -> None:
        self.status = 200
        self.fail_first = 0
        self.delay = 0.0  # seconds before answering
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.times: list[float] = []  # time.monotonic() of each POST
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.times.append(time.monotonic())
                receiver.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                time.sleep(receiver.delay)
                self.send_response(500 if len(receiver.posts) <= receiver.fail_first else receiver.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a delayed answer never holds up the test's end
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict]:
        return [json.loads(body) for _, body in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


CONFIG = '[hooks]\nwebhook_allow = ["127.0.0.1/32"]\nmax_hooks_per_owner = 3\n'


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
def node(request, home) -> Iterator[NodeProcess]:
    """One node on each KV backend; etcd's store is wiped first."""
    (home / "aspen.toml").write_text(CONFIG)
    extra = ["--config", str(home / "aspen.toml")]
    if request.param == "etcd":
        cluster = request.getfixturevalue("etcd_cluster")
        asyncio.run(wipe(cluster))
        extra += ["--etcd", ",".join(cluster.endpoints)]
    with NodeProcess(home / "data", *extra) as proc:
        yield proc


async def wipe(cluster) -> None:
    store = await open_wiped_store(cluster)
    await store.close()


def mint(node: NodeProcess, *rights: tuple[str, str], subject: str) -> str:
    with SyncClient(node.url) as admin:
        body = {"rights": [{"operation": o, "resource": r} for o, r in rights], "subject": subject, "ttl_seconds": 3600}
        return admin.call("TokenCreate", body)["token"]
