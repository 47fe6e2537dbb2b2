"""How the event loop hands a call to a worker thread (a plugin instance)
and a worker hands a host-function request to the loop.

To a worker: put the job on a ``SimpleQueue``, then ``bump`` the
:class:`EventCount` the workers wait on. Back to the loop:
``call_soon_threadsafe``, which wakes any loop (asyncio's own, uvloop).
A worker waiting for the loop's answer to a host-function call waits on an
:class:`EventCount` the loop bumps.

:class:`EventCount` comes in two implementations with one interface, chosen
once, at import:

- native (``_eventcount.c``, built by ``pip install`` where a C compiler
  exists): a waiter releases the GIL and parks on a futex (a short sleep loop
  off Linux), and ``bump_and_wait`` bumps after the GIL is released, so the
  woken thread never finds it taken;
- plain (:mod:`aspen.handoff.plain`): a condition variable. Used without the
  extension or with ``ASPEN_HANDOFF=python``; same behaviour, nothing spins.

GIL assumptions (both paths): a job's ``outcome`` is written by the worker
before it calls ``call_soon_threadsafe`` and read by the loop in the
callback, and the queue's lock orders the loop's writes to a job before the
worker reads it; counters such as ``PluginRuntime._pending`` are touched on
the loop thread only. The plain :meth:`EventCount.value` reads an ``int``
attribute without its lock, which the GIL makes atomic (a free-threaded
build needs the native path or a lock there).
"""

from __future__ import annotations

import os

try:  # chosen once: the C extension unless it is missing or ASPEN_HANDOFF=python
    if os.environ.get("ASPEN_HANDOFF") == "python":
        raise ImportError("ASPEN_HANDOFF=python")
    from aspen.handoff._eventcount import EventCount

    NATIVE = True
except ImportError:
    from aspen.handoff.plain import EventCount

    NATIVE = False

__all__ = ["LOOP_ATTENTION", "NATIVE", "PARK_NS", "WORKER_SPIN_NS", "EventCount", "quiet_wakeups", "wake"]

WORKER_SPIN_NS = 0 if "worker_spin" in os.environ.get("ASPEN_BENCH_OFF", "") or not NATIVE else 100_000  # TEMPORARY
PARK_NS = 1_000_000_000  # a parked worker looks at its queue again after this


def wake(ec: EventCount, loop: object) -> None:
    """Wake whoever waits on ``ec``."""
    ec.bump()


# Kept for aspen/plugins/host_functions.py until it stops importing them:
# nothing waits on LOOP_ATTENTION any more and call_soon_threadsafe has no quiet mode.
LOOP_ATTENTION = EventCount()


class quiet_wakeups:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass
