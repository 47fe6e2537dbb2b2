"""Blobs across nodes: a local store plus locations recorded in the shared KV.

A blob lives on the node that received it; ``__cluster:blobs:{hash}:{node_id}``
(a :class:`BlobLocation`) says where. With ``replication_factor`` N > 1 an
add pushes the blob to N-1 other live nodes (those registered by
:mod:`aspen.cluster.membership`, chosen by rendezvous hashing so placement spreads
evenly and is stable) before it returns. A read that misses locally fetches
the blob from a node that has it, streaming into the local store with the
expected hash: a peer serving other bytes is caught when the stream ends and
nothing is stored (the temp file is discarded), then the next peer is tried.
Because the local store only renames a complete, verified temp file into
place, a transfer cut off by a dying peer or a dying node never leaves a
partial blob visible.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterable, AsyncIterator
from typing import Annotated

import httpx
import msgspec
from blake3 import blake3

from aspen.cluster.blob_routes import PEER_HEADER
from aspen.cluster.membership import list_nodes
from aspen.errors import AspenError, ErrorCode
from aspen.storage.blob_args import check_hash
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import BlobAddResult, BlobPage

log = logging.getLogger(__name__)

BLOBS_PREFIX = "__cluster:blobs:"
MAX_REPLICATION_FACTOR = 5
TRANSFER_TIMEOUT = 300.0


class BlobLocation(msgspec.Struct, frozen=True):
    """One node's copy of a blob: where to fetch it and how many bytes to
    expect (a peer sending more is cut off)."""

    url: str
    size: Annotated[int, msgspec.Meta(ge=0)]


_location_encoder = msgspec.json.Encoder()
_location_decoder = msgspec.json.Decoder(BlobLocation)


def location_key(hash: str, node_id: str) -> str:
    return f"{BLOBS_PREFIX}{hash}:{node_id}"


def encode_location(location: BlobLocation) -> bytes:
    return _location_encoder.encode(location)


def decode_location(raw: bytes) -> BlobLocation:
    """Raises :class:`msgspec.DecodeError` for anything but a BlobLocation."""
    return _location_decoder.decode(raw)


def _error_code(resp: httpx.Response) -> str | None:
    try:
        return resp.json()["body"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


class ReplicatedBlobStore:
    """:class:`aspen.storage.protocol.BlobStore` for a node of a cluster.

    ``has`` and ``size`` answer for the cluster (local copy or a recorded
    location); ``list``, ``unprotect`` and ``gc`` are about this node's copies;
    reads and ``protect`` fetch a missing blob first."""

    def __init__(
        self,
        local: LocalBlobStore,
        kv: KeyValueStore,
        *,
        node_id: str,
        url: str,
        replication_factor: int = 1,
        http: httpx.AsyncClient | None = None,
        verify: ssl.SSLContext | bool = True,
        transfer_timeout: float = TRANSFER_TIMEOUT,
        peer_token: str | None = None,
    ) -> None:
        """``verify`` checks peers' HTTPS certificates (``[node] tls_ca``) when
        the store makes its own ``http`` client."""
        if not isinstance(node_id, str) or not node_id or ":" in node_id:
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, f"node_id must be a non-empty string without ':', got {node_id!r}"
            )
        if (
            not isinstance(replication_factor, int)
            or isinstance(replication_factor, bool)
            or not 1 <= replication_factor <= MAX_REPLICATION_FACTOR
        ):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT,
                f"replication_factor must be 1..{MAX_REPLICATION_FACTOR}, got {replication_factor!r}",
            )
        self.local = local
        self.kv = kv
        self.node_id = node_id
        self.url = url.rstrip("/")
        self.replication_factor = replication_factor
        self.transfer_timeout = transfer_timeout
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), verify=verify)
        # the node credential: only cluster members can push or fetch local copies
        self._peer_headers = {PEER_HEADER: "1"}
        if peer_token:
            self._peer_headers["authorization"] = f"Bearer {peer_token}"
        self._fetching: dict[str, asyncio.Lock] = {}

    # --- locations and membership ------------------------------------------

    async def _scan_all(self, prefix: str) -> list[tuple[str, bytes]]:
        out, token = [], None
        while True:
            page = await self.kv.scan(prefix, limit=1000, continuation=token)
            out += [(e.key, e.value) for e in page.entries]
            if not page.is_truncated:
                return out
            token = page.continuation_token

    async def _live_nodes(self) -> dict[str, str]:
        """node_id → url of every registered node (registrations live on a lease)."""
        return {n.node_id: n.url.rstrip("/") for n in await list_nodes(self.kv)}

    async def _locations(self, h: str) -> dict[str, BlobLocation]:
        """node_id → location of every recorded copy of ``h``."""
        prefix = f"{BLOBS_PREFIX}{h}:"
        locs = {}
        for key, value in await self._scan_all(prefix):
            try:
                locs[key[len(prefix) :]] = decode_location(value)
            except msgspec.DecodeError:
                log.warning("ignoring malformed blob location %s", key)
        return locs

    async def _record(self, h: str, size: int, node_id: str | None = None, url: str | None = None) -> None:
        value = encode_location(BlobLocation(url=url or self.url, size=size))
        await self.kv.put(location_key(h, node_id or self.node_id), value)

    async def _forget(self, h: str) -> None:
        await self.kv.delete(location_key(h, self.node_id))

    # --- add and push --------------------------------------------------------

    async def add_bytes(self, data: bytes) -> BlobAddResult:
        return await self._placed(await self.local.add_bytes(data))

    async def add_stream(self, chunks: AsyncIterable[bytes]) -> BlobAddResult:
        return await self._placed(await self.local.add_stream(chunks))

    async def add_file(self, path: str) -> BlobAddResult:
        return await self._placed(await self.local.add_file(path))

    async def accept_replica_stream(self, chunks: AsyncIterable[bytes]) -> BlobAddResult:
        """A copy pushed by another node: store and record it, push no further."""
        result = await self.local.add_stream(chunks)
        await self._record(result.hash, result.size)
        return result

    async def _placed(self, result: BlobAddResult) -> BlobAddResult:
        await self._record(result.hash, result.size)
        if self.replication_factor > 1:
            await self._replicate(result.hash, result.size)
        return result

    async def _replicate(self, h: str, size: int) -> None:
        """Push to live nodes without a copy until ``replication_factor`` nodes
        hold it; a node that fails is skipped for the next candidate."""
        locs = await self._locations(h)
        missing = self.replication_factor - len(locs.keys() | {self.node_id})
        if missing <= 0:
            return
        nodes = await self._live_nodes()
        candidates = sorted(
            (n for n in nodes if n != self.node_id and n not in locs),
            key=lambda n: blake3(f"{h}:{n}".encode()).digest(),
        )
        for node_id in candidates:
            if missing == 0:
                return
            try:
                await self._push(h, node_id, nodes[node_id])
            except (httpx.HTTPError, AspenError, OSError, TimeoutError) as exc:
                log.warning("pushing blob %s to node %s failed: %s", h, node_id, exc)
                continue
            await self._record(h, size, node_id, nodes[node_id])
            missing -= 1
        if missing:
            log.warning("blob %s has %d fewer copies than the replication factor", h, missing)

    async def _push(self, h: str, node_id: str, url: str) -> None:
        async with asyncio.timeout(self.transfer_timeout):
            resp = await self._http.put(f"{url}/v1/blobs", content=self.local.get_stream(h), headers=self._peer_headers)
        if resp.status_code not in (200, 201) or resp.json().get("hash") != h:
            raise AspenError(
                ErrorCode.PEER_UNAVAILABLE, f"node {node_id} refused blob {h}: HTTP {resp.status_code}", node=node_id
            )

    # --- fetch on a miss -----------------------------------------------------

    async def _ensure_local(self, h: str) -> None:
        if await self.local.has(h):
            return
        lock = self._fetching.setdefault(h, asyncio.Lock())
        try:
            async with lock:
                if not await self.local.has(h):
                    await self._fetch(h)
        finally:
            if not lock.locked() and self._fetching.get(h) is lock:
                del self._fetching[h]

    async def _fetch(self, h: str) -> None:
        locs = await self._locations(h)
        if self.node_id in locs:  # recorded here, but the copy is gone
            await self._forget(h)
            del locs[self.node_id]
        nodes = await self._live_nodes()
        # registered nodes first, at their current URL; then unregistered ones
        order = sorted(locs, key=lambda n: (n not in nodes, blake3(f"{h}:{n}".encode()).digest()))
        unreachable = []
        for node_id in order:
            url = nodes.get(node_id, locs[node_id].url.rstrip("/"))
            try:
                found = await self._fetch_from(h, node_id, url, locs[node_id].size)
            except (httpx.HTTPError, OSError, TimeoutError) as exc:
                log.warning("fetching blob %s from node %s failed: %s", h, node_id, exc)
                unreachable.append(node_id)
                continue
            except AspenError as exc:
                log.warning("node %s served blob %s wrongly: %s", node_id, h, exc.message)
                continue
            if found:
                return
        if unreachable:
            raise AspenError(
                ErrorCode.PEER_UNAVAILABLE, f"blob {h} is on unreachable nodes {unreachable}", hash=h, nodes=unreachable
            )
        raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found on any node", hash=h)

    async def _fetch_from(self, h: str, node_id: str, url: str, size: int) -> bool:
        """Stream the blob from one peer into the local store; False when the
        peer says it has no copy (its stale location is dropped)."""
        async with asyncio.timeout(self.transfer_timeout):
            async with self._http.stream("GET", f"{url}/v1/blobs/{h}", headers=self._peer_headers) as resp:
                if resp.status_code == 404:
                    await resp.aread()
                    if _error_code(resp) == ErrorCode.BLOB_NOT_FOUND:
                        await self.kv.delete(location_key(h, node_id))
                        return False
                if resp.status_code != 200:
                    raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"node {node_id} answered HTTP {resp.status_code}")

                async def body() -> AsyncIterator[bytes]:
                    received = 0
                    async for chunk in resp.aiter_bytes():
                        received += len(chunk)
                        if received > size:
                            raise AspenError(ErrorCode.BLOB_CORRUPT, f"node {node_id} sent more than {size} bytes")
                        yield chunk

                result = await self.local.add_stream(body(), expected_hash=h)
        await self._record(h, result.size)
        return True

    # --- reads -----------------------------------------------------------------

    async def get_bytes(self, hash: str, *, offset: int = 0, length: int | None = None) -> bytes:
        h = check_hash(hash)
        await self._ensure_local(h)
        try:
            return await self.local.get_bytes(h, offset=offset, length=length)
        except AspenError as exc:
            if exc.code != ErrorCode.BLOB_CORRUPT:
                raise
        # the local copy rotted (and was quarantined): replace it from a peer
        await self._forget(h)
        await self._ensure_local(h)
        return await self.local.get_bytes(h, offset=offset, length=length)

    async def get_stream(
        self, hash: str, *, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        h = check_hash(hash)
        await self._ensure_local(h)
        try:
            async for chunk in self.local.get_stream(h, offset=offset, length=length, chunk_size=chunk_size):
                yield chunk
        except AspenError as exc:
            if exc.code == ErrorCode.BLOB_CORRUPT:
                await self._forget(h)
            raise

    async def has(self, hash: str) -> bool:
        h = check_hash(hash)
        if await self.local.has(h):
            return True
        return any(n != self.node_id for n in await self._locations(h))

    async def size(self, hash: str) -> int:
        h = check_hash(hash)
        try:
            return await self.local.size(h)
        except AspenError as exc:
            if exc.code != ErrorCode.BLOB_NOT_FOUND:
                raise
        for node_id, loc in (await self._locations(h)).items():
            if node_id != self.node_id:
                return loc.size
        raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found on any node", hash=h)

    async def list(self, *, limit: int = 1000, continuation: str | None = None) -> BlobPage:
        return await self.local.list(limit=limit, continuation=continuation)

    # --- delete, tags, gc ------------------------------------------------------

    async def delete(self, hash: str, *, force: bool = False) -> bool:
        """Delete this node's copy (copies on other nodes stay)."""
        h = check_hash(hash)
        deleted = await self.local.delete(h, force=force)
        await self._forget(h)
        return deleted

    async def protect(self, hash: str, tag: str) -> None:
        """Pin the blob on this node, fetching it first when it is elsewhere."""
        h = check_hash(hash)
        await self._ensure_local(h)
        await self.local.protect(h, tag)

    async def unprotect(self, tag: str) -> None:
        await self.local.unprotect(tag)

    async def gc(self, *, grace_seconds: float = 300.0) -> list[str]:
        removed = await self.local.gc(grace_seconds=grace_seconds)
        for h in removed:
            await self._forget(h)
        return removed

    async def verify(self, hash: str) -> bool:
        h = check_hash(hash)
        ok = await self.local.verify(h)
        if not ok:
            await self._forget(h)
        return ok

    async def close(self) -> None:
        """Closes the HTTP client it created; the local store and the KV
        belong to the caller."""
        if self._own_http:
            await self._http.aclose()
