"""The S3 backend under faults: an unreachable or flaky store, a writer SIGKILLed mid-upload,
GC on two nodes at once, and the verified read cache."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage import s3_meta
from aspen.storage.s3_blobs import S3BlobStore
from aspen.storage.s3_client import PART_SIZE
from aspen.storage.s3_running import RUNNING
from aspen.storage.s3_settings import S3Settings
from aspen.storage.segments import SEGMENT_SIZE
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.blobs.conftest import S3Backend, pseudo_random
from tests.blobs.tcp_proxy import TcpProxy
from tests.seaweed_fixtures import s3_settings

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
async def s3(seaweedfs, tmp_path):
    b = S3Backend(seaweedfs, tmp_path)
    yield b
    await b.close()


@pytest.fixture
async def proxied(seaweedfs, tmp_path):
    """A store that reaches SeaweedFS through a proxy the test can cut."""
    proxy = await TcpProxy(seaweedfs.s3_port).start()
    kv = await SqliteKeyValueStore.open(tmp_path / "kv.db")
    store = await S3BlobStore.open(
        s3_settings(seaweedfs, endpoint=proxy.endpoint, cache_bytes=0, connect_timeout=1, read_timeout=2), kv
    )
    yield store, proxy
    await store.close()
    await kv.close()
    await proxy.close()


async def code_of(awaitable) -> str:
    with pytest.raises(AspenError) as exc:
        await awaitable
    return exc.value.code


async def test_unreachable_at_open(tmp_path):
    kv = await SqliteKeyValueStore.open(tmp_path / "kv.db")
    try:
        dead = S3Settings(bucket="nowhere", endpoint="http://127.0.0.1:9", connect_timeout=0.5)
        started = time.monotonic()
        assert await code_of(S3BlobStore.open(dead, kv)) == ErrorCode.STORAGE_UNAVAILABLE
        assert time.monotonic() - started < 10
    finally:
        await kv.close()


async def test_unreachable_store_is_storage_unavailable(proxied):
    store, proxy = proxied
    h = (await store.add_bytes(pseudo_random(100_000))).hash
    proxy.cut("refuse")
    assert await code_of(store.get_bytes(h)) == ErrorCode.STORAGE_UNAVAILABLE
    assert await code_of(store.get_bytes(h, offset=5, length=5)) == ErrorCode.STORAGE_UNAVAILABLE
    assert await code_of(store.add_bytes(b"new")) == ErrorCode.STORAGE_UNAVAILABLE
    assert await code_of(store.verify(h)) == ErrorCode.STORAGE_UNAVAILABLE
    assert await store.has(h)  # an outage is not corruption: the record stays good
    proxy.mode = "forward"
    assert await store.get_bytes(h) == pseudo_random(100_000)


async def test_reads_are_retried(proxied):
    store, proxy = proxied
    data = pseudo_random(2 * SEGMENT_SIZE)
    h = (await store.add_bytes(data)).hash
    proxy.drop_next = 2  # two broken connections, then the store answers
    assert await store.get_bytes(h, offset=SEGMENT_SIZE, length=10) == data[SEGMENT_SIZE : SEGMENT_SIZE + 10]


async def test_write_with_unknown_outcome_is_not_resent(proxied):
    store, proxy = proxied
    proxy.cut("swallow")  # the request arrives, the answer never does
    proxy.requests.clear()
    assert await code_of(store.add_bytes(b"maybe stored")) == ErrorCode.STORAGE_UNAVAILABLE
    assert proxy.requests.count(b"PUT") == 1
    assert (await store.list()).blobs == []


async def test_corrupt_object_is_never_served_again_until_repaired(s3):
    store = await s3.open()
    data = pseudo_random(3 * SEGMENT_SIZE)
    h = (await store.add_bytes(data)).hash
    await s3.flip(store, h, SEGMENT_SIZE + 1)
    assert await code_of(store.get_bytes(h, offset=SEGMENT_SIZE, length=4)) == ErrorCode.BLOB_CORRUPT
    assert (await s3_meta.load(store.kv, h)).meta.corrupt
    for call in (store.get_bytes(h), store.get_bytes(h, offset=0, length=4), store.size(h)):
        assert await code_of(call) == ErrorCode.BLOB_NOT_FOUND
    assert (await store.add_bytes(data)).was_new
    assert await store.get_bytes(h) == data and await store.verify(h)


async def test_cache_serves_hot_blobs_and_stays_bounded(s3):
    store = await s3.open(cache_bytes=4 << 20)  # entries up to 1 MiB
    small = [pseudo_random(700_000, seed=b"%d" % i) for i in range(8)]
    hashes = [(await store.add_bytes(d)).hash for d in small]
    for h, d in zip(hashes, small):
        assert await store.get_bytes(h) == d
    assert store.cache.bytes <= 4 << 20 and store.cache.misses == 8
    assert await store.get_bytes(hashes[-1], offset=10, length=10) == small[-1][10:20]
    assert store.cache.hits == 1
    # the first ones were evicted: read from the bucket again, verified
    assert await store.get_bytes(hashes[0]) == small[0] and store.cache.misses == 9
    # a blob deleted (here or on another node) is not served from the cache
    await store.delete(hashes[-1])
    assert await code_of(store.get_bytes(hashes[-1])) == ErrorCode.BLOB_NOT_FOUND
    big = pseudo_random(2 << 20)
    hb = (await store.add_bytes(big)).hash
    assert await store.get_bytes(hb) == big and hb not in store.cache._items


async def test_gc_runs_on_one_node_at_a_time(s3):
    a = await s3.open()
    b = S3BlobStore(
        a.objects, a.kv, max_blob_size=a.max_blob_size, max_total_bytes=a.max_total_bytes, owner="other-node"
    )
    await a.add_bytes(b"old")
    await a.kv.put(s3_meta.GC_LOCK, b"held")  # another node's GC (its lease would hold it)
    assert await code_of(b.gc(grace_seconds=0)) == ErrorCode.GC_IN_PROGRESS
    await a.kv.delete(s3_meta.GC_LOCK)
    results = await asyncio.gather(a.gc(grace_seconds=0), b.gc(grace_seconds=0), return_exceptions=True)
    codes = sorted(r.code if isinstance(r, AspenError) else "ok" for r in results)
    assert codes in (["GC_IN_PROGRESS", "ok"], ["ok", "ok"])  # overlapping, or one after the other
    assert await a.kv.get(s3_meta.GC_LOCK) is None  # released (lease revoked)
    assert (await a.list()).blobs == []


async def test_re_add_during_gc_keeps_the_blob(s3):
    """GC decided on a stale record; the add touched it since: the guarded delete fails."""
    store = await s3.open()
    h = (await store.add_bytes(b"contested")).hash
    stale = await s3_meta.load(store.kv, h)
    await store.add_bytes(b"contested")  # touches the record: new mod revision
    dropped = await s3_meta.guarded(store.kv, [stale.guard()], s3_meta.drop_blob(h))
    assert dropped is False and await store.get_bytes(h) == b"contested"


SLOW_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from blake3 import blake3
    from aspen.storage import s3_running
    from aspen.storage.s3_blobs import S3BlobStore
    from aspen.storage.s3_settings import settings_from_url
    from aspen.storage.sqlite import SqliteKeyValueStore

    s3_running.LEASE_TTL = 2  # the killed writer's registration expires soon after it

    async def main(url, kv_path):
        kv = await SqliteKeyValueStore.open(kv_path)
        store = await S3BlobStore.open(settings_from_url(url), kv)
        async def chunks():
            for i in range(10_000):
                yield blake3(b"k").digest(length=1 << 20, seek=i << 20)
                if i == 12:  # two parts of the multipart upload are in the bucket
                    print("streaming", flush=True)
                    await asyncio.sleep(0.5)
                await asyncio.sleep(0.01)
        await store.add_stream(chunks())

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_writer_killed_mid_upload_leaves_no_partial_and_no_leak(seaweedfs, tmp_path):
    settings = s3_settings(seaweedfs, cleanup_seconds=1)
    url = (
        f"s3://{settings.bucket}?endpoint={settings.endpoint}&prefix={settings.prefix}"
        f"&access_key_id={settings.access_key_id}&secret_access_key={settings.secret_access_key}"
    )
    kv_path = tmp_path / "kv.db"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, url, str(kv_path)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line == b"streaming\n"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        await asyncio.to_thread(proc.wait)
        proc.stdout.close()
    kv = await SqliteKeyValueStore.open(kv_path)
    store = await S3BlobStore.open(settings, kv)
    backend = S3Backend(seaweedfs, tmp_path)
    try:
        assert (await store.list()).blobs == []
        left = await backend.leftovers(store)
        assert len(left) == 1 and left[0].startswith("upload:"), left  # the unfinished multipart upload
        deadline = time.monotonic() + 30
        while await backend.leftovers(store):  # gone once older than cleanup_seconds
            assert time.monotonic() < deadline, await backend.leftovers(store)
            await store.gc(grace_seconds=0)
            await asyncio.sleep(0.2)
    finally:
        await store.close()
        await kv.close()


async def test_gc_leaves_a_running_upload_alone_however_old(seaweedfs, tmp_path):
    """cleanup_seconds=0: every unfinished upload is "old", yet GC on this node and on
    another (same KV) never aborts one still streaming; once it committed or aborted, its
    registration is gone."""
    kv = await SqliteKeyValueStore.open(tmp_path / "kv.db")
    settings = s3_settings(seaweedfs, cleanup_seconds=0, cache_bytes=0)
    store = await S3BlobStore.open(settings, kv)
    other = await S3BlobStore.open(settings, kv, owner="other-node")
    data = pseudo_random(3 * PART_SIZE + 123, b"slow")
    gc_passes = 0

    async def slow():
        nonlocal gc_passes
        for pos in range(0, len(data), 1 << 20):
            yield data[pos : pos + (1 << 20)]
            if pos >= PART_SIZE:  # a multipart upload is in the bucket: collect under it
                for gc_store in (store, other):
                    await gc_store.gc(grace_seconds=0)
                    gc_passes += 1

    try:
        result = await store.add_stream(slow())
        assert gc_passes > 4
        assert await store.get_bytes(result.hash) == data
        assert (await kv.scan(RUNNING)).entries == []

        async def cut():
            yield data[: 2 * PART_SIZE]
            raise OSError("client went away")

        with pytest.raises(OSError):
            await store.add_stream(cut())
        assert (await kv.scan(RUNNING)).entries == []
        assert await S3Backend(seaweedfs, tmp_path).leftovers(store) == []
    finally:
        await other.close()
        await store.close()
        await kv.close()
