"""BLAKE3 over a whole blob and over each 256 KiB segment, fed in order.

The segment table (32 bytes per segment) lets a ranged read verify exactly the
segments it touches before handing out a byte; the root hash is the blob's
address. The local and the S3 blob stores both hash through it.
"""

from __future__ import annotations

from blake3 import blake3

SEGMENT_SIZE = 256 * 1024
DIGEST_SIZE = 32


class SegmentHasher:
    """Root hash and segment table of a byte stream."""

    def __init__(self) -> None:
        self._root = blake3()
        self._segment = blake3()
        self._fill = 0
        self._table = bytearray()
        self.size = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data).cast("B")
        self._root.update(view)
        pos = 0
        while pos < len(view):
            take = min(SEGMENT_SIZE - self._fill, len(view) - pos)
            self._segment.update(view[pos : pos + take])
            self._fill += take
            pos += take
            if self._fill == SEGMENT_SIZE:
                self._table += self._segment.digest()
                self._segment.reset()
                self._fill = 0
        self.size += len(view)

    def finish(self) -> tuple[str, bytes]:
        """(hex root hash, segment table); call once."""
        if self._fill:
            self._table += self._segment.digest()
        return self._root.hexdigest(), bytes(self._table)


def segment_span(offset: int, end: int, size: int) -> tuple[int, int]:
    """The segment-aligned byte range [start, stop) that covers [offset, end) of a blob of ``size``."""
    first = offset // SEGMENT_SIZE
    last = -(-end // SEGMENT_SIZE)
    return first * SEGMENT_SIZE, min(size, last * SEGMENT_SIZE)


def bad_segment(data: bytes | memoryview, start: int, table: bytes) -> int | None:
    """Index of the first segment of ``data`` (read from segment-aligned ``start``)
    whose digest differs from ``table`` (the whole blob's), else None."""
    view = memoryview(data)
    for pos in range(0, len(view), SEGMENT_SIZE):
        index = (start + pos) // SEGMENT_SIZE
        if blake3(view[pos : pos + SEGMENT_SIZE]).digest() != table[index * DIGEST_SIZE : (index + 1) * DIGEST_SIZE]:
            return index
    return None
