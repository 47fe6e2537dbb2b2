"""The pure-Python :class:`EventCount`, for where ``aspen/_eventcount.c``
could not be built (no C compiler, MSVC, free-threaded builds) or when
``ASPEN_HANDOFF=python`` asks for it.

Same interface and meaning as the C type: a count that threads wait on
until it moves. Waiting blocks on a condition variable (the GIL is let go
while blocked), so nothing busy-waits; the price is a slower hand-off.
"""

from __future__ import annotations

import threading

_MASK = 0xFFFFFFFF  # the C count is a uint32 that wraps


class EventCount:
    __slots__ = ("_cond", "_seq")

    def __init__(self) -> None:
        self._seq = 0
        self._cond = threading.Condition(threading.Lock())

    def value(self) -> int:
        return self._seq

    def bump(self) -> None:
        with self._cond:
            self._seq = (self._seq + 1) & _MASK
            self._cond.notify_all()

    def wait(self, seen: int, spin_ns: int, park_ns: int = 0) -> bool:
        """Until the count is no longer ``seen``, for at most spin + park time."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq != seen, (spin_ns + park_ns) / 1e9)

    def bump_and_wait(self, other: EventCount, seen: int, spin_ns: int, park_ns: int = 0) -> bool:
        if not isinstance(other, EventCount):
            raise TypeError("other must be an EventCount")
        self.bump()
        return other.wait(seen, spin_ns, park_ns)
