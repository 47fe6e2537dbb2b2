"""Aspen node membership, kept in the KV store itself.

Each node writes ``__cluster:nodes:{node_id}`` on a lease and keeps the lease
alive, so a node that dies (or loses etcd) drops out of the listing within
one TTL without anyone cleaning up after it. Works on any KeyValueStore;
with the embedded backend it simply lists the one node.
"""

from __future__ import annotations

import asyncio
import logging
import time

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

NODES_PREFIX = "__cluster:nodes:"
DEFAULT_TTL = 10  # seconds: how long a dead node stays listed at most


class NodeRecord(msgspec.Struct, frozen=True):
    node_id: str
    url: str
    version: str
    started_at: float  # unix seconds
    last_seen: float  # unix seconds, refreshed with every keep-alive


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(NodeRecord)


def node_key(node_id: str) -> str:
    return NODES_PREFIX + node_id


def encode_node(record: NodeRecord) -> bytes:
    return _encoder.encode(record)


def decode_node(raw: bytes) -> NodeRecord:
    """Raises :class:`msgspec.DecodeError` for anything but a NodeRecord."""
    return _decoder.decode(raw)


async def list_nodes(kv: KeyValueStore) -> list[NodeRecord]:
    """Live nodes (their lease has not expired), ordered by node id."""
    out: list[NodeRecord] = []
    token = None
    while True:
        page = await kv.scan(NODES_PREFIX, continuation=token)
        for entry in page.entries:
            try:
                out.append(decode_node(entry.value))
            except msgspec.DecodeError:
                log.warning("ignoring a malformed node record under %s", entry.key)
        if not page.is_truncated:
            return out
        token = page.continuation_token


class NodeRegistration:
    """Registers one node and keeps it registered until :meth:`stop`.

    Every ``ttl/3`` seconds the lease is kept alive and ``last_seen`` is
    rewritten; if the lease was lost (etcd unreachable for longer than the
    TTL), a new lease is granted and the record written again."""

    def __init__(self, kv: KeyValueStore, node_id: str, url: str, version: str, *, ttl: int = DEFAULT_TTL) -> None:
        if ttl < 2:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "the registration TTL must be at least 2 seconds")
        self.kv = kv
        self.ttl = ttl
        self.record = NodeRecord(node_id=node_id, url=url, version=version, started_at=time.time(), last_seen=0.0)
        self.lease_id = 0
        self._task: asyncio.Task | None = None

    async def _write(self) -> None:
        self.record = msgspec.structs.replace(self.record, last_seen=time.time())
        await self.kv.put(node_key(self.record.node_id), encode_node(self.record), lease=self.lease_id)

    async def _register(self) -> None:
        self.lease_id = (await self.kv.lease_grant(self.ttl)).id
        await self._write()

    async def start(self) -> None:
        """Register now (errors reach the caller: a node must not start
        unregistered), then refresh in the background."""
        await self._register()
        self._task = asyncio.get_running_loop().create_task(self._refresh_forever(), name="aspen-node-registration")

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                try:
                    await self.kv.lease_keepalive(self.lease_id)
                    await self._write()
                except AspenError as exc:
                    if exc.code != ErrorCode.LEASE_NOT_FOUND:
                        raise
                    log.warning("registration lease %x expired; registering again", self.lease_id)
                    await self._register()
            except AspenError as exc:
                if exc.code == ErrorCode.STORE_CLOSED:
                    return
                log.warning("node registration refresh failed: %s", exc)

    async def stop(self) -> None:
        """Stop refreshing and deregister (revoking the lease deletes the key)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self.lease_id:
            try:
                await self.kv.lease_revoke(self.lease_id)
            except AspenError as exc:
                log.info("could not revoke registration lease: %s", exc)
            self.lease_id = 0
