"""Every bad input gets its stable error code, and a failed add leaves no temp file."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blobs import LocalBlobStore
from tests.blobs.conftest import pseudo_random

MISSING = "0" * 64
BAD_HASHES = ["", "abc", "g" * 64, "0" * 63, "0" * 65, 123, None, b"0" * 64]


async def code_of(awaitable) -> str:
    with pytest.raises(AspenError) as exc:
        await awaitable
    return exc.value.code


async def first_chunk(stream):
    async for chunk in stream:
        return chunk


@pytest.mark.parametrize("bad", BAD_HASHES)
async def test_invalid_hash(store, bad):
    for call in (
        store.get_bytes(bad),
        first_chunk(store.get_stream(bad)),
        store.has(bad),
        store.size(bad),
        store.delete(bad),
        store.protect(bad, "t"),
        store.verify(bad),
    ):
        assert await code_of(call) == ErrorCode.INVALID_HASH


async def test_missing_blob(store):
    for call in (
        store.get_bytes(MISSING),
        first_chunk(store.get_stream(MISSING)),
        store.size(MISSING),
        store.protect(MISSING, "t"),
        store.verify(MISSING),
    ):
        assert await code_of(call) == ErrorCode.BLOB_NOT_FOUND
    assert await store.has(MISSING) is False
    assert await store.delete(MISSING) is False


async def test_bad_ranges(store):
    h = (await store.add_bytes(b"0123456789")).hash
    for off, length in [(11, None), (5, 6), (0, 11), (-1, None), (0, -1), (10, 1)]:
        assert await code_of(store.get_bytes(h, offset=off, length=length)) == ErrorCode.INVALID_RANGE, (off, length)
    for off, length in [("1", None), (1.5, None), (0, "2"), (True, None)]:
        assert await code_of(store.get_bytes(h, offset=off, length=length)) == ErrorCode.INVALID_ARGUMENT
    for chunk_size in (0, -1, 1 << 30, "big"):
        assert await code_of(first_chunk(store.get_stream(h, chunk_size=chunk_size))) == ErrorCode.INVALID_ARGUMENT


async def test_bad_list_args(store):
    for limit in (0, -5, 1001, "10", True):
        assert await code_of(store.list(limit=limit)) == ErrorCode.INVALID_ARGUMENT
    for token in ("", "zzz", 5):
        assert await code_of(store.list(continuation=token)) == ErrorCode.INVALID_CONTINUATION


async def test_bad_tags(store):
    h = (await store.add_bytes(b"t")).hash
    for tag in ("", "x" * 257, None, 7):
        assert await code_of(store.protect(h, tag)) == ErrorCode.INVALID_ARGUMENT
        assert await code_of(store.unprotect(tag)) == ErrorCode.INVALID_ARGUMENT


async def test_bad_gc_grace(store):
    for grace in (-1, float("nan"), float("inf"), "5", None):
        assert await code_of(store.gc(grace_seconds=grace)) == ErrorCode.INVALID_ARGUMENT


async def test_bad_add_inputs(store, backend, tmp_path):
    assert await code_of(store.add_bytes("text")) == ErrorCode.INVALID_ARGUMENT
    assert await code_of(store.add_stream([b"not async"])) == ErrorCode.INVALID_ARGUMENT
    assert await code_of(store.add_file(tmp_path / "nope")) == ErrorCode.INVALID_ARGUMENT
    assert await code_of(store.add_file(tmp_path)) == ErrorCode.INVALID_ARGUMENT

    async def mixed():
        yield b"fine"
        yield "not bytes"

    assert await code_of(store.add_stream(mixed())) == ErrorCode.INVALID_ARGUMENT
    assert await backend.leftovers(store) == []


async def test_failing_source_leaves_nothing(store, backend):
    async def broken():
        yield pseudo_random(3 << 20)
        raise ConnectionError("source died")

    with pytest.raises(ConnectionError):
        await store.add_stream(broken())
    assert await backend.leftovers(store) == [] and (await store.list()).blobs == []


async def test_size_limit(backend, tmp_path):
    store = await backend.open(max_blob_size=1 << 20)
    exact = await store.add_bytes(pseudo_random(1 << 20))
    assert exact.size == 1 << 20
    assert await code_of(store.add_bytes(pseudo_random((1 << 20) + 1))) == ErrorCode.BLOB_TOO_LARGE
    big = tmp_path / "big.bin"
    big.write_bytes(pseudo_random(2 << 20))
    assert await code_of(store.add_file(big)) == ErrorCode.BLOB_TOO_LARGE

    pulled = 0

    async def endless():
        nonlocal pulled
        while True:
            pulled += 1
            yield pseudo_random(64 << 10, offset=pulled << 16)

    assert await code_of(store.add_stream(endless())) == ErrorCode.BLOB_TOO_LARGE
    assert pulled == 17  # aborted as soon as the limit was crossed
    assert await backend.leftovers(store) == []
    assert [b.hash for b in (await store.list()).blobs] == [exact.hash]


async def test_bad_config_and_closed_store(backend):
    for bad in (0, -1, "1", True):
        with pytest.raises(AspenError) as exc:
            await backend.open(max_blob_size=bad)
        assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    store = await backend.open()
    h = (await store.add_bytes(b"c")).hash
    await store.close()
    for call in (store.get_bytes(h), store.has(h), store.add_bytes(b"d"), store.list(), store.gc()):
        assert await code_of(call) == ErrorCode.STORE_CLOSED
    await store.close()  # idempotent


async def test_cancelled_add_leaves_nothing(store, backend):
    started = asyncio.Event()

    async def slow():
        for i in range(1000):
            yield pseudo_random(1 << 18, offset=i << 18)
            started.set()
            await asyncio.sleep(0.01)

    task = asyncio.create_task(store.add_stream(slow()))
    await started.wait()
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await backend.leftovers(store) == [] and (await store.list()).blobs == []


async def test_unusable_root(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    with pytest.raises(AspenError) as exc:
        await LocalBlobStore.open(not_a_dir)
    assert exc.value.code == ErrorCode.STORAGE_UNAVAILABLE
