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
  exists): a waiter releases the GIL and parks on a futex (a 50 µs sleep
  loop off Linux); a bump is one atomic add, plus a futex wake when someone
  is parked;
- plain (:mod:`aspen.handoff.plain`): a condition variable. Used without the
  extension or with ``ASPEN_HANDOFF=python``; same behaviour.

Nothing spins on either path. What the old hand-off added on top (the loop
waiting inline for short calls, a worker spinning after its work, a
spinning selector loop, bumps deferred until the loop let go of the GIL,
quiet wake-ups) earned nothing over HTTP once the node served on uvloop and
httptools, alone or under CPU contention (benchmarks/RESULTS.md,
"bench_http"), and is gone. Extism's threads still run ``SCHED_BATCH``
(:mod:`aspen.plugins.runtime`): that earned its keep under contention.

GIL assumptions, relied on in :mod:`aspen.plugins.runtime` and here:
``SimpleQueue.put``/``get`` and ``call_soon_threadsafe`` synchronise, so
what one side wrote to a job before handing it over is seen by the other;
a worker reads ``job.future.done()`` off the loop thread, a racy read the
GIL keeps whole (``_settle`` checks again on the loop); the runtime's
counters (``_pending``, ``calls``, ``faults``) change on the loop thread
only; :meth:`plain.EventCount.value` reads an ``int`` without the lock.
Under a free-threaded build the last two would need a lock.
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

__all__ = ["NATIVE", "PARK_NS", "EventCount"]

PARK_NS = 1_000_000_000  # a parked worker looks at its queue again after this
