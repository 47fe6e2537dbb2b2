"""Real nodes for blob replication tests: each is a LocalBlobStore behind the
``blob_http_routes`` on a uvicorn server bound to a free loopback port, all
sharing one SQLite KV (standing in for the cluster's etcd)."""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Route

from aspen.auth.service import AuthService
from aspen.cluster.blob_replication import ReplicatedBlobStore
from aspen.cluster.blob_routes import blob_http_routes
from aspen.cluster.membership import NodeRecord, encode_node, node_key
from aspen.storage.blobs import LocalBlobStore


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class Server:
    """A uvicorn server running in this event loop on its own loopback port."""

    def __init__(self, routes: list[Route], sock: socket.socket | None = None) -> None:
        self.sock = sock or bound_socket()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(Starlette(routes=routes), log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.server.should_exit = True
            await self.task
        self.sock.close()


@dataclass
class Node:
    node_id: str
    local: LocalBlobStore
    store: ReplicatedBlobStore
    server: Server
    auth: AuthService

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def headers(self) -> dict[str, str]:
        """A client's credential: the cluster's admin token."""
        return {"authorization": "Bearer " + self.auth.admin_token_path.read_text().strip()}


async def open_auth(kv, data_dir: Path, node_id: str) -> AuthService:
    """A node's real auth; the keys live in the shared KV, as on etcd."""
    return await AuthService.open(data_dir, kv, node_id, shared=True)


async def register(kv, node_id: str, url: str) -> None:
    """What a node's NodeRegistration writes, without the lease and refresh."""
    now = time.time()
    record = NodeRecord(node_id=node_id, url=url, version="test", started_at=now, last_seen=now)
    await kv.put(node_key(node_id), encode_node(record))


@pytest.fixture
async def cluster(tmp_path, kv):
    """``await cluster(n, replication_factor=…)`` → n started, registered nodes."""
    nodes: list[Node] = []

    async def make(n: int, *, replication_factor: int = 1, registered: bool = True) -> list[Node]:
        made = []
        for _ in range(n):
            node_id = f"n{len(nodes) + 1}"
            local = await LocalBlobStore.open(Path(tmp_path) / node_id)
            auth = await open_auth(kv, Path(tmp_path) / f"{node_id}-auth", node_id)
            sock = bound_socket()
            url = f"http://127.0.0.1:{sock.getsockname()[1]}"
            store = ReplicatedBlobStore(
                local, kv, node_id=node_id, url=url, replication_factor=replication_factor, peer_token=auth.node_token
            )
            server = Server(blob_http_routes(store, auth), sock)
            await server.start()
            if registered:
                await register(kv, node_id, server.url)
            node = Node(node_id, local, store, server, auth)
            nodes.append(node)
            made.append(node)
        return made

    yield make
    for node in nodes:
        await node.server.stop()
        await node.store.close()
        await node.local.close()
        await node.auth.close()
