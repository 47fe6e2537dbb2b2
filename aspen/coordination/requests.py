"""The coordination request catalog: one msgspec Struct per request and
response body, shared by the handler, the client and the CLI. Names follow
the Rust Aspen ``ClientRpcRequest`` variants where it had one (the election
and ``…Status``/``…Renew`` requests are new). Every request names its
primitive by ``name``; a token needs ``coord`` on ``{KIND}/{name}``
(:mod:`aspen.rpc.access`)."""

from __future__ import annotations

from aspen.coordination.barrier import BarrierState
from aspen.coordination.election import Leader
from aspen.coordination.lock import LockState
from aspen.coordination.queue_requests import (  # noqa: F401 - part of this catalog
    Named,
    QueueAck,
    QueueAckResult,
    QueueCreate,
    QueueCreateResult,
    QueueDelete,
    QueueDeleteResult,
    QueueDequeue,
    QueueDequeueResult,
    QueueDequeueWait,
    QueueEnqueue,
    QueueEnqueueBatch,
    QueueEnqueueBatchResult,
    QueueEnqueueItem,
    QueueEnqueueResult,
    QueueExtendVisibility,
    QueueExtendVisibilityResult,
    QueueGetDLQ,
    QueueItemsResult,
    QueueNack,
    QueueNackResult,
    QueuePeek,
    QueueRedriveDLQ,
    QueueRedriveDLQResult,
    QueueStatus,
    QueueStatusResult,
)
from aspen.coordination.rwlock import RWHolding, RWLockState
from aspen.coordination.semaphore import Permit, SemaphoreState
from aspen.rpc.catalog import Body

# --- locks ------------------------------------------------------------------


class LockTryAcquire(Named):
    holder: str = ""  # a label for humans; ownership is the caller's identity
    ttl_seconds: int = 30


class LockAcquire(LockTryAcquire):
    timeout_seconds: float = 10.0


class LockRelease(Named):
    token: int


class LockRenew(Named):
    token: int


class LockStatus(Named):
    pass


class LockResult(Body):
    lock: LockState


class LockTryResult(Body):
    acquired: bool
    lock: LockState | None  # ours, or the holder's (None: freed meanwhile, try again)


class LockReleaseResult(Body):
    name: str
    token: int


class LockStatusResult(Body):
    lock: LockState | None


# --- read-write locks --------------------------------------------------------------


class RWLockTryAcquireRead(Named):
    holder: str = ""
    ttl_seconds: int = 30


class RWLockAcquireRead(RWLockTryAcquireRead):
    timeout_seconds: float = 10.0


class RWLockTryAcquireWrite(RWLockTryAcquireRead):
    pass


class RWLockAcquireWrite(RWLockAcquireRead):
    pass


class RWLockReleaseRead(Named):
    token: int


class RWLockReleaseWrite(RWLockReleaseRead):
    pass


class RWLockDowngrade(RWLockReleaseRead):
    pass


class RWLockStatus(Named):
    pass


class RWLockResult(Body):
    acquired: bool
    holding: RWHolding | None  # None: a try that found the lock taken


class RWLockReleaseResult(Body):
    name: str
    token: int


class RWLockStatusResult(Body):
    rwlock: RWLockState


# --- counters and sequences ---------------------------------------------------


class CounterGet(Named):
    pass


class CounterIncrement(Named):
    pass


class CounterDecrement(Named):
    pass


class CounterAdd(Named):
    delta: int


class CounterSubtract(Named):
    delta: int


class CounterSet(Named):
    value: int


class CounterCompareAndSet(Named):
    expected: int
    new_value: int


class SignedCounterGet(Named):
    pass


class SignedCounterAdd(Named):
    delta: int


class CounterResult(Body):
    name: str
    value: int


class CounterCompareAndSetResult(Body):
    is_success: bool
    value: int  # the value now


class SequenceNext(Named):
    pass


class SequenceReserve(Named):
    count: int


class SequenceCurrent(Named):
    pass


class SequenceResult(Body):
    name: str
    value: int  # Next: the number; Reserve: the first of the range; Current: the highest handed out


# --- rate limiter -------------------------------------------------------------


class RateLimiterTryAcquire(Named):
    capacity: float
    refill_per_second: float
    tokens: float = 1.0


class RateLimiterAcquire(RateLimiterTryAcquire):
    timeout_seconds: float = 10.0


class RateLimiterAvailable(Named):
    capacity: float
    refill_per_second: float


class RateLimiterReset(Named):
    pass


class RateLimiterResult(Body):
    allowed: bool
    remaining: float
    retry_after_ms: int  # when refused: wait this long before trying again


class RateLimiterAvailableResult(Body):
    tokens: float


class RateLimiterResetResult(Body):
    was_reset: bool


# --- semaphores -----------------------------------------------------------------


class SemaphoreTryAcquire(Named):
    capacity: int
    permits: int = 1
    holder: str = ""
    ttl_seconds: int = 30


class SemaphoreAcquire(SemaphoreTryAcquire):
    timeout_seconds: float = 10.0


class SemaphoreRelease(Named):
    permit_id: int


class SemaphoreRenew(Named):
    permit_id: int


class SemaphoreStatus(Named):
    pass


class SemaphoreResult(Body):
    permit: Permit


class SemaphoreTryResult(Body):
    acquired: bool
    permit: Permit | None


class SemaphoreReleaseResult(Body):
    name: str
    permit_id: int


class SemaphoreRenewResult(Body):
    name: str
    permit_id: int
    deadline_ms: int


class SemaphoreStatusResult(Body):
    semaphore: SemaphoreState


# --- barriers ---------------------------------------------------------------------


class BarrierEnter(Named):
    count: int  # participants the barrier waits for
    participant: str = ""
    ttl_seconds: int = 60
    timeout_seconds: float = 10.0


class BarrierLeave(Named):
    participant_id: int
    timeout_seconds: float = 10.0


class BarrierStatus(Named):
    pass


class BarrierResult(Body):
    barrier: BarrierState


# --- leader election --------------------------------------------------------------


class ElectionCampaign(Named):
    candidate: str = ""
    ttl_seconds: int = 15
    timeout_seconds: float = 10.0


class ElectionRenew(Named):
    lease_id: int


class ElectionResign(Named):
    lease_id: int


class ElectionLeader(Named):
    pass


class ElectionResult(Body):
    leader: Leader


class ElectionResignResult(Body):
    name: str
    lease_id: int


class ElectionLeaderResult(Body):
    leader: Leader | None


# --- the table -----------------------------------------------------------------------

# (request body, response body, the primitive's kind): COORD_REQUESTS is the catalog, KIND the resource kind
_TABLE: list[tuple[type[Body], type[Body], str]] = [
    (LockAcquire, LockResult, "lock"), (LockTryAcquire, LockTryResult, "lock"),
    (LockRelease, LockReleaseResult, "lock"), (LockRenew, LockResult, "lock"),
    (LockStatus, LockStatusResult, "lock"),
    (RWLockAcquireRead, RWLockResult, "rwlock"), (RWLockTryAcquireRead, RWLockResult, "rwlock"),
    (RWLockAcquireWrite, RWLockResult, "rwlock"), (RWLockTryAcquireWrite, RWLockResult, "rwlock"),
    (RWLockReleaseRead, RWLockReleaseResult, "rwlock"), (RWLockReleaseWrite, RWLockReleaseResult, "rwlock"),
    (RWLockDowngrade, RWLockResult, "rwlock"), (RWLockStatus, RWLockStatusResult, "rwlock"),
    (CounterGet, CounterResult, "counter"), (CounterIncrement, CounterResult, "counter"),
    (CounterDecrement, CounterResult, "counter"), (CounterAdd, CounterResult, "counter"),
    (CounterSubtract, CounterResult, "counter"), (CounterSet, CounterResult, "counter"),
    (CounterCompareAndSet, CounterCompareAndSetResult, "counter"),
    (SignedCounterGet, CounterResult, "counter"), (SignedCounterAdd, CounterResult, "counter"),
    (SequenceNext, SequenceResult, "sequence"), (SequenceReserve, SequenceResult, "sequence"),
    (SequenceCurrent, SequenceResult, "sequence"),
    (RateLimiterTryAcquire, RateLimiterResult, "ratelimit"), (RateLimiterAcquire, RateLimiterResult, "ratelimit"),
    (RateLimiterAvailable, RateLimiterAvailableResult, "ratelimit"),
    (RateLimiterReset, RateLimiterResetResult, "ratelimit"),
    (SemaphoreAcquire, SemaphoreResult, "semaphore"), (SemaphoreTryAcquire, SemaphoreTryResult, "semaphore"),
    (SemaphoreRelease, SemaphoreReleaseResult, "semaphore"), (SemaphoreRenew, SemaphoreRenewResult, "semaphore"),
    (SemaphoreStatus, SemaphoreStatusResult, "semaphore"),
    (BarrierEnter, BarrierResult, "barrier"), (BarrierLeave, BarrierResult, "barrier"),
    (BarrierStatus, BarrierResult, "barrier"),
    (ElectionCampaign, ElectionResult, "election"), (ElectionRenew, ElectionResult, "election"),
    (ElectionResign, ElectionResignResult, "election"), (ElectionLeader, ElectionLeaderResult, "election"),
    (QueueCreate, QueueCreateResult, "queue"), (QueueDelete, QueueDeleteResult, "queue"),
    (QueueEnqueue, QueueEnqueueResult, "queue"), (QueueEnqueueBatch, QueueEnqueueBatchResult, "queue"),
    (QueueDequeue, QueueDequeueResult, "queue"), (QueueDequeueWait, QueueDequeueResult, "queue"),
    (QueuePeek, QueueItemsResult, "queue"), (QueueAck, QueueAckResult, "queue"),
    (QueueNack, QueueNackResult, "queue"), (QueueExtendVisibility, QueueExtendVisibilityResult, "queue"),
    (QueueStatus, QueueStatusResult, "queue"), (QueueGetDLQ, QueueItemsResult, "queue"),
    (QueueRedriveDLQ, QueueRedriveDLQResult, "queue"),
]  # fmt: skip

COORD_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    req.__name__: (req, resp.__name__, resp) for req, resp, _ in _TABLE
}
KIND: dict[str, str] = {req.__name__: kind for req, _, kind in _TABLE}
