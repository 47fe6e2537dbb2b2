"""The pure-Python :class:`EventCount`: the plain path, for where
``_eventcount.c`` could not be built (no C compiler, MSVC, free-threaded
builds) or when ``ASPEN_HANDOFF=python`` asks for it.

Same interface and meaning as the C type: a count that threads wait on
until it moves. A waiter blocks on a condition variable (the GIL is let go
while blocked); nothing busy-waits.
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
        return self._seq  # read without the lock: an int attribute read is atomic under the GIL

    def bump(self) -> None:
        with self._cond:
            self._seq = (self._seq + 1) & _MASK
            self._cond.notify_all()

    def wait(self, seen: int, timeout_ns: int) -> bool:
        """Until the count is no longer ``seen``, for at most ``timeout_ns``."""
        with self._cond:
            return self._cond.wait_for(lambda: self._seq != seen, timeout_ns / 1e9)
