"""Coordination primitives on the :class:`~aspen.storage.protocol.KeyValueStore`
protocol: locks, read-write locks, semaphores, barriers, leader election, counters, sequences, a
rate limiter and queues. Every one keeps its state under the reserved ``__coord:``
prefix, which only this layer writes, so it runs alike on SQLite and etcd and
can be used in-process (jobs, plugins) or through the RPCs of
:mod:`aspen.coordination.handler`."""

from aspen.coordination.barrier import Barriers
from aspen.coordination.counter import Counters
from aspen.coordination.election import Elections
from aspen.coordination.lock import Locks
from aspen.coordination.queue import Queues
from aspen.coordination.ratelimit import RateLimiters
from aspen.coordination.rwlock import RWLocks
from aspen.coordination.semaphore import Semaphores
from aspen.coordination.sequence import Sequences

__all__ = ["Barriers", "Counters", "Elections", "Locks", "Queues", "RWLocks", "RateLimiters", "Semaphores", "Sequences"]
