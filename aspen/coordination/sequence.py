"""Sequences: unique, increasing, gap-tolerant numbers. ``reserve(n)`` takes
a range of ``n`` numbers with one counter add; :class:`LocalSequence` serves
``next()`` from a reserved batch so most calls cost no I/O (numbers a
process reserved but never used are the gaps)."""

from __future__ import annotations

from aspen.coordination.counter import Counters
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore

MAX_BATCH = 1_000_000
DEFAULT_BATCH = 100


def check_batch(n: object) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_BATCH:
        raise AspenError(
            ErrorCode.SEQUENCE_BATCH_OUT_OF_RANGE, f"count must be 1..{MAX_BATCH}, got {n!r}", max=MAX_BATCH
        )
    return n


class Sequences:
    def __init__(self, kv: KeyValueStore) -> None:
        self._counters = Counters(kv, kind="seq")

    async def reserve(self, name: str, count: int = 1) -> int:
        """The first of ``count`` numbers nobody else gets (numbers start at 1)."""
        end = await self._counters.add(name, check_batch(count))
        return end - count + 1

    async def current(self, name: str) -> int:
        """The highest number handed out so far (0: none)."""
        return await self._counters.get(name)


class LocalSequence:
    """``next()`` from batches of ``batch`` reserved at a time."""

    def __init__(self, sequences: Sequences, name: str, batch: int = DEFAULT_BATCH) -> None:
        self.sequences, self.name, self.batch = sequences, name, check_batch(batch)
        self._next = self._end = 0

    async def next(self) -> int:
        if self._next >= self._end:
            self._next = await self.sequences.reserve(self.name, self.batch)
            self._end = self._next + self.batch
        value, self._next = self._next, self._next + 1
        return value
