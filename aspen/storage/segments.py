"""A blob's segment table: one 32-byte entry per 256 KiB segment, the segment's chaining
value in the blob's BLAKE3 tree (:mod:`aspen.storage.tree_hash`); a blob of one segment
has its root hash as its only entry, and an empty blob an empty table.

The entries merge into the root hash, so a table is checked against the blob's address
before it is trusted (:func:`table_matches`), and a segment that matches its entry is
then verified against the address itself: a ranged read checks only the segments it
touches, a whole read hashes every byte once. The local and the S3 blob stores both
hash through here. A table written before entries were chaining values (each segment
hashed on its own) fails :func:`table_matches`; both stores then re-hash the blob and
store the new table, the same repair as for a damaged one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from blake3 import blake3

from aspen.storage.tree_hash import root_of, segment_cvs

if TYPE_CHECKING:
    from aspen.storage.tree_hash_py import Buffer

SEGMENT_SIZE = 256 * 1024
DIGEST_SIZE = 32
EMPTY_HASH = blake3(b"").hexdigest()


def segment_count(size: int) -> int:
    return -(-size // SEGMENT_SIZE)


class SegmentHasher:
    """Root hash and segment table of a byte stream. The last segment is held back until
    more bytes arrive (or :meth:`finish`): only then is it known not to be the blob's
    only one, whose entry is its root hash."""

    def __init__(self) -> None:
        self._held = bytearray()
        self._table = bytearray()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self.size += len(view)
        pos = min(SEGMENT_SIZE - len(self._held), len(view))
        self._held += view[:pos]
        if pos == len(view):
            return
        self._table += segment_cvs(self._held, len(self._table) // DIGEST_SIZE)
        full = (len(view) - pos - 1) // SEGMENT_SIZE  # segments certainly followed by more bytes
        if full:
            self._table += segment_cvs(view[pos : pos + full * SEGMENT_SIZE], len(self._table) // DIGEST_SIZE)
        self._held = bytearray(view[pos + full * SEGMENT_SIZE :])

    def finish(self) -> tuple[str, bytes]:
        """(hex root hash, segment table); call once."""
        if not self._table:
            root = blake3(self._held).digest()
            return root.hex(), root if self._held else b""
        self._table += segment_cvs(self._held, len(self._table) // DIGEST_SIZE)
        return root_of(self._table).hex(), bytes(self._table)


def table_matches(table: bytes, hash: str, size: int) -> bool:
    """Whether ``table`` is the whole table of the blob ``hash`` of ``size`` bytes."""
    count = segment_count(size)
    if len(table) != count * DIGEST_SIZE:
        return False
    if count <= 1:
        return (table.hex() if count else EMPTY_HASH) == hash
    return root_of(table).hex() == hash


def segment_span(offset: int, end: int, size: int) -> tuple[int, int]:
    """The segment-aligned byte range [start, stop) that covers [offset, end) of a blob of ``size``."""
    first = offset // SEGMENT_SIZE
    last = -(-end // SEGMENT_SIZE)
    return first * SEGMENT_SIZE, min(size, last * SEGMENT_SIZE)


def bad_segment(data: Buffer | Sequence[Buffer], first: int, expected: bytes, size: int) -> int | None:
    """Index of the first segment of ``data`` (segments ``first``… of a blob of ``size``
    bytes, read whole; a buffer or a sequence of buffers taken as their concatenation)
    whose entry differs from ``expected`` (the table's entries for exactly those
    segments), else None."""
    if segment_count(size) == 1:
        hasher = blake3()
        for piece in [data] if isinstance(data, (bytes, bytearray, memoryview)) else data:
            hasher.update(piece)
        got = hasher.digest()
    else:
        got = segment_cvs(data, first)
    for pos in range(0, max(len(got), len(expected)), DIGEST_SIZE):
        if got[pos : pos + DIGEST_SIZE] != expected[pos : pos + DIGEST_SIZE]:
            return first + pos // DIGEST_SIZE
    return None
