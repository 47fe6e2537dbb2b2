"""The node's event loop: asyncio's selector loop, plus the loop's half of
:mod:`aspen.handoff`.

- Bumps the loop makes for workers (:func:`aspen.handoff.wake`) are held
  until the loop is about to wait, then made with the GIL released, so a
  woken worker never finds the GIL taken.
- While calls are out on other threads (``IN_FLIGHT``) the loop waits for
  the next event by spinning on ``LOOP_ATTENTION`` (GIL released, at most
  ``LOOP_SPIN_NS``) instead of sleeping in ``epoll``; every
  ``call_soon_threadsafe`` bumps it. Sockets are looked at before and after
  each spin, so network I/O waits at most one spin.

With no call in flight the loop behaves as asyncio's own.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from aspen import handoff

T = TypeVar("T")


class _SpinningSelector(selectors.DefaultSelector):  # type: ignore[misc,valid-type]
    def __init__(self) -> None:
        super().__init__()
        self.deferred: list[handoff.EventCount] = []

    def take_deferred(self) -> tuple[handoff.EventCount, ...]:
        bumps = tuple(self.deferred)
        self.deferred.clear()
        return bumps

    def select(self, timeout: float | None = None):
        if not handoff.IN_FLIGHT.calls or timeout == 0:
            for ec in self.take_deferred():
                ec.bump()
            return super().select(timeout)
        attention = handoff.LOOP_ATTENTION
        seen = attention.value()  # before looking, so no bump goes unnoticed
        ready = super().select(0)
        spin_ns = handoff.LOOP_SPIN_NS if timeout is None else min(handoff.LOOP_SPIN_NS, int(timeout * 1e9))
        bumps = self.take_deferred()
        if ready:
            for ec in bumps:
                ec.bump()
            return ready
        if handoff.bump_all_and_wait(bumps, attention, seen, spin_ns):
            return super().select(0)
        return super().select(None if timeout is None else max(0.0, timeout - spin_ns / 1e9))


class AspenEventLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._spinning_selector = _SpinningSelector()
        super().__init__(self._spinning_selector)

    def defer_bump(self, ec: handoff.EventCount) -> None:
        """Bump ``ec`` when the loop next lets go of the GIL (:func:`aspen.handoff.wake`)."""
        self._spinning_selector.deferred.append(ec)

    def wait_inline(self, bump: handoff.EventCount, seen: int, spin_ns: int) -> bool:
        """Bump ``bump`` and every deferred count with the GIL released, then
        spin up to ``spin_ns`` until ``LOOP_ATTENTION`` is no longer ``seen``."""
        bumps = (*self._spinning_selector.take_deferred(), bump)
        return handoff.bump_all_and_wait(bumps, handoff.LOOP_ATTENTION, seen, spin_ns)

    def _write_to_self(self) -> None:
        """``call_soon_threadsafe`` wakes the loop through here: also end a spin."""
        super()._write_to_self()
        if handoff.loud():
            handoff.LOOP_ATTENTION.bump()


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the node's loop."""
    with asyncio.Runner(loop_factory=AspenEventLoop) as runner:
        return runner.run(main)
