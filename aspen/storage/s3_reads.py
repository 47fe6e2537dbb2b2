"""Verified reads of the S3 blob backend: a ranged GET widened to whole 256 KiB segments,
each block checked against the segment table before a byte is handed out.

The table is checked against the blob's address first (its chaining values merge into
the root hash, :func:`aspen.storage.segments.table_matches`); a table that fails is
rebuilt from the object, or the blob is corrupt. A segment that then matches its entry
is verified against the address, so a whole read hashes every byte once and its root
check is the table's. A block (at most ``CHECK_BLOCK``) is checked on the event loop as
soon as it is received, then handed out: hashing 1 MiB holds the loop for about 0.2 ms,
and on the measured 2-core machine handing each block to a worker thread instead cost
more CPU than the hash itself (256 MiB GET: 304 ms against 257 ms inline, raw GET 235 ms;
benchmarks/RESULTS.md). A block stays the body chunks it arrived in: the hasher reads
them in place and the reader gets them cut, never joined (a join per block cost ~6% of
a whole GET). A GET that breaks off is resumed at the last whole block
received, up to ``READ_ATTEMPTS`` times (reads are idempotent); one whose reader stops
early is closed at once, so its connection goes back to the pool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import TYPE_CHECKING

from aspen.errors import AspenError, ErrorCode
from aspen.storage import s3_meta as meta
from aspen.storage.s3_client import READ_ATTEMPTS, ObjectMissing
from aspen.storage.segments import (
    DIGEST_SIZE,
    EMPTY_HASH,
    SEGMENT_SIZE,
    SegmentHasher,
    bad_segment,
    segment_count,
    table_matches,
)

if TYPE_CHECKING:
    from aspen.storage.s3_blobs import S3BlobStore

CHECK_BLOCK = 4 * SEGMENT_SIZE  # the most a read receives before it checks and hands out


class _Damaged(Exception):
    """The object does not match its record (short, missing)."""


async def verified(
    store: S3BlobStore, cur: meta.Loaded, table: bytes, start: int, stop: int, step: int
) -> AsyncIterator[tuple[int, list[bytes]]]:
    """(offset, block) of [start, stop) (segment aligned) in verified blocks of at most
    ``step`` bytes (a multiple of the segment size), and never more than ``CHECK_BLOCK``;
    a block is the body chunks that hold it, as received (never joined)."""
    if not table_matches(table, cur.hash, cur.meta.size):
        table = await repaired_table(store, cur)
    received, failures = start, 0
    while received < stop:
        try:
            async with aclosing(_blocks(store, cur, received, stop, min(step, CHECK_BLOCK))) as blocks:
                async for block in blocks:
                    size = sum(map(len, block))
                    table = await _check(store, cur, received, block, size, table)
                    yield received, block
                    received += size
        except _Damaged as exc:
            await corrupt(store, cur, str(exc))
        except AspenError as exc:
            failures += 1
            if exc.code != ErrorCode.STORAGE_UNAVAILABLE or failures >= READ_ATTEMPTS:
                raise


async def _blocks(store: S3BlobStore, cur: meta.Loaded, pos: int, stop: int, step: int) -> AsyncIterator[list[bytes]]:
    """Blocks of ``step`` bytes (the last may be shorter) from one ranged GET, each the
    body chunks that fill it exactly."""
    try:
        length, total, body = await store.objects.get_range(cur.meta.object, pos, stop, block=step)
    except ObjectMissing:
        raise _Damaged("object is missing from the bucket or shorter than recorded") from None
    if length != stop - pos or total != cur.meta.size:
        await body.aclose()
        raise _Damaged(f"object holds {total} bytes where {cur.meta.size} were recorded")
    parts: list[bytes] = []
    fill = got = 0
    async for chunk in body:
        parts.append(chunk)
        fill += len(chunk)
        got += len(chunk)
        if fill == step or got == stop - pos:
            yield parts
            parts, fill = [], 0
    if got != stop - pos:
        raise _Damaged("object is shorter than recorded")


async def _check(store: S3BlobStore, cur: meta.Loaded, pos: int, block: list[bytes], size: int, table: bytes) -> bytes:
    """Raise BLOB_CORRUPT unless every segment of ``block`` (``size`` bytes) matches its
    entry; a table rebuilt meanwhile (the object re-hashes to its address) is returned."""
    first = pos // SEGMENT_SIZE
    span = slice(first * DIGEST_SIZE, (first + segment_count(size)) * DIGEST_SIZE)
    if bad_segment(block, first, table[span], cur.meta.size) is not None:
        table = await repaired_table(store, cur)
        if bad_segment(block, first, table[span], cur.meta.size) is not None:
            await corrupt(store, cur, "object changed while being read")
    return table


async def repaired_table(store: S3BlobStore, cur: meta.Loaded) -> bytes:
    """Re-hash the object: its table, stored again, when the object matches its address
    (the table was damaged, or written before entries were chaining values); else
    BLOB_CORRUPT."""
    ok, table = await rehash(store, cur)
    if not ok:
        await corrupt(store, cur, "content does not match its hash")
    await store.kv.put(meta.SEG + cur.hash, table)
    return table


async def rehash(store: S3BlobStore, cur: meta.Loaded) -> tuple[bool, bytes]:
    """Stream the whole object through the hasher: (matches its address, segment table)."""
    hasher = SegmentHasher()
    if cur.meta.size == 0:
        return EMPTY_HASH == cur.hash, b""
    try:
        _, _, body = await store.objects.get_range(cur.meta.object, 0, cur.meta.size)
        async for chunk in body:
            hasher.update(chunk)
    except ObjectMissing:
        return False, b""
    h, table = hasher.finish()
    return h == cur.hash and hasher.size == cur.meta.size, table


async def corrupt(store: S3BlobStore, cur: meta.Loaded, why: str) -> None:
    """Mark the record (never served again until a good copy is added) and raise BLOB_CORRUPT."""
    store.cache.drop(cur.hash)
    await meta.mark_corrupt(store.kv, cur.hash, cur.meta.object)
    raise AspenError(ErrorCode.BLOB_CORRUPT, f"blob {cur.hash} is corrupt: {why}", hash=cur.hash)
