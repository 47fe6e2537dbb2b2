"""The coordination RPCs (:mod:`aspen.coordination.requests`) on the node's
store. Registered through the ``aspen.handlers`` entry-point group
(``coordination = "aspen.coordination.handler:create"``).

Ownership is per caller: a lock, permit or candidacy records the verified
token's subject, and only that caller can renew or release it (another
caller's token answers ``LOCK_NOT_HELD`` / ``SEMAPHORE_NOT_HELD`` /
``ELECTION_NOT_LEADER``, as a lost one). Each holding is a lease, and it is
recorded as the caller's own (:mod:`aspen.rpc.lease_handler`), so it counts
against the caller's ``[quotas] leases_per_caller``. Queue receipts are
unguessable and act on their own. A blocking request waits at most its
``timeout_seconds`` and never past the request's own deadline.
"""

from __future__ import annotations

from typing import Any

from aspen.coordination import requests as m
from aspen.coordination.barrier import Barriers
from aspen.coordination.counter import Counters
from aspen.coordination.election import Elections
from aspen.coordination.lock import Locks
from aspen.coordination.queue import Queues
from aspen.coordination.queue_model import QueueConfig
from aspen.coordination.ratelimit import RateLimiters
from aspen.coordination.rwlock import RWLocks
from aspen.coordination.semaphore import Semaphores
from aspen.coordination.sequence import Sequences
from aspen.coordination.space import check_label, check_name, check_wait
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.rpc.handler import RequestContext
from aspen.rpc.lease_handler import DEFAULT_LEASES_PER_CALLER, owner_key, owner_prefix
from aspen.rpc.typed_handler import TypedHandler

DEADLINE_MARGIN = 0.5  # seconds kept to answer before the request's deadline


def _owner(ctx: RequestContext) -> str:
    return ctx.caller or ""


def _wait(timeout: float, ctx: RequestContext) -> float:
    return max(0.0, min(check_wait(timeout), ctx.remaining() - DEADLINE_MARGIN))


class CoordinationHandler(TypedHandler):
    name = "core.coordination"
    priority = 60
    catalog = m.COORD_REQUESTS
    handles = tuple(m.COORD_REQUESTS)

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        kv = node.kv
        self.locks, self.semaphores, self.elections = Locks(kv), Semaphores(kv), Elections(kv)
        self.counters, self.signed = Counters(kv), Counters(kv, signed=True)
        self.sequences, self.rates, self.queues = Sequences(kv), RateLimiters(kv), Queues(kv)
        self.barriers, self.rwlocks = Barriers(kv), RWLocks(kv)

    # --- the caller's leases ----------------------------------------------------

    async def _quota(self, ctx: RequestContext) -> None:
        """Refuse a new holding once the caller holds ``leases_per_caller`` leases."""
        if ctx.caller is None:
            return
        limit = int(self.node.config.sections.get("quotas", {}).get("leases_per_caller", DEFAULT_LEASES_PER_CALLER))
        page = await self.node.kv.scan(owner_prefix(ctx.caller), limit=max(1, min(limit, 10_000)))
        if len(page.entries) >= limit:
            raise quota_exceeded("leases_per_caller", limit, len(page.entries))

    async def _charge(self, ctx: RequestContext, lease_id: int) -> None:
        """Record the holding's lease as the caller's (it goes with the lease)."""
        if ctx.caller is None:
            return
        try:
            await self.node.kv.put(owner_key(ctx.caller, lease_id), b"", lease=lease_id)
        except AspenError as exc:
            if exc.code != ErrorCode.LEASE_NOT_FOUND:  # expired already: nothing to count
                raise

    # --- locks ------------------------------------------------------------------

    async def lock_acquire(self, b: m.LockAcquire, ctx: RequestContext) -> m.LockResult:
        await self._quota(ctx)
        lock = await self.locks.acquire(
            b.name,
            holder=check_label(b.holder),
            owner=_owner(ctx),
            ttl=b.ttl_seconds,
            timeout=_wait(b.timeout_seconds, ctx),
        )
        await self._charge(ctx, lock.lease_id)
        return m.LockResult(lock=lock)

    async def lock_try_acquire(self, b: m.LockTryAcquire, ctx: RequestContext) -> m.LockTryResult:
        await self._quota(ctx)
        r = await self.locks.try_acquire(b.name, holder=check_label(b.holder), owner=_owner(ctx), ttl=b.ttl_seconds)
        if r.acquired:
            await self._charge(ctx, r.lock.lease_id)
        return m.LockTryResult(acquired=r.acquired, lock=r.lock)

    async def lock_release(self, b: m.LockRelease, ctx: RequestContext) -> m.LockReleaseResult:
        await self.locks.release(b.name, b.token, owner=_owner(ctx))
        return m.LockReleaseResult(name=b.name, token=b.token)

    async def lock_renew(self, b: m.LockRenew, ctx: RequestContext) -> m.LockResult:
        return m.LockResult(lock=await self.locks.renew(b.name, b.token, owner=_owner(ctx)))

    async def lock_status(self, b: m.LockStatus, ctx: RequestContext) -> m.LockStatusResult:
        return m.LockStatusResult(lock=await self.locks.status(b.name))

    # --- read-write locks ----------------------------------------------------------------

    async def _rw(
        self, b: m.RWLockTryAcquireRead, ctx: RequestContext, mode: str, timeout: float | None
    ) -> m.RWLockResult:
        await self._quota(ctx)
        got = await self.rwlocks.acquire(
            b.name, mode, holder=check_label(b.holder), owner=_owner(ctx), ttl=b.ttl_seconds,
            timeout=0.0 if timeout is None else _wait(timeout, ctx), wait=timeout is not None,
        )  # fmt: skip
        if got is not None:
            await self._charge(ctx, got.lease_id)
        return m.RWLockResult(acquired=got is not None, holding=got)

    async def r_w_lock_acquire_read(self, b: m.RWLockAcquireRead, ctx: RequestContext) -> m.RWLockResult:
        return await self._rw(b, ctx, "read", b.timeout_seconds)

    async def r_w_lock_try_acquire_read(self, b: m.RWLockTryAcquireRead, ctx: RequestContext) -> m.RWLockResult:
        return await self._rw(b, ctx, "read", None)

    async def r_w_lock_acquire_write(self, b: m.RWLockAcquireWrite, ctx: RequestContext) -> m.RWLockResult:
        return await self._rw(b, ctx, "write", b.timeout_seconds)

    async def r_w_lock_try_acquire_write(self, b: m.RWLockTryAcquireWrite, ctx: RequestContext) -> m.RWLockResult:
        return await self._rw(b, ctx, "write", None)

    async def r_w_lock_release_read(self, b: m.RWLockReleaseRead, ctx: RequestContext) -> m.RWLockReleaseResult:
        await self.rwlocks.release(b.name, b.token, "read", owner=_owner(ctx))
        return m.RWLockReleaseResult(name=b.name, token=b.token)

    async def r_w_lock_release_write(self, b: m.RWLockReleaseWrite, ctx: RequestContext) -> m.RWLockReleaseResult:
        await self.rwlocks.release(b.name, b.token, "write", owner=_owner(ctx))
        return m.RWLockReleaseResult(name=b.name, token=b.token)

    async def r_w_lock_downgrade(self, b: m.RWLockDowngrade, ctx: RequestContext) -> m.RWLockResult:
        return m.RWLockResult(acquired=True, holding=await self.rwlocks.downgrade(b.name, b.token, owner=_owner(ctx)))

    async def r_w_lock_status(self, b: m.RWLockStatus, ctx: RequestContext) -> m.RWLockStatusResult:
        return m.RWLockStatusResult(rwlock=await self.rwlocks.status(b.name))

    # --- counters and sequences -----------------------------------------------------

    async def _add(self, name: str, delta: int, counters: Counters | None = None) -> m.CounterResult:
        return m.CounterResult(name=name, value=await (counters or self.counters).add(name, delta))

    async def counter_get(self, b: m.CounterGet, ctx: RequestContext) -> m.CounterResult:
        return m.CounterResult(name=b.name, value=await self.counters.get(b.name))

    async def counter_increment(self, b: m.CounterIncrement, ctx: RequestContext) -> m.CounterResult:
        return await self._add(b.name, 1)

    async def counter_decrement(self, b: m.CounterDecrement, ctx: RequestContext) -> m.CounterResult:
        return await self._add(b.name, -1)

    async def counter_add(self, b: m.CounterAdd, ctx: RequestContext) -> m.CounterResult:
        return await self._add(b.name, b.delta)

    async def counter_subtract(self, b: m.CounterSubtract, ctx: RequestContext) -> m.CounterResult:
        return await self._add(b.name, -b.delta)

    async def counter_set(self, b: m.CounterSet, ctx: RequestContext) -> m.CounterResult:
        return m.CounterResult(name=b.name, value=await self.counters.set(b.name, b.value))

    async def counter_compare_and_set(
        self, b: m.CounterCompareAndSet, ctx: RequestContext
    ) -> m.CounterCompareAndSetResult:
        ok, value = await self.counters.compare_and_set(b.name, b.expected, b.new_value)
        return m.CounterCompareAndSetResult(is_success=ok, value=value)

    async def signed_counter_get(self, b: m.SignedCounterGet, ctx: RequestContext) -> m.CounterResult:
        return m.CounterResult(name=b.name, value=await self.signed.get(b.name))

    async def signed_counter_add(self, b: m.SignedCounterAdd, ctx: RequestContext) -> m.CounterResult:
        return await self._add(b.name, b.delta, self.signed)

    async def sequence_next(self, b: m.SequenceNext, ctx: RequestContext) -> m.SequenceResult:
        return m.SequenceResult(name=b.name, value=await self.sequences.reserve(b.name, 1))

    async def sequence_reserve(self, b: m.SequenceReserve, ctx: RequestContext) -> m.SequenceResult:
        return m.SequenceResult(name=b.name, value=await self.sequences.reserve(b.name, b.count))

    async def sequence_current(self, b: m.SequenceCurrent, ctx: RequestContext) -> m.SequenceResult:
        return m.SequenceResult(name=b.name, value=await self.sequences.current(b.name))

    # --- rate limiter -------------------------------------------------------------------

    async def rate_limiter_try_acquire(self, b: m.RateLimiterTryAcquire, ctx: RequestContext) -> m.RateLimiterResult:
        d = await self.rates.try_acquire(b.name, b.capacity, b.refill_per_second, b.tokens)
        return m.RateLimiterResult(allowed=d.allowed, remaining=d.remaining, retry_after_ms=d.retry_after_ms)

    async def rate_limiter_acquire(self, b: m.RateLimiterAcquire, ctx: RequestContext) -> m.RateLimiterResult:
        d = await self.rates.acquire(
            b.name, b.capacity, b.refill_per_second, b.tokens, timeout=_wait(b.timeout_seconds, ctx)
        )
        return m.RateLimiterResult(allowed=d.allowed, remaining=d.remaining, retry_after_ms=d.retry_after_ms)

    async def rate_limiter_available(
        self, b: m.RateLimiterAvailable, ctx: RequestContext
    ) -> m.RateLimiterAvailableResult:
        return m.RateLimiterAvailableResult(tokens=await self.rates.available(b.name, b.capacity, b.refill_per_second))

    async def rate_limiter_reset(self, b: m.RateLimiterReset, ctx: RequestContext) -> m.RateLimiterResetResult:
        return m.RateLimiterResetResult(was_reset=await self.rates.reset(check_name(b.name)))

    # --- semaphores -------------------------------------------------------------------------

    async def semaphore_acquire(self, b: m.SemaphoreAcquire, ctx: RequestContext) -> m.SemaphoreResult:
        await self._quota(ctx)
        permit = await self.semaphores.acquire(
            b.name, b.capacity, b.permits, holder=check_label(b.holder), owner=_owner(ctx), ttl=b.ttl_seconds,
            timeout=_wait(b.timeout_seconds, ctx),
        )  # fmt: skip
        await self._charge(ctx, permit.permit_id)
        return m.SemaphoreResult(permit=permit)

    async def semaphore_try_acquire(self, b: m.SemaphoreTryAcquire, ctx: RequestContext) -> m.SemaphoreTryResult:
        await self._quota(ctx)
        permit = await self.semaphores.try_acquire(
            b.name, b.capacity, b.permits, holder=check_label(b.holder), owner=_owner(ctx), ttl=b.ttl_seconds
        )
        if permit is not None:
            await self._charge(ctx, permit.permit_id)
        return m.SemaphoreTryResult(acquired=permit is not None, permit=permit)

    async def semaphore_release(self, b: m.SemaphoreRelease, ctx: RequestContext) -> m.SemaphoreReleaseResult:
        await self.semaphores.release(b.name, b.permit_id, owner=_owner(ctx))
        return m.SemaphoreReleaseResult(name=b.name, permit_id=b.permit_id)

    async def semaphore_renew(self, b: m.SemaphoreRenew, ctx: RequestContext) -> m.SemaphoreRenewResult:
        deadline = await self.semaphores.renew(b.name, b.permit_id, owner=_owner(ctx))
        return m.SemaphoreRenewResult(name=b.name, permit_id=b.permit_id, deadline_ms=deadline)

    async def semaphore_status(self, b: m.SemaphoreStatus, ctx: RequestContext) -> m.SemaphoreStatusResult:
        return m.SemaphoreStatusResult(semaphore=await self.semaphores.status(b.name))

    # --- barriers --------------------------------------------------------------------------

    async def barrier_enter(self, b: m.BarrierEnter, ctx: RequestContext) -> m.BarrierResult:
        await self._quota(ctx)
        state = await self.barriers.enter(
            b.name, b.count, participant=check_label(b.participant, "participant"), owner=_owner(ctx),
            ttl=b.ttl_seconds, timeout=_wait(b.timeout_seconds, ctx),
        )  # fmt: skip
        await self._charge(ctx, state.participant_id)
        return m.BarrierResult(barrier=state)

    async def barrier_leave(self, b: m.BarrierLeave, ctx: RequestContext) -> m.BarrierResult:
        state = await self.barriers.leave(
            b.name, b.participant_id, owner=_owner(ctx), timeout=_wait(b.timeout_seconds, ctx)
        )
        return m.BarrierResult(barrier=state)

    async def barrier_status(self, b: m.BarrierStatus, ctx: RequestContext) -> m.BarrierResult:
        return m.BarrierResult(barrier=await self.barriers.status(b.name))

    # --- leader election ---------------------------------------------------------------------

    async def election_campaign(self, b: m.ElectionCampaign, ctx: RequestContext) -> m.ElectionResult:
        await self._quota(ctx)
        leader = await self.elections.campaign(
            b.name, candidate=check_label(b.candidate, "candidate"), owner=_owner(ctx), ttl=b.ttl_seconds,
            timeout=_wait(b.timeout_seconds, ctx),
        )  # fmt: skip
        await self._charge(ctx, leader.lease_id)
        return m.ElectionResult(leader=leader)

    async def election_renew(self, b: m.ElectionRenew, ctx: RequestContext) -> m.ElectionResult:
        return m.ElectionResult(leader=await self.elections.renew(b.name, b.lease_id, owner=_owner(ctx)))

    async def election_resign(self, b: m.ElectionResign, ctx: RequestContext) -> m.ElectionResignResult:
        await self.elections.resign(b.name, b.lease_id, owner=_owner(ctx))
        return m.ElectionResignResult(name=b.name, lease_id=b.lease_id)

    async def election_leader(self, b: m.ElectionLeader, ctx: RequestContext) -> m.ElectionLeaderResult:
        return m.ElectionLeaderResult(leader=await self.elections.leader(b.name))

    # --- queues ----------------------------------------------------------------------------------

    async def queue_create(self, b: m.QueueCreate, ctx: RequestContext) -> m.QueueCreateResult:
        config = QueueConfig(
            visibility_timeout_ms=b.visibility_timeout_ms, max_delivery_attempts=b.max_delivery_attempts,
            max_items=b.max_items,
        )  # fmt: skip
        return m.QueueCreateResult(name=b.name, config=await self.queues.create(b.name, config))

    async def queue_delete(self, b: m.QueueDelete, ctx: RequestContext) -> m.QueueDeleteResult:
        return m.QueueDeleteResult(name=b.name, was_deleted=await self.queues.delete(b.name))

    async def queue_enqueue(self, b: m.QueueEnqueue, ctx: RequestContext) -> m.QueueEnqueueResult:
        item_id = await self.queues.enqueue(
            b.name, b.payload, group=b.group_id, dedup_id=b.dedup_id, delay_ms=b.delay_ms
        )
        return m.QueueEnqueueResult(item_id=item_id)

    async def queue_enqueue_batch(self, b: m.QueueEnqueueBatch, ctx: RequestContext) -> m.QueueEnqueueBatchResult:
        items = [(i.payload, i.group_id, i.dedup_id, i.delay_ms) for i in b.items]
        return m.QueueEnqueueBatchResult(item_ids=await self.queues.enqueue_batch(b.name, items))

    async def queue_dequeue(self, b: m.QueueDequeue, ctx: RequestContext) -> m.QueueDequeueResult:
        got = await self.queues.dequeue(
            b.name,
            check_label(b.consumer, "consumer"),
            max_items=b.max_items,
            visibility_timeout_ms=b.visibility_timeout_ms,
        )
        return m.QueueDequeueResult(items=got)

    async def queue_dequeue_wait(self, b: m.QueueDequeueWait, ctx: RequestContext) -> m.QueueDequeueResult:
        got = await self.queues.dequeue_wait(
            b.name, check_label(b.consumer, "consumer"), max_items=b.max_items,
            visibility_timeout_ms=b.visibility_timeout_ms, timeout=_wait(b.timeout_seconds, ctx),
        )  # fmt: skip
        return m.QueueDequeueResult(items=got)

    async def queue_peek(self, b: m.QueuePeek, ctx: RequestContext) -> m.QueueItemsResult:
        return m.QueueItemsResult(items=await self.queues.peek(b.name, b.max_items))

    async def queue_ack(self, b: m.QueueAck, ctx: RequestContext) -> m.QueueAckResult:
        await self.queues.ack(b.name, b.receipt)
        return m.QueueAckResult(receipt=b.receipt)

    async def queue_nack(self, b: m.QueueNack, ctx: RequestContext) -> m.QueueNackResult:
        moved = await self.queues.nack(b.name, b.receipt, to_dlq=b.to_dlq, delay_ms=b.delay_ms, error=b.error)
        return m.QueueNackResult(moved_to_dlq=moved)

    async def queue_extend_visibility(
        self, b: m.QueueExtendVisibility, ctx: RequestContext
    ) -> m.QueueExtendVisibilityResult:
        until = await self.queues.extend(b.name, b.receipt, b.visibility_timeout_ms)
        return m.QueueExtendVisibilityResult(visible_at_ms=until)

    async def queue_status(self, b: m.QueueStatus, ctx: RequestContext) -> m.QueueStatusResult:
        return m.QueueStatusResult(status=await self.queues.status(b.name))

    async def queue_get_d_l_q(self, b: m.QueueGetDLQ, ctx: RequestContext) -> m.QueueItemsResult:
        return m.QueueItemsResult(items=await self.queues.dlq(b.name, b.max_items))

    async def queue_redrive_d_l_q(self, b: m.QueueRedriveDLQ, ctx: RequestContext) -> m.QueueRedriveDLQResult:
        return m.QueueRedriveDLQResult(redriven=await self.queues.redrive(b.name, b.max_items))


def create(node: Any) -> CoordinationHandler:
    return CoordinationHandler(node)
