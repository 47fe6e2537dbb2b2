"""The primitives in-process, on every store backend: semantics, limits
and their error codes."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.coordination import (
    Counters,
    Elections,
    Locks,
    Queues,
    RateLimiters,
    Semaphores,
    Sequences,
)
from aspen.coordination.queue_model import MAX_PAYLOAD_BYTES, QueueConfig
from aspen.coordination.sequence import LocalSequence
from aspen.errors import AspenError, ErrorCode
from tests.coordination.counting import CountingStore


def code(exc: pytest.ExceptionInfo) -> str:
    return exc.value.code


async def test_lock_tokens_increase_and_try_acquire_names_the_holder(any_kv):
    locks = Locks(any_kv)
    a = await locks.acquire("l", holder="a", ttl=10)
    busy = await locks.try_acquire("l", holder="b")
    assert not busy.acquired and busy.lock.holder == "a" and busy.lock.token == a.token
    assert busy.lock.deadline_ms > time.time() * 1000
    await locks.release("l", a.token)
    b = await locks.acquire("l", holder="b")
    assert b.token > a.token
    with pytest.raises(AspenError) as exc:
        await locks.release("l", a.token)  # a stale holder
    assert code(exc) == ErrorCode.LOCK_NOT_HELD
    with pytest.raises(AspenError) as exc:
        await locks.renew("l", b.token, owner="somebody-else")
    assert code(exc) == ErrorCode.LOCK_NOT_HELD
    assert (await locks.renew("l", b.token)).token == b.token
    await locks.release("l", b.token)
    assert await locks.status("l") is None


async def test_lock_expires_with_its_ttl_and_times_out_while_held(any_kv):
    locks = Locks(any_kv)
    a = await locks.acquire("t", ttl=1)
    with pytest.raises(AspenError) as exc:
        await locks.acquire("t", timeout=0.2)
    assert code(exc) == ErrorCode.COORD_WAIT_TIMEOUT
    b = await locks.acquire("t", timeout=10)  # a's lease runs out
    assert b.token > a.token
    with pytest.raises(AspenError) as exc:
        await locks.renew("t", a.token)
    assert code(exc) == ErrorCode.LOCK_NOT_HELD


async def test_blocked_acquire_waits_on_a_watch_not_by_polling(any_kv):
    counting = CountingStore(any_kv)
    locks = Locks(any_kv)
    held = await locks.acquire("w", ttl=30)
    waiter = asyncio.create_task(Locks(counting).acquire("w", timeout=20))
    await asyncio.sleep(2.0)  # a poller would have read many times by now
    before = counting.calls
    assert before <= 3, f"{before} store calls while blocked"
    started = time.monotonic()
    await locks.release("w", held.token)
    got = await asyncio.wait_for(waiter, 5)
    assert got.token > held.token and time.monotonic() - started < 2
    assert counting.calls - before <= 4


async def test_limits_have_their_own_codes(any_kv):
    locks = Locks(any_kv)
    for bad, expected in [
        ({"name": ""}, ErrorCode.COORD_NAME_INVALID),
        ({"name": "x" * 300}, ErrorCode.COORD_NAME_INVALID),
        ({"name": "a\nb"}, ErrorCode.COORD_NAME_INVALID),
        ({"name": "n", "ttl": 0}, ErrorCode.COORD_TTL_OUT_OF_RANGE),
        ({"name": "n", "ttl": 3601}, ErrorCode.COORD_TTL_OUT_OF_RANGE),
        ({"name": "n", "timeout": 301}, ErrorCode.COORD_WAIT_OUT_OF_RANGE),
        ({"name": "n", "timeout": -1}, ErrorCode.COORD_WAIT_OUT_OF_RANGE),
    ]:
        with pytest.raises(AspenError) as exc:
            await locks.acquire(**bad)
        assert code(exc) == expected, bad


async def test_counters_add_cas_and_refuse_to_leave_their_range(any_kv):
    unsigned, signed = Counters(any_kv), Counters(any_kv, signed=True)
    assert await unsigned.add("c", 5) == 5
    assert await unsigned.compare_and_set("c", 4, 9) == (False, 5)
    assert await unsigned.compare_and_set("c", 5, 9) == (True, 9)
    with pytest.raises(AspenError) as exc:
        await unsigned.add("c", -10)
    assert code(exc) == ErrorCode.COUNTER_UNDERFLOW
    assert await unsigned.get("c") == 9
    with pytest.raises(AspenError) as exc:
        await unsigned.set("c", 1 << 64)
    assert code(exc) == ErrorCode.COUNTER_OVERFLOW
    assert await signed.add("c", -3) == -3  # a separate counter of the same name
    with pytest.raises(AspenError) as exc:
        await signed.add("c", -(1 << 63))
    assert code(exc) == ErrorCode.COUNTER_OVERFLOW
    results = await asyncio.gather(*(unsigned.add("race", 1) for _ in range(20)))
    assert sorted(results) == list(range(1, 21))


async def test_sequences_hand_out_unique_numbers_in_batches(any_kv):
    seqs = Sequences(any_kv)
    a, b = LocalSequence(seqs, "s", batch=10), LocalSequence(seqs, "s", batch=10)
    got = [await a.next() for _ in range(15)] + [await b.next() for _ in range(15)]
    assert len(set(got)) == 30 and got[:15] == sorted(got[:15])
    assert await seqs.current("s") == 40
    with pytest.raises(AspenError) as exc:
        await seqs.reserve("s", 0)
    assert code(exc) == ErrorCode.SEQUENCE_BATCH_OUT_OF_RANGE


async def test_rate_limiter_says_when_to_retry(any_kv):
    rl = RateLimiters(any_kv)
    assert (await rl.try_acquire("r", capacity=2, rate=1)).allowed
    assert (await rl.try_acquire("r", capacity=2, rate=1)).allowed
    refused = await rl.try_acquire("r", capacity=2, rate=1)
    assert not refused.allowed and 0 < refused.retry_after_ms <= 1000
    await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
    assert (await rl.try_acquire("r", capacity=2, rate=1)).allowed
    with pytest.raises(AspenError) as exc:
        await rl.try_acquire("r", capacity=2, rate=1, tokens=3)
    assert code(exc) == ErrorCode.RATE_LIMIT_INVALID


async def test_semaphore_admits_capacity_and_frees_on_release_or_expiry(any_kv):
    sem = Semaphores(any_kv)
    a = await sem.acquire("s", 3, 2, holder="a", ttl=1)
    assert await sem.try_acquire("s", 3, 2) is None
    b = await sem.try_acquire("s", 3, 1, holder="b", ttl=30)
    assert b is not None and (await sem.status("s")).in_use == 3
    c = await sem.acquire("s", 3, 2, timeout=10)  # a's lease expires
    assert c.token > a.token
    await sem.release("s", b.permit_id)
    with pytest.raises(AspenError) as exc:
        await sem.release("s", b.permit_id)
    assert code(exc) == ErrorCode.SEMAPHORE_NOT_HELD
    with pytest.raises(AspenError) as exc:
        await sem.acquire("s", 5, 1)  # held with capacity 3
    assert code(exc) == ErrorCode.SEMAPHORE_CAPACITY_MISMATCH
    with pytest.raises(AspenError) as exc:
        await sem.acquire("s", 3, 4)
    assert code(exc) == ErrorCode.SEMAPHORE_PERMITS_OUT_OF_RANGE


async def test_election_replaces_a_leader_that_stops_renewing(any_kv):
    el = Elections(any_kv)
    first = await el.campaign("e", candidate="a", ttl=1)
    changes = el.observe("e")
    assert (await anext(changes)).candidate == "a"
    second = asyncio.create_task(el.campaign("e", candidate="b", ttl=10, timeout=10))
    leader = await asyncio.wait_for(second, 10)  # a's lease runs out
    assert leader.candidate == "b" and leader.token > first.token
    seen = await asyncio.wait_for(anext(changes), 5)
    while seen is None or seen.candidate != "b":
        seen = await asyncio.wait_for(anext(changes), 5)
    await changes.aclose()
    with pytest.raises(AspenError) as exc:
        await el.renew("e", first.lease_id)
    assert code(exc) == ErrorCode.ELECTION_NOT_LEADER
    await el.resign("e", leader.lease_id)
    assert await el.leader("e") is None


async def test_queue_visibility_ack_nack_and_the_dlq(any_kv):
    q = Queues(any_kv)
    await q.create("q", QueueConfig(visibility_timeout_ms=500, max_delivery_attempts=2, max_items=3))
    ids = [await q.enqueue("q", f"m{i}".encode()) for i in range(3)]
    with pytest.raises(AspenError) as exc:
        await q.enqueue("q", b"too many")
    assert code(exc) == ErrorCode.QUEUE_FULL
    first = await q.dequeue("q", "c1", max_items=3)
    assert [d.id for d in first] == ids and await q.dequeue("q", "c2") == []
    await q.ack("q", first[0].receipt)
    with pytest.raises(AspenError) as exc:
        await q.ack("q", first[0].receipt)
    assert code(exc) == ErrorCode.QUEUE_RECEIPT_INVALID
    assert not await q.nack("q", first[1].receipt)  # back at once
    await q.extend("q", first[2].receipt, 5000)
    again = await q.dequeue_wait("q", "c2", max_items=3, timeout=5)
    assert [d.id for d in again] == [ids[1]] and again[0].attempts == 2
    assert await q.nack("q", again[0].receipt, error="boom")  # out of attempts: to the DLQ
    dead = await q.dlq("q")
    assert [(d.id, d.dlq_reason, d.last_error) for d in dead] == [(ids[1], "max_delivery_attempts", "boom")]
    assert await q.redrive("q") == 1
    status = await q.status("q")
    assert (status.visible, status.in_flight, status.dlq, status.acked) == (1, 1, 0, 1)


async def test_queue_redelivers_after_the_visibility_timeout(any_kv):
    q = Queues(any_kv)
    await q.create("v", QueueConfig(visibility_timeout_ms=300))
    await q.enqueue("v", b"x")
    first = await q.dequeue("v")
    started = time.monotonic()
    again = await q.dequeue_wait("v", timeout=5)
    assert again and again[0].id == first[0].id and time.monotonic() - started >= 0.2
    with pytest.raises(AspenError) as exc:
        await q.ack("v", first[0].receipt)  # the old delivery's receipt
    assert code(exc) == ErrorCode.QUEUE_RECEIPT_INVALID


async def test_queue_dedup_and_message_groups(any_kv):
    q = Queues(any_kv)
    a = await q.enqueue("g", b"a1", group="a", dedup_id="one")
    assert await q.enqueue("g", b"again", group="a", dedup_id="one") == a
    await q.enqueue_batch("g", [(b"a2", "a", None, 0), (b"b1", "b", None, 0), (b"b2", "b", None, 0)])
    got = await q.dequeue("g", max_items=10)
    assert [d.payload for d in got] == [b"a1", b"b1"]  # one in flight per group, oldest first
    await q.ack("g", got[0].receipt)
    assert [d.payload for d in await q.dequeue("g", max_items=10)] == [b"a2"]


async def test_queue_limits(any_kv):
    q = Queues(any_kv)
    with pytest.raises(AspenError) as exc:
        await q.enqueue("l", b"x" * (MAX_PAYLOAD_BYTES + 1))
    assert code(exc) == ErrorCode.QUEUE_PAYLOAD_TOO_LARGE
    with pytest.raises(AspenError) as exc:
        await q.enqueue_batch("l", [(b"x", None, None, 0)] * 101)
    assert code(exc) == ErrorCode.QUEUE_BATCH_TOO_LARGE
    with pytest.raises(AspenError) as exc:
        await q.create("l2", QueueConfig(visibility_timeout_ms=0))
    assert code(exc) == ErrorCode.QUEUE_CONFIG_INVALID
    with pytest.raises(AspenError) as exc:
        await q.dequeue("missing")
    assert code(exc) == ErrorCode.QUEUE_NOT_FOUND
    await q.enqueue("l", b"x")
    with pytest.raises(AspenError) as exc:
        await q.dequeue("l", visibility_timeout_ms=13 * 3600 * 1000)
    assert code(exc) == ErrorCode.QUEUE_VISIBILITY_OUT_OF_RANGE
    with pytest.raises(AspenError) as exc:
        await q.ack("l", "not-a-receipt")
    assert code(exc) == ErrorCode.QUEUE_RECEIPT_INVALID


async def test_release_holding_frees_the_lock_without_a_lookup(any_kv):
    counting = CountingStore(any_kv)
    locks = Locks(counting)
    held = await locks.acquire("rh")
    waiter = asyncio.create_task(Locks(any_kv).acquire("rh", holder="next", timeout=10))
    while len((await any_kv.scan(Locks.prefix("rh"))).entries) < 2:  # the waiter has joined the line
        await asyncio.sleep(0.01)
    before = counting.calls
    await locks.release_holding(held)
    assert counting.calls - before == 1  # the revoke deletes the key with the lease
    nxt = await asyncio.wait_for(waiter, 10)  # the revoke's delete hands the lock on
    assert nxt.holder == "next" and nxt.token > held.token
    await locks.release_holding(nxt)
    assert await locks.status("rh") is None
    with pytest.raises(AspenError) as exc:
        await locks.release_holding(held)
    assert code(exc) == ErrorCode.LOCK_NOT_HELD


async def test_fencing_tokens_keep_increasing_across_a_restart(tmp_path):
    from aspen.storage.sqlite import SqliteKeyValueStore

    kv = await SqliteKeyValueStore.open(tmp_path / "restart.db")
    first = await Locks(kv).acquire("r")
    await kv.close()  # the holder's lease dies with the process: restart
    kv = await SqliteKeyValueStore.open(tmp_path / "restart.db", lease_check_interval=0.2)
    try:
        await Locks(kv).release("r", first.token)
        second = await Locks(kv).acquire("r")
        assert second.token > first.token
    finally:
        await kv.close()


async def test_barrier_releases_everyone_at_once_and_resets_after_leave(any_kv):
    from aspen.coordination import Barriers

    barriers = Barriers(any_kv)
    released: list[float] = []

    async def participant(i: int):
        state = await Barriers(any_kv).enter("b", 4, participant=f"p{i}", timeout=20)
        released.append(time.monotonic())
        return state

    early = [asyncio.create_task(participant(i)) for i in range(3)]
    await asyncio.sleep(0.5)
    assert released == [] and (await barriers.status("b")).participants == 3
    last_entered = time.monotonic()
    states = [await participant(3), *await asyncio.gather(*early)]
    assert max(released) - last_entered < 1.0, "the waiting participants were not released together"
    leaving = [asyncio.create_task(barriers.leave("b", s.participant_id, timeout=20)) for s in states[1:]]
    await asyncio.sleep(0.3)
    assert not any(t.done() for t in leaving)  # one participant is still inside
    await barriers.leave("b", states[0].participant_id)
    await asyncio.gather(*leaving)
    after = await barriers.status("b")
    assert after.participants == 0 and not after.is_ready
    with pytest.raises(AspenError) as exc:
        await barriers.leave("b", states[0].participant_id)
    assert code(exc) == ErrorCode.BARRIER_NOT_ENTERED
    with pytest.raises(AspenError) as exc:
        await barriers.enter("b", 0)
    assert code(exc) == ErrorCode.BARRIER_COUNT_OUT_OF_RANGE
    with pytest.raises(AspenError) as exc:
        await barriers.enter("b", 2, timeout=0.2)
    assert code(exc) == ErrorCode.COORD_WAIT_TIMEOUT
    assert (await barriers.status("b")).participants == 0  # a timed-out entry withdraws


async def test_rwlock_shares_reads_prefers_writers_and_downgrades(any_kv):
    from aspen.coordination import RWLocks

    rw = RWLocks(any_kv)
    r1 = await rw.acquire("rw", "read")
    r2 = await rw.acquire("rw", "read")
    assert await rw.acquire("rw", "write", wait=False) is None
    writer = asyncio.create_task(RWLocks(any_kv).acquire("rw", "write", timeout=20))
    await asyncio.sleep(0.3)
    assert (await rw.status("rw")).pending_writers == 1
    late_reader = asyncio.create_task(RWLocks(any_kv).acquire("rw", "read", timeout=20))
    await asyncio.sleep(0.3)
    assert not late_reader.done(), "a reader overtook a waiting writer"
    await rw.release("rw", r1.token, "read")
    await rw.release("rw", r2.token, "read")
    w = await asyncio.wait_for(writer, 10)
    assert w.mode == "write" and w.token > r2.token and not late_reader.done()
    with pytest.raises(AspenError) as exc:
        await rw.release("rw", w.token, "read")  # not a read holding
    assert code(exc) == ErrorCode.LOCK_NOT_HELD
    down = await rw.downgrade("rw", w.token)
    assert down.mode == "read" and down.token == w.token
    reader = await asyncio.wait_for(late_reader, 10)  # shares with the downgraded writer
    status = await rw.status("rw")
    assert status.mode == "read" and len(status.holders) == 2
    await rw.release("rw", reader.token, "read")
    await rw.release("rw", down.token, "read")
    assert (await rw.status("rw")).mode == "free"
