"""How the event loop and the plugin worker threads hand calls to each other.

A plain hand-off (``SimpleQueue`` to the worker, ``call_soon_threadsafe``
back) costs 60–80 µs per round trip on this kind of VM, three times a whole
echo call into WASM, because each side sleeps in the kernel and a woken
thread often finds the GIL still held. The hand-off here waits on an
:class:`EventCount` (``_eventcount.c``) with the GIL released: the worker
spins briefly after each call before it parks, and the loop — only when it
has nothing else ready and the plugin's calls are usually short — spins for
at most :data:`LOOP_SPIN_NS` for the result before it falls back to awaiting
a future. The WASM call itself still runs on the worker thread; the loop
only ever waits, and for a bounded time.

Every result delivered, and every host-function request that needs the loop,
bumps :data:`LOOP_ATTENTION`, so a spinning loop stops at once to serve it.
The node's event loop (:mod:`aspen.node.event_loop`) uses the same count to
spin instead of sleeping while calls are in flight (:data:`IN_FLIGHT`).
"""

from __future__ import annotations

from aspen.plugins._eventcount import EventCount

__all__ = ["EventCount", "IN_FLIGHT", "LOOP_ATTENTION", "LOOP_SPIN_NS", "SHORT_CALL_NS", "WORKER_SPIN_NS", "PARK_NS"]


class _InFlight:
    """Plugin calls out on worker threads: while there are any, the node's
    loop (:mod:`aspen.node.event_loop`) spins before it sleeps. Changed on
    the loop thread only."""

    __slots__ = ("calls",)

    def __init__(self) -> None:
        self.calls = 0


IN_FLIGHT = _InFlight()
LOOP_ATTENTION = EventCount()
LOOP_SPIN_NS = 100_000  # the longest the loop waits inline for one call's result
SHORT_CALL_NS = 50_000  # the loop spins only for plugins whose calls typically take less
WORKER_SPIN_NS = 100_000  # a worker spins this long after a call before it parks
PARK_NS = 1_000_000_000  # a parked worker looks at its queue again after this
