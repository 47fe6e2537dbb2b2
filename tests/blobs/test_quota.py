"""``max_total_bytes``: the blob store refuses a new blob that would pass
it, with the quota, its limit and the use; a re-add is free, deletes and GC
give room back, and concurrent adds cannot overshoot together."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blobs import LocalBlobStore
from tests.blobs.conftest import pseudo_random

LIMIT = 1 << 20


@pytest.fixture
async def small(tmp_path):
    s = await LocalBlobStore.open(tmp_path / "blobs", max_total_bytes=LIMIT)
    yield s
    await s.close()


async def refused(awaitable) -> AspenError:
    with pytest.raises(AspenError) as err:
        await awaitable
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED
    return err.value


async def test_the_limit_itself_fits_and_one_byte_more_does_not(small):
    await small.add_bytes(pseudo_random(LIMIT - 10, b"a"))
    err = await refused(small.add_bytes(pseudo_random(11, b"b")))
    assert err.details == {"quota": "max_total_bytes", "limit": LIMIT, "used": LIMIT - 10}
    assert "max_total_bytes" in err.message
    await small.add_bytes(pseudo_random(10, b"c"))  # exactly full
    assert list((small.root / "tmp").iterdir()) == []  # the refused add left nothing behind


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


async def test_a_stream_of_unknown_size_is_refused_before_it_is_written(small):
    async def chunks():
        for _ in range(64):
            yield b"x" * (64 << 10)  # 4 MiB in all: refused once past 1 MiB

    err = await refused(small.add_stream(chunks()))
    assert err.details["limit"] == LIMIT and err.details["used"] == 0
    assert list((small.root / "tmp").iterdir()) == []


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1"])
def test_the_quota_must_be_a_positive_integer(tmp_path, bad):
    with pytest.raises(AspenError) as err:
        LocalBlobStore(tmp_path / "x", max_total_bytes=bad)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and "max_total_bytes" in err.value.message
