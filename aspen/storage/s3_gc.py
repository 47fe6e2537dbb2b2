"""GC of the S3 blob backend, on one node at a time.

The lock is ``__cluster:blobstore:gc``, created only if absent and attached to a lease the
holder keeps alive while it works: a node that dies mid-GC frees the lock when its lease
expires (``GC_LOCK_TTL``), and another node's GC meanwhile gets ``GC_IN_PROGRESS``.

Each removal is a transaction guarded by the record's mod revision, so an add that
re-touched the blob or a tag placed since the scan wins. Objects are listed *before* the
records are read, so an upload committed meanwhile is already referenced; an object no
record references, or an unfinished multipart upload, is removed once older than
``cleanup_seconds`` unless its upload is registered as running
(:mod:`aspen.storage.s3_running`). The registrations are read after the listing and before
the records: an upload that finished in between has committed its record by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.storage import s3_meta as meta
from aspen.storage.records import Compare, PutOp

if TYPE_CHECKING:
    from aspen.storage.s3_blobs import S3BlobStore

GC_LOCK_TTL = 30  # seconds


async def collect_with_lock(store: S3BlobStore, grace: float) -> list[str]:
    kv = store.kv
    lease = await kv.lease_grant(GC_LOCK_TTL)
    try:
        lock = [PutOp(key=meta.GC_LOCK, value=store.owner.encode(), lease=lease.id)]
        if not await meta.guarded(kv, [Compare(key=meta.GC_LOCK, target="create_revision", value=0)], lock):
            raise AspenError(ErrorCode.GC_IN_PROGRESS, "blob GC is running on another node")
        keeper = asyncio.ensure_future(_keep_alive(store, lease.id))
        try:
            return await collect(store, grace)
        finally:
            keeper.cancel()
    finally:
        with contextlib.suppress(AspenError):
            await asyncio.shield(kv.lease_revoke(lease.id))


async def _keep_alive(store: S3BlobStore, lease_id: int) -> None:
    while True:
        await asyncio.sleep(GC_LOCK_TTL / 3)
        await store.kv.lease_keepalive(lease_id)


async def collect(store: S3BlobStore, grace: float) -> list[str]:
    """Remove untagged blobs untouched for ``grace`` seconds, then stale leftovers; returns
    the hashes of the (healthy) blobs removed."""
    objects, kv = store.objects, store.kv
    listed = [item async for item in objects.list_objects("objects/")]
    uploads = [item async for item in objects.list_uploads("objects/")]
    running = {objects.key(name) for name in await store.running.names()}
    cutoff_ms = now_ms() - int(grace * 1000)
    removed: list[str] = []
    referenced: set[str] = set()
    after, more = "", True
    while more:
        records, more = await meta.scan_records(kv, after, 1000)
        for h, m, mod in records:
            guard = Compare(key=meta.BLOB + h, target="mod_revision", value=mod)
            if not m.tags and m.touched_at_ms < cutoff_ms and await meta.sized(kv, [guard], meta.drop_blob(h), -m.size):
                store.cache.drop(h)
                await objects.delete(objects.key(m.object))
                if not m.corrupt:
                    removed.append(h)
            else:
                referenced.add(objects.key(m.object))
        if records:
            after = records[-1][0]
    stale = time.time() - objects.settings.cleanup_seconds
    for key, modified in listed:
        if key not in referenced and key not in running and modified.timestamp() < stale:
            await objects.delete(key)
    for key, upload_id, initiated in uploads:
        if key not in running and initiated.timestamp() < stale:
            await objects.abort_multipart(key, upload_id)
    return sorted(removed)
