"""A blob whose bytes no longer match its hash is never served as valid."""

from __future__ import annotations

import pytest
from blake3 import blake3

from aspen.errors import AspenError, ErrorCode
from aspen.storage.segments import SEGMENT_SIZE, SegmentHasher, table_matches
from aspen.storage.tree_hash import segment_cvs
from tests.blobs.conftest import pseudo_random


async def corrupt_blob(backend, store, size=4 * SEGMENT_SIZE, at=2 * SEGMENT_SIZE + 5):
    data = pseudo_random(size)
    h = (await store.add_bytes(data)).hash
    await backend.flip(store, h, at)
    return h, data


async def expect_corrupt(awaitable):
    with pytest.raises(AspenError) as exc:
        await awaitable
    assert exc.value.code == ErrorCode.BLOB_CORRUPT


async def test_whole_read_detects_flip_and_quarantines(store, backend):
    h, _ = await corrupt_blob(backend, store)
    await expect_corrupt(store.get_bytes(h))
    assert not await store.has(h)
    if backend.name == "local":
        assert len(list((store.root / "quarantine").iterdir())) == 1
    with pytest.raises(AspenError) as exc:
        await store.get_bytes(h)
    assert exc.value.code == ErrorCode.BLOB_NOT_FOUND


async def test_stream_never_yields_a_damaged_segment(store, backend):
    h, data = await corrupt_blob(backend, store)
    got = bytearray()
    with pytest.raises(AspenError) as exc:
        async for piece in store.get_stream(h, chunk_size=SEGMENT_SIZE):
            got += piece
    assert exc.value.code == ErrorCode.BLOB_CORRUPT
    assert bytes(got) == data[: 2 * SEGMENT_SIZE]  # only the verified segments before the damage


async def test_last_byte_flip_caught_before_last_chunk(store, backend):
    h, _ = await corrupt_blob(backend, store, size=1000, at=999)
    pieces = []
    with pytest.raises(AspenError) as exc:
        async for piece in store.get_stream(h):
            pieces.append(piece)
    assert exc.value.code == ErrorCode.BLOB_CORRUPT and pieces == []


async def test_range_over_damaged_segment_is_refused(store, backend):
    h, _ = await corrupt_blob(backend, store)
    await expect_corrupt(store.get_bytes(h, offset=2 * SEGMENT_SIZE + 4, length=3))
    assert not await store.has(h)


async def test_range_away_from_damage_returns_verified_bytes(store, backend):
    """Bytes of intact segments still match the hash-verified add, so they are served."""
    h, data = await corrupt_blob(backend, store)
    assert await store.get_bytes(h, offset=10, length=100) == data[10:110]
    assert await store.verify(h) is False
    assert not await store.has(h)


async def test_truncated_file_is_corrupt(store, backend):
    data = pseudo_random(3 * SEGMENT_SIZE)
    h = (await store.add_bytes(data)).hash
    await backend.truncate(store, h, SEGMENT_SIZE)
    await expect_corrupt(store.get_bytes(h, offset=0, length=10))


async def test_verify_good_blob(store):
    h = (await store.add_bytes(pseudo_random(SEGMENT_SIZE + 1))).hash
    assert await store.verify(h) is True
    assert await store.has(h)


async def test_damaged_segment_table_is_rebuilt_not_reported(store, backend):
    data = pseudo_random(3 * SEGMENT_SIZE)
    h = (await store.add_bytes(data)).hash
    await backend.write_table(store, h, b"\0" * 96)
    assert await store.get_bytes(h, offset=SEGMENT_SIZE, length=10) == data[SEGMENT_SIZE : SEGMENT_SIZE + 10]
    table = await backend.read_table(store, h)
    assert table[32:64] == segment_cvs(data[SEGMENT_SIZE : 2 * SEGMENT_SIZE], 1)
    assert table_matches(table, h, len(data))
    assert await store.get_bytes(h) == data


async def test_table_of_standalone_segment_hashes_is_replaced_on_read(store, backend):
    """Tables written before entries were chaining values (each segment hashed on its own)
    fail the check against the address; the first read re-hashes and stores the new table."""
    data = pseudo_random(3 * SEGMENT_SIZE + 17)
    h = (await store.add_bytes(data)).hash
    old = b"".join(blake3(data[i : i + SEGMENT_SIZE]).digest() for i in range(0, len(data), SEGMENT_SIZE))
    await backend.write_table(store, h, old)
    assert not table_matches(old, h, len(data))
    assert await store.get_bytes(h, offset=SEGMENT_SIZE + 3, length=5) == data[SEGMENT_SIZE + 3 : SEGMENT_SIZE + 8]
    assert await backend.read_table(store, h) == segment_cvs(data, 0)
    assert await store.get_bytes(h) == data


async def test_verify_rebuilds_a_stale_table_in_one_pass(store, backend, monkeypatch):
    data = pseudo_random(3 * SEGMENT_SIZE + 17)
    h = (await store.add_bytes(data)).hash
    await backend.write_table(store, h, b"\0" * 128)
    passes = []
    finish = SegmentHasher.finish
    monkeypatch.setattr(SegmentHasher, "finish", lambda self: passes.append(self.size) or finish(self))
    assert await store.verify(h) is True
    assert passes == [len(data)]  # the whole blob hashed once, not once to rebuild and once to verify
    assert await backend.read_table(store, h) == segment_cvs(data, 0)


async def test_good_copy_after_quarantine_is_served(store, backend):
    h, data = await corrupt_blob(backend, store)
    await store.protect(h, "pinned")
    await expect_corrupt(store.get_bytes(h))
    res = await store.add_bytes(data)
    assert res.was_new and await store.get_bytes(h) == data
    # the tag survived the quarantine, so the good copy is protected again
    with pytest.raises(AspenError) as exc:
        await store.delete(h)
    assert exc.value.code == ErrorCode.BLOB_PROTECTED


async def test_expected_hash_mismatch_stores_nothing(store, backend):
    async def chunks():
        yield b"not what was promised"

    with pytest.raises(AspenError) as exc:
        await store.add_stream(chunks(), expected_hash=blake3(b"promised").hexdigest())
    assert exc.value.code == ErrorCode.BLOB_CORRUPT
    assert (await store.list()).blobs == [] and await backend.leftovers(store) == []
    ok = await store.add_stream(chunks(), expected_hash=blake3(b"not what was promised").hexdigest())
    assert ok.was_new
