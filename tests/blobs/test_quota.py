"""``max_total_bytes``, on every backend: the blob store refuses a new blob that would pass
it, with the quota, its limit and the use; a re-add is free, deletes and GC give room back,
concurrent adds cannot overshoot together, and a refused add leaves nothing behind (no temp
file; on S3 no object or multipart upload). On S3 the use is one counter in KV, so two
stores (two nodes) on the same records share the quota."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.s3_blobs import S3BlobStore
from tests.blobs.conftest import S3Backend, pseudo_random
from tests.seaweed_fixtures import s3_settings

LIMIT = 1 << 20


@pytest.fixture
async def small(backend):
    return await backend.open(max_total_bytes=LIMIT)


async def refused(awaitable) -> AspenError:
    with pytest.raises(AspenError) as err:
        await awaitable
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED
    return err.value


async def test_the_limit_itself_fits_and_one_byte_more_does_not(small, backend):
    await small.add_bytes(pseudo_random(LIMIT - 10, b"a"))
    err = await refused(small.add_bytes(pseudo_random(11, b"b")))
    assert err.details == {"quota": "max_total_bytes", "limit": LIMIT, "used": LIMIT - 10}
    assert "max_total_bytes" in err.message
    await small.add_bytes(pseudo_random(10, b"c"))  # exactly full
    assert await backend.leftovers(small) == []  # the refused add left nothing behind


async def test_re_adding_a_stored_blob_is_free(small):
    data = pseudo_random(LIMIT, b"whole")
    assert (await small.add_bytes(data)).was_new
    assert not (await small.add_bytes(data)).was_new


async def test_delete_and_gc_give_room_back(small):
    first = await small.add_bytes(pseudo_random(LIMIT, b"first"))
    await refused(small.add_bytes(b"more"))
    await small.delete(first.hash)
    second = await small.add_bytes(pseudo_random(LIMIT, b"second"))
    await refused(small.add_bytes(b"more"))
    assert await small.gc(grace_seconds=0) == [second.hash]
    await small.add_bytes(b"more")


async def test_concurrent_adds_cannot_overshoot_together(small):
    results = await asyncio.gather(
        *(small.add_bytes(pseudo_random(LIMIT // 3, bytes([i]))) for i in range(5)), return_exceptions=True
    )
    stored = [r for r in results if not isinstance(r, BaseException)]
    assert len(stored) == 3
    assert all(isinstance(r, AspenError) and r.code == ErrorCode.QUOTA_EXCEEDED for r in results if r not in stored)


async def test_a_stream_of_unknown_size_is_refused_before_it_is_written(small, backend):
    sent = 0

    async def chunks():
        nonlocal sent
        for _ in range(128):
            sent += 64 << 10
            yield b"x" * (64 << 10)  # 8 MiB in all: refused once past 1 MiB

    err = await refused(small.add_stream(chunks()))
    assert err.details["limit"] == LIMIT and err.details["used"] == 0
    assert sent <= LIMIT + (64 << 10)
    assert await backend.leftovers(small) == []


async def test_s3_stores_sharing_records_share_the_quota(seaweedfs, tmp_path):
    """Two nodes: one KV, one bucket prefix; what one adds counts against the other."""
    s3 = S3Backend(seaweedfs, tmp_path)
    one = await s3.open(max_total_bytes=LIMIT)
    two = await S3BlobStore.open(
        s3_settings(seaweedfs, prefix=one.objects.settings.prefix), one.kv, max_total_bytes=LIMIT
    )
    try:
        first = await one.add_bytes(pseudo_random(LIMIT - 100, b"one"))
        err = await refused(two.add_bytes(pseudo_random(101, b"two")))
        assert err.details["used"] == LIMIT - 100
        assert await two.delete(first.hash)
        await one.add_bytes(pseudo_random(LIMIT, b"full"))
        await refused(two.add_bytes(b"x"))
    finally:
        await two.close()
        await s3.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1"])
async def test_the_quota_must_be_a_positive_integer(backend, bad):
    with pytest.raises(AspenError) as err:
        await backend.open(max_total_bytes=bad)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and "max_total_bytes" in err.value.message
