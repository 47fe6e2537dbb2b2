"""How the event loop and worker threads (plugin instances, host-function
calls) hand work to each other without paying a kernel wake-up each way.

A plain hand-off (``SimpleQueue`` to the worker, ``call_soon_threadsafe``
back) costs 60–80 µs per round trip on this kind of VM, three times a whole
echo call into WASM: each side sleeps in the kernel (a wake is an IPI to a
halted vCPU), and a thread woken while the other still holds the GIL goes
straight back to sleep inside the interpreter. So:

- Threads wait on an :class:`EventCount` (``_eventcount.c``) with the GIL
  released: spin for a bounded time, then park on a futex.
- A count is bumped only with the GIL released: a worker bumps and waits in
  one call (``bump_and_wait``); the loop, which must go on running Python,
  defers its bumps (:func:`wake`) until it is about to wait in its selector
  (:mod:`aspen.node.event_loop`), and a worker's ``call_soon_threadsafe``
  leaves the loop's bump to that worker (:func:`quiet_wakeups`).
- While calls are out on other threads (:data:`IN_FLIGHT`) the node's loop
  spins on :data:`LOOP_ATTENTION` instead of sleeping in ``epoll``; every
  result and every host-function request bumps it.

On any other event loop everything still works: bumps are immediate and the
loop sleeps in ``epoll`` as usual. Without the C extension (no compiler) or
with ``ASPEN_HANDOFF=python``, :mod:`aspen.eventcount_fallback` provides the
same type on a condition variable: nothing spins, every wait blocks.
"""

from __future__ import annotations

import asyncio
import os
import threading

try:  # chosen once, at import: the C extension unless it is missing or ASPEN_HANDOFF=python
    if os.environ.get("ASPEN_HANDOFF") == "python":
        raise ImportError("ASPEN_HANDOFF=python")
    from aspen._eventcount import EventCount, bump_all_and_wait

    NATIVE = True
except ImportError:
    from aspen.eventcount_fallback import EventCount, bump_all_and_wait

    NATIVE = False

__all__ = [
    "IN_FLIGHT",
    "LOOP_ATTENTION",
    "LOOP_SPIN_NS",
    "NATIVE",
    "PARK_NS",
    "SHORT_CALL_NS",
    "WORKER_SPIN_NS",
    "EventCount",
    "bump_all_and_wait",
    "loud",
    "quiet_wakeups",
    "wake",
]

LOOP_SPIN_NS = 100_000  # the longest the loop spins before it sleeps in epoll
SHORT_CALL_NS = 50_000  # the loop waits inline only for plugins whose calls typically take less
WORKER_SPIN_NS = 100_000  # a worker spins this long after its work before it parks
PARK_NS = 1_000_000_000  # a parked worker looks at its queue again after this


class _InFlight:
    """Calls out on other threads that the loop waits for: while there are
    any, the node's loop spins before it sleeps. Changed on the loop thread."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


IN_FLIGHT = _InFlight()
LOOP_ATTENTION = EventCount()  # bumped whenever another thread needs the loop


def wake(ec: EventCount, loop: asyncio.AbstractEventLoop) -> None:
    """On the loop thread: wake whoever waits on ``ec`` — on the node's loop
    as soon as it lets go of the GIL, elsewhere at once."""
    defer = getattr(loop, "defer_bump", None)
    if defer is None:
        ec.bump()
    else:
        defer(ec)


_thread = threading.local()


class quiet_wakeups:
    """On a worker thread: ``call_soon_threadsafe`` inside this block does not
    bump :data:`LOOP_ATTENTION`; the worker bumps it itself, with the GIL
    released (``bump_and_wait``), right after."""

    __slots__ = ()

    def __enter__(self) -> None:
        _thread.quiet = True

    def __exit__(self, *exc: object) -> None:
        _thread.quiet = False


def loud() -> bool:
    """Whether a ``call_soon_threadsafe`` on this thread should bump :data:`LOOP_ATTENTION`."""
    return not getattr(_thread, "quiet", False)
