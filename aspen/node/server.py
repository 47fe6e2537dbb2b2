"""The composition root: open the stores, build the registry from the
``aspen.handlers`` entry points, serve, and shut down in order.

Shutdown on SIGTERM/SIGINT: uvicorn stops accepting and waits for in-flight
requests (at most ``drain_seconds``); watch streams end because
``services.stopping`` is set; then handlers stop and the stores close, so
every acknowledged write is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from aspen.cluster.blob_replication import ReplicatedBlobStore
from aspen.node.app import build_app
from aspen.node.blob_gc import BlobGc, blobs_config
from aspen.node.config import NodeConfig
from aspen.node.services import NodeServices
from aspen.node.watches import WatchHub
from aspen.rpc.handler import HANDLERS_ENTRY_POINT_GROUP
from aspen.rpc.registry import HandlerRegistry, load_entry_point_handlers
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore

log = logging.getLogger(__name__)


@dataclass
class Node:
    services: NodeServices
    app: Starlette
    local_blobs: LocalBlobStore  # ``services.blobs`` itself, or the store it replicates
    blob_gc: BlobGc

    async def close(self) -> None:
        s = self.services
        s.stopping.set()
        await self.blob_gc.stop()
        await s.registry.stop()
        await s.blobs.close()
        if s.blobs is not self.local_blobs:
            await self.local_blobs.close()
        await s.kv.close()
        log.info("node %s stopped; stores closed", s.node_id)


def node_id_for(config: NodeConfig, data_dir: Path) -> str:
    """The configured id, else one generated on first start and kept."""
    if config.node_id:
        return config.node_id
    path = data_dir / "node_id"
    if path.exists():
        return path.read_text().strip()
    node_id = secrets.token_hex(8)
    path.write_text(node_id + "\n")
    return node_id


async def open_node(config: NodeConfig) -> Node:
    blob_cfg = blobs_config(config)  # before anything opens: a bad table leaks nothing
    data_dir = Path(config.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if config.etcd:
        from aspen.storage.etcd import (
            EtcdKeyValueStore,  # fails fast (ETCD_UNREACHABLE) when no member answers
        )

        kv = await EtcdKeyValueStore.open(config.etcd)
    else:
        kv = await SqliteKeyValueStore.open(data_dir / "kv.sqlite3")
    local_blobs = await LocalBlobStore.open(
        data_dir / "blobs", max_blob_size=blob_cfg.max_blob_bytes, max_total_bytes=blob_cfg.max_total_bytes
    )
    blobs = local_blobs
    node_id = node_id_for(config, data_dir)
    if config.etcd:  # several nodes: a blob lives where it was added, peers fetch it by hash
        blobs = ReplicatedBlobStore(
            local_blobs,
            kv,
            node_id=node_id,
            url=config.advertise_url,
            replication_factor=int(config.sections.get("cluster", {}).get("blob_replication_factor", 1)),
        )
    stopping = asyncio.Event()
    services = NodeServices(
        config=config,
        node_id=node_id,
        data_dir=data_dir,
        kv=kv,
        blobs=blobs,
        registry=HandlerRegistry(),
        watches=WatchHub(kv, stopping),
        stopping=stopping,
    )
    try:
        services.registry.replace(load_entry_point_handlers(services, HANDLERS_ENTRY_POINT_GROUP))
        await services.registry.start()
    except BaseException:
        await blobs.close()
        if blobs is not local_blobs:
            await local_blobs.close()
        await kv.close()
        raise
    blob_gc = BlobGc(blobs, interval=blob_cfg.gc_interval_seconds, grace=blob_cfg.gc_grace_seconds)
    blob_gc.start()
    return Node(services, build_app(services), local_blobs, blob_gc)


class _Server(uvicorn.Server):
    """Tells the node it is stopping the moment the signal arrives, so long
    streams (watches) end while uvicorn drains ordinary requests."""

    def __init__(self, config: uvicorn.Config, stopping: asyncio.Event) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig, frame) -> None:
        self._stopping.set()
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals when serve() returns, which would
        # kill the process before the stores close; we exit 0 after closing.
        self._captured_signals.clear()


async def serve(config: NodeConfig) -> None:
    node = await open_node(config)
    server = _Server(
        uvicorn.Config(
            node.app,
            host=config.host,
            port=config.port,
            log_level=config.log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=config.drain_seconds,
        ),
        node.services.stopping,
    )
    try:
        log.info("aspen node %s serving on %s, data in %s", node.services.node_id, config.listen, node.services.data_dir)
        await server.serve()
    finally:
        await node.close()
