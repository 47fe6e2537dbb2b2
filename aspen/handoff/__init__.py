"""How the event loop hands a call to a worker thread (a plugin instance)
and a worker hands a host-function request to the loop.

Plugin calls, two ways with one behaviour, chosen once at import
(``NATIVE_CALLS``):

- native (``_calls.c``, POSIX threads, built by ``pip install`` where a C
  compiler exists; :mod:`aspen.plugins.native_workers`): a worker serves
  from C without the GIL, taking jobs from a mutex-guarded list and calling
  libextism directly; finished calls go on a list the loop takes in one go
  when the queue's descriptor (``add_reader``) turns readable;
- plain (:mod:`aspen.plugins.python_workers`): a ``SimpleQueue`` and an
  :class:`EventCount` to a Python worker, ``call_soon_threadsafe`` back,
  which wakes any loop (asyncio's own, uvloop). Used without the extension
  or with ``ASPEN_HANDOFF=python``.

A worker waiting for the loop's answer to a host-function call waits on an
:class:`EventCount` the loop bumps, on either path. :class:`EventCount` is
native (``_eventcount.c``: a waiter releases the GIL and parks on a futex, a
50 µs sleep loop off Linux; a bump is one atomic add, plus a futex wake when
someone is parked) or plain (:mod:`aspen.handoff.plain`: a condition
variable), chosen the same way.

Nothing spins on either path. What the old hand-off added on top (the loop
waiting inline for short calls, a worker spinning after its work, a
spinning selector loop, bumps deferred until the loop let go of the GIL,
quiet wake-ups) earned nothing over HTTP once the node served on uvloop and
httptools, alone or under CPU contention (benchmarks/RESULTS.md,
"bench_http"), and is gone. Extism's threads and the native workers run
``SCHED_BATCH`` (:mod:`aspen.plugins.runtime`, :mod:`aspen.plugins.native_workers`):
that earned its keep under contention.

GIL assumptions, relied on in the worker modules and here:
``SimpleQueue.put``/``get`` and ``call_soon_threadsafe`` synchronise, so
what one side wrote to a job before handing it over is seen by the other;
a Python worker reads ``job.future.done()`` off the loop thread, a racy read the
GIL keeps whole (``_settle`` checks again on the loop); the runtime's
counters (``_pending``, ``calls``, ``faults``) and the native workers' table
of waiting calls change on the loop thread only; a native worker's
``_load_error`` is written on its thread and read on the loop, one attribute
store; :meth:`plain.EventCount.value` reads an ``int`` without the lock.
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

try:  # the GIL-free plugin workers (aspen.plugins.native_workers), on the same terms
    if os.environ.get("ASPEN_HANDOFF") == "python":
        raise ImportError("ASPEN_HANDOFF=python")
    from aspen.handoff import _calls  # noqa: F401

    NATIVE_CALLS = True
except ImportError:
    NATIVE_CALLS = False

__all__ = ["NATIVE", "NATIVE_CALLS", "PARK_NS", "EventCount"]

PARK_NS = 1_000_000_000  # a parked worker looks at its queue again after this
