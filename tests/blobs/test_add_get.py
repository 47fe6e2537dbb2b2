"""Adding blobs from bytes, files and streams; whole, streamed and ranged reads."""

from __future__ import annotations

import random
import tracemalloc

from blake3 import blake3

from aspen.storage.blobs import LocalBlobStore
from aspen.storage.protocol import BlobStore
from aspen.storage.segments import SEGMENT_SIZE
from tests.blobs.conftest import pseudo_random

MiB = 1 << 20


async def test_satisfies_protocol(store):
    assert isinstance(store, BlobStore)


async def test_add_bytes_roundtrip(store):
    data = pseudo_random(3 * SEGMENT_SIZE + 17)
    res = await store.add_bytes(data)
    assert res.hash == blake3(data).hexdigest()
    assert (res.size, res.was_new) == (len(data), True)
    assert await store.has(res.hash)
    assert await store.size(res.hash) == len(data)
    assert await store.get_bytes(res.hash) == data
    again = await store.add_bytes(data)
    assert (again.hash, again.was_new) == (res.hash, False)
    # uppercase hex is the same hash
    assert await store.get_bytes(res.hash.upper()) == data


async def test_empty_blob(store):
    res = await store.add_bytes(b"")
    assert res.hash == blake3(b"").hexdigest() and res.size == 0
    assert await store.get_bytes(res.hash) == b""
    assert [c async for c in store.get_stream(res.hash)] == []
    assert await store.verify(res.hash)


async def test_add_file_and_stream_agree(store, backend, tmp_path):
    data = pseudo_random(2 * MiB + 5)
    path = tmp_path / "input.bin"
    path.write_bytes(data)

    async def chunks():
        for i in range(0, len(data), 1000):  # small uneven chunks are re-buffered
            yield data[i : i + 1000]

    a = await store.add_file(path)
    b = await store.add_stream(chunks())
    assert a.hash == b.hash == blake3(data).hexdigest()
    assert (a.was_new, b.was_new) == (True, False)
    assert await backend.leftovers(store) == []


async def test_large_stream_stays_small_in_memory(store):
    """64 MiB in and out while Python's heap peak stays a few MiB."""
    total, chunk = 64 * MiB, MiB
    expected = blake3()
    for i in range(0, total, chunk):
        expected.update(pseudo_random(chunk, offset=i))

    async def produce():
        for i in range(0, total, chunk):
            yield pseudo_random(chunk, offset=i)

    tracemalloc.start()
    try:
        res = await store.add_stream(produce())
        _, add_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        seen, h = 0, blake3()
        async for piece in store.get_stream(res.hash, chunk_size=MiB):
            assert len(piece) <= MiB
            seen += len(piece)
            h.update(piece)
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert res.hash == expected.hexdigest() and res.size == total
    assert seen == total and h.hexdigest() == res.hash
    assert add_peak < 16 * MiB, add_peak
    assert read_peak < 16 * MiB, read_peak


async def test_ranges_match_slices(store):
    data = pseudo_random(5 * SEGMENT_SIZE + 1234)
    h = (await store.add_bytes(data)).hash
    rng = random.Random(7)
    cases = [
        (0, None),
        (0, 0),
        (len(data), None),
        (len(data), 0),
        (len(data) - 1, 1),
        (SEGMENT_SIZE - 1, 2),
        (SEGMENT_SIZE, SEGMENT_SIZE),
        (3, None),
        (0, len(data)),
    ]
    for _ in range(40):
        off = rng.randrange(len(data) + 1)
        cases.append((off, rng.randrange(len(data) - off + 1)))
    for off, length in cases:
        want = data[off:] if length is None else data[off : off + length]
        assert await store.get_bytes(h, offset=off, length=length) == want, (off, length)


async def test_stream_chunk_sizes(store):
    data = pseudo_random(3 * SEGMENT_SIZE + 99)
    h = (await store.add_bytes(data)).hash
    for chunk_size in (1, 1000, SEGMENT_SIZE, SEGMENT_SIZE + 1, 4 * MiB):
        if chunk_size == 1:
            pieces = [c async for c in store.get_stream(h, offset=10, length=50, chunk_size=1)]
            assert pieces == [data[i : i + 1] for i in range(10, 60)]
            continue
        pieces = [c async for c in store.get_stream(h, offset=5, chunk_size=chunk_size)]
        assert all(0 < len(p) <= chunk_size for p in pieces)
        assert b"".join(pieces) == data[5:]


async def test_list_pages(store):
    hashes = sorted([(await store.add_bytes(b"blob %d" % i)).hash for i in range(25)])
    await store.protect(hashes[3], "keep")
    seen, token, pages = [], None, 0
    while True:
        page = await store.list(limit=10, continuation=token)
        pages += 1
        seen += page.blobs
        if not page.is_truncated:
            assert page.continuation_token is None
            break
        token = page.continuation_token
    assert pages == 3
    assert [b.hash for b in seen] == hashes
    assert all(b.size == len(b"blob 0") or b.size == len(b"blob 10") for b in seen)
    assert {b.hash: b.tags for b in seen}[hashes[3]] == ["keep"]
    assert all(b.created_at_ms > 0 for b in seen)
    assert (await store.list(limit=1000)).is_truncated is False


async def test_reopen_keeps_blobs_and_tags(tmp_path):
    s = await LocalBlobStore.open(tmp_path / "b")
    h = (await s.add_bytes(b"durable")).hash
    await s.protect(h, "t")
    await s.close()
    s = await LocalBlobStore.open(tmp_path / "b")
    try:
        assert await s.get_bytes(h) == b"durable"
        assert (await s.list()).blobs[0].tags == ["t"]
    finally:
        await s.close()
