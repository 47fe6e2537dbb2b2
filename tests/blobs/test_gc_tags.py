"""Tags, delete and garbage collection."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blobs import STALE_TEMP_SECONDS, LocalBlobStore


async def test_delete_refuses_protected_unless_forced(store):
    h = (await store.add_bytes(b"x")).hash
    await store.protect(h, "a")
    await store.protect(h, "b")
    with pytest.raises(AspenError) as exc:
        await store.delete(h)
    assert exc.value.code == ErrorCode.BLOB_PROTECTED and exc.value.details["tags"] == ["a", "b"]
    assert await store.has(h)
    assert await store.delete(h, force=True) is True
    assert not await store.has(h)
    assert await store.delete(h) is False
    # force removed the tags: a re-added copy is not protected
    await store.add_bytes(b"x")
    assert await store.delete(h) is True


async def test_tag_moves_and_unprotect(store):
    a = (await store.add_bytes(b"a")).hash
    b = (await store.add_bytes(b"b")).hash
    await store.protect(a, "current")
    await store.protect(b, "current")  # a named tag points at one blob
    assert await store.delete(a) is True
    await store.unprotect("current")
    await store.unprotect("current")  # unknown tag: no-op
    assert await store.delete(b) is True


async def test_gc_respects_grace_and_tags(store, backend):
    keep = (await store.add_bytes(b"keep")).hash
    drop = (await store.add_bytes(b"drop")).hash
    await store.protect(keep, "user:keep")
    assert await store.gc(grace_seconds=3600) == []
    assert len(await backend.stored_objects(store)) == 2
    await asyncio.sleep(1.1)
    assert await store.gc(grace_seconds=0.5) == [drop]
    assert await store.has(keep) and not await store.has(drop)
    assert len(await backend.stored_objects(store)) == 1
    await store.unprotect("user:keep")
    assert await store.gc(grace_seconds=0) == [keep]
    assert (await store.list()).blobs == []


async def test_re_add_restarts_grace(store):
    h = (await store.add_bytes(b"again")).hash
    await asyncio.sleep(1.1)
    res = await store.add_bytes(b"again")
    assert res.was_new is False
    assert await store.gc(grace_seconds=1.0) == []
    assert await store.has(h)


async def test_gc_removes_crash_orphans_and_stale_temps(tmp_path):
    """Local layout; the S3 form is in tests/blobs/test_s3_faults.py."""
    store = await LocalBlobStore.open(tmp_path / "blobs")
    orphan = store.root / "objects" / "ab" / ("c" * 62)
    orphan.parent.mkdir(exist_ok=True)
    orphan.write_bytes(b"left by a crash between rename and row")
    stale = store.root / "tmp" / "dead.part"
    stale.write_bytes(b"partial")
    fresh = store.root / "tmp" / "live.part"
    fresh.write_bytes(b"being written")
    old = time.time() - STALE_TEMP_SECONDS - 10
    os.utime(orphan, (old, old))
    os.utime(stale, (old, old))
    kept = (await store.add_bytes(b"real")).hash
    assert await store.gc(grace_seconds=60) == []
    assert not orphan.exists() and not stale.exists() and fresh.exists()
    assert await store.has(kept)
    await store.close()
