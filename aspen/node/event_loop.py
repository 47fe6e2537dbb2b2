"""The node's event loop: asyncio's selector loop that, while a plugin call
is out on a worker thread, waits for the next event by spinning (GIL
released, at most :data:`~aspen.plugins.handoff.LOOP_SPIN_NS`) instead of
sleeping in ``epoll``.

Why: on a VM whose idle vCPUs halt at once, every ``epoll`` wake from
another thread costs 20–30 µs, and a plugin call that uses host functions
crosses threads several times (guest -> loop -> SQLite thread -> loop ->
guest -> loop). Every ``call_soon_threadsafe`` bumps
:data:`~aspen.plugins.handoff.LOOP_ATTENTION`, so the spinning loop sees it
at once. Sockets are looked at before and after each spin, so network I/O
waits at most one spin. With no plugin call in flight the loop is asyncio's
own, unchanged.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from aspen.plugins import handoff

T = TypeVar("T")


class _SpinningSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def select(self, timeout: float | None = None):
        if handoff.IN_FLIGHT.calls and (timeout is None or timeout > 0):
            attention = handoff.LOOP_ATTENTION
            seen = attention.value()  # before looking, so no bump goes unnoticed
            ready = super().select(0)
            if ready:
                return ready
            spin_ns = handoff.LOOP_SPIN_NS if timeout is None else min(handoff.LOOP_SPIN_NS, int(timeout * 1e9))
            if attention.wait(seen, spin_ns):
                return super().select(0)
            if timeout is not None:
                timeout = max(0.0, timeout - spin_ns / 1e9)
        return super().select(timeout)


class AspenEventLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__(_SpinningSelector())

    def _write_to_self(self) -> None:
        """``call_soon_threadsafe`` wakes the loop through here: also end a spin."""
        super()._write_to_self()
        handoff.LOOP_ATTENTION.bump()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the node's loop."""
    with asyncio.Runner(loop_factory=AspenEventLoop) as runner:
        return runner.run(main)
