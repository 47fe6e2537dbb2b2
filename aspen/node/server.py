"""The composition root: open the stores, build the registry from the
``aspen.handlers`` entry points, serve, and shut down in order.

Shutdown on SIGTERM/SIGINT: the HTTP server (:mod:`aspen.node.http_server`)
stops accepting and waits for in-flight requests (at most ``drain_seconds``);
watch streams end because ``services.stopping`` is set; then handlers stop
and the stores close, so every acknowledged write is on disk.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aspen.auth.service import AuthService
from aspen.cluster.blob_replication import ReplicatedBlobStore
from aspen.errors import AspenError, ErrorCode
from aspen.node.app import build_app, build_metrics_app
from aspen.node.blob_backend import open_s3_blobs
from aspen.node.blob_gc import BlobGc, blobs_config
from aspen.node.config import NodeConfig
from aspen.node.http_guard import HttpGuard
from aspen.node.http_server import check_listen_free, serve_apps, server_kind
from aspen.node.services import NodeServices
from aspen.node.watches import WatchHub
from aspen.rpc.handler import HANDLERS_ENTRY_POINT_GROUP
from aspen.rpc.registry import HandlerRegistry, load_entry_point_handlers
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore

if TYPE_CHECKING:
    from aspen.storage.etcd_security import EtcdSecurity

log = logging.getLogger(__name__)


@dataclass
class Node:
    services: NodeServices
    app: HttpGuard
    local_blobs: LocalBlobStore  # ``services.blobs`` itself, or the store it replicates
    blob_gc: BlobGc

    async def close(self) -> None:
        s = self.services
        s.stopping.set()
        await self.blob_gc.stop()
        await s.registry.stop()
        await s.auth.close()
        await s.blobs.close()
        if s.blobs is not self.local_blobs:
            await self.local_blobs.close()
        await s.kv.close()
        log.info("node %s stopped; stores closed", s.node_id)


def peer_verify(config: NodeConfig) -> ssl.SSLContext | bool:
    """How this node checks peers' HTTPS certificates: ``tls_ca``, else the system CAs."""
    if config.tls_ca is None:
        return True
    try:
        return ssl.create_default_context(cafile=config.tls_ca)
    except (ssl.SSLError, OSError) as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"tls_ca {config.tls_ca}: not a CA bundle ({exc})") from None


def check_server_tls(config: NodeConfig) -> None:
    """Load ``tls_cert``/``tls_key`` once up front, so a bad pair is a clear error, not a traceback."""
    if config.tls_cert is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(config.tls_cert, config.tls_key)
    except (ssl.SSLError, OSError) as exc:
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT, f"tls_cert {config.tls_cert} / tls_key {config.tls_key}: cannot load ({exc})"
        ) from None


def etcd_security(config: NodeConfig) -> EtcdSecurity | None:
    """TLS and auth for etcd from the ``etcd_*`` keys; None when none is set."""
    if not (config.etcd_ca or config.etcd_cert or config.etcd_user):
        return None
    from aspen.storage.etcd_security import EtcdSecurity  # grpc loads only for etcd

    return EtcdSecurity.from_files(
        ca=config.etcd_ca, cert=config.etcd_cert, key=config.etcd_key, user=config.etcd_user,
        password=config.etcd_password,
    )  # fmt: skip


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
    verify = peer_verify(config)  # bad TLS files fail before any store is open
    if config.etcd:
        from aspen.storage.etcd import (
            EtcdKeyValueStore,  # fails fast (ETCD_UNREACHABLE) when no member answers
        )

        kv = await EtcdKeyValueStore.open(config.etcd, security=etcd_security(config))
    else:
        kv = await SqliteKeyValueStore.open(data_dir / "kv.sqlite3")
    local_blobs = await LocalBlobStore.open(
        data_dir / "blobs", max_blob_size=blob_cfg.max_blob_bytes, max_total_bytes=blob_cfg.max_total_bytes
    )
    blobs = local_blobs
    node_id = node_id_for(config, data_dir)
    try:
        s3_blobs = await open_s3_blobs(config, kv, node_id)
    except BaseException:
        await local_blobs.close()
        await kv.close()
        raise
    auth = await AuthService.open(data_dir, kv, node_id, shared=bool(config.etcd))
    if s3_blobs is not None:  # every node reads the same bucket: nothing to replicate
        blobs = s3_blobs
    elif config.etcd:  # several nodes: a blob lives where it was added, peers fetch it by hash
        blobs = ReplicatedBlobStore(
            local_blobs,
            kv,
            node_id=node_id,
            url=config.advertise_url,
            replication_factor=int(config.sections.get("cluster", {}).get("blob_replication_factor", 1)),
            peer_token=auth.node_token,
            verify=verify,
        )
    stopping = asyncio.Event()
    quotas = config.sections.get("quotas", {})
    services = NodeServices(
        config=config,
        node_id=node_id,
        data_dir=data_dir,
        kv=kv,
        blobs=blobs,
        registry=HandlerRegistry(),
        watches=WatchHub(
            kv,
            stopping,
            max_watches=int(quotas.get("watches_per_node", 10_000)),
            max_per_caller=int(quotas.get("watches_per_caller", 256)),
        ),
        stopping=stopping,
        auth=auth,
    )
    try:
        services.registry.replace(load_entry_point_handlers(services, HANDLERS_ENTRY_POINT_GROUP))
        await services.registry.start()
    except BaseException:
        await auth.close()
        await blobs.close()
        if blobs is not local_blobs:
            await local_blobs.close()
        await kv.close()
        raise
    blob_gc = BlobGc(blobs, interval=blob_cfg.gc_interval_seconds, grace=blob_cfg.gc_grace_seconds)
    blob_gc.start()
    return Node(services, build_app(services), local_blobs, blob_gc)


async def serve(config: NodeConfig) -> None:
    check_server_tls(config)
    check_listen_free(config)
    node = await open_node(config)
    metrics_app = None if config.metrics_listen is None else build_metrics_app(node.services)
    try:
        log.info(
            "aspen node %s serving on %s (%s), data in %s",
            node.services.node_id, config.listen, server_kind(config), node.services.data_dir,
        )  # fmt: skip
        await serve_apps(config, node.app, metrics_app, node.services.stopping)
    finally:
        await node.close()
