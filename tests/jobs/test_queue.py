"""Queue semantics of JobStore on every KV backend: claiming, tokens,
leases, retries, dead letters, cancel, dependencies."""

from __future__ import annotations

import asyncio

import pytest

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.model import JobSpec, JobState, Priority, RetryPolicy
from aspen.jobs.store import JobStore


def spec(job_type: str = "t", **kw) -> JobSpec:
    return JobSpec(type=job_type, payload=kw.pop("payload", {}), **kw)


@pytest.fixture
async def q(any_kv) -> JobStore:
    return JobStore(any_kv)


async def lease(q: JobStore, ttl: int = 30) -> int:
    return (await q.kv.lease_grant(ttl)).id


async def test_concurrent_claimers_get_each_job_exactly_once(q: JobStore):
    ids = {(await q.submit(spec())).id for _ in range(30)}
    leases = [await lease(q) for _ in range(4)]

    async def claimer(n: int) -> list[str]:
        got: list[str] = []
        while True:
            jobs = await q.claim(f"w{n}", leases[n], {"t": 3})
            if not jobs:
                return got
            got += [j.id for j in jobs]

    results = await asyncio.gather(*(claimer(n) for n in range(4)))
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(ids)  # all claimed, none twice
    for job_id in ids:
        job = await q.get(job_id)
        assert job.state == JobState.RUNNING and job.attempts == 1 and job.token


async def test_priority_order_and_many_jobs_of_one_type(q: JobStore):
    low = await q.submit(spec(priority=Priority.LOW))
    normal = await q.submit(spec())
    critical = await q.submit(spec(priority=Priority.CRITICAL))
    high = await q.submit(spec(priority=Priority.HIGH))
    got = await q.claim("w", await lease(q), {"t": 2})
    assert [j.id for j in got] == [critical.id, high.id]
    got = await q.claim("w", await lease(q), {"t": 2})
    assert [j.id for j in got] == [normal.id, low.id]  # same type runs concurrently: no per-type limit


async def test_only_wanted_types_are_claimed(q: JobStore):
    a = await q.submit(spec("a"))
    await q.submit(spec("b"))
    got = await q.claim("w", await lease(q), {"a": 5})
    assert [j.id for j in got] == [a.id]


async def test_delayed_job_is_not_claimable_before_run_at(q: JobStore):
    job = await q.submit(spec(run_at_ms=now_ms() + 1500))
    assert job.state == JobState.SCHEDULED
    assert await q.claim("w", await lease(q), {"t": 1}) == []
    due = await q.next_due_ms(["t"])
    assert due == job.run_at_ms
    await asyncio.sleep((due - now_ms()) / 1000 + 0.05)
    got = await q.claim("w", await lease(q), {"t": 1})
    assert [j.id for j in got] == [job.id]


async def test_stale_token_is_rejected_and_completion_recorded_once(q: JobStore):
    job = await q.submit(spec())
    (claimed,) = await q.claim("w", await lease(q), {"t": 1})
    with pytest.raises(AspenError) as err:
        await q.complete(job.id, "1.forged", {"x": 1})
    assert err.value.code == ErrorCode.STALE_EXECUTION
    done = await q.complete(job.id, claimed.token, {"x": 1})
    assert done.state == JobState.SUCCEEDED and done.result == {"x": 1}
    with pytest.raises(AspenError) as err:
        await q.complete(job.id, claimed.token, {"x": 2})
    assert err.value.code == ErrorCode.STALE_EXECUTION
    assert (await q.get(job.id)).result == {"x": 1}
    assert await q.kv.get(keys.claim(job.id)) is None
    assert await q.kv.get(keys.running(job.id)) is None


async def test_expired_claim_returns_job_and_late_completion_is_stale(q: JobStore):
    job = await q.submit(spec(retry=RetryPolicy(max_retries=2, backoff_ms=0)))
    first_lease = await lease(q, ttl=1)
    (first,) = await q.claim("w1", first_lease, {"t": 1})
    for _ in range(100):  # the lease expires: its claim key goes away
        if await q.kv.get(keys.claim(job.id)) is None:
            break
        await asyncio.sleep(0.1)
    assert await q.reap() == [job.id]
    requeued = await q.get(job.id)
    assert requeued.state == JobState.RETRYING and requeued.error_code == "WORKER_LOST"
    (second,) = await q.claim("w2", await lease(q), {"t": 1})
    assert second.attempts == 2 and second.token != first.token
    with pytest.raises(AspenError) as err:
        await q.complete(job.id, first.token, "late")
    assert err.value.code == ErrorCode.STALE_EXECUTION
    assert (await q.complete(job.id, second.token, "ok")).result == "ok"


async def test_failures_back_off_then_dead_letter_then_retry(q: JobStore):
    policy = RetryPolicy(max_retries=2, backoff_ms=400, multiplier=2.0, jitter=0.0)
    job = await q.submit(spec(retry=policy))
    lid = await lease(q)
    waits = []
    for attempt in (1, 2):
        (c,) = await q.claim("w", lid, {"t": 1})
        failed = await q.fail(job.id, c.token, "boom")
        assert failed.state == JobState.RETRYING
        waits.append(failed.run_at_ms - failed.updated_ms)
        assert await q.claim("w", lid, {"t": 1}) == []  # the backoff holds it back
        await asyncio.sleep((failed.run_at_ms - now_ms()) / 1000 + 0.05)
    assert waits[0] >= 390 and waits[1] >= 790  # 400 ms, then 800 ms
    (c,) = await q.claim("w", lid, {"t": 1})
    dead = await q.fail(job.id, c.token, "boom again", code="E_BOOM")
    assert dead.state == JobState.DEAD and dead.attempts == 3 and len(dead.errors) == 3
    dead_view, _ = await q.list(state=JobState.DEAD)
    assert [j.id for j in dead_view] == [job.id]
    again = await q.retry(job.id)
    assert again.state == JobState.PENDING and again.attempts == 0 and again.redrives == 1
    assert (await q.list(state=JobState.DEAD))[0] == []
    (c,) = await q.claim("w", lid, {"t": 1})
    assert (await q.complete(job.id, c.token)).state == JobState.SUCCEEDED


async def test_jitter_spreads_backoff():
    policy = RetryPolicy(backoff_ms=1000, jitter=0.5)
    delays = {policy.delay_ms(1) for _ in range(50)}
    assert len(delays) > 10 and all(500 <= d <= 1000 for d in delays)
    assert RetryPolicy(backoff_ms=1000, max_backoff_ms=3000, jitter=0).delay_ms(10) == 3000


async def test_non_retryable_failure_fails_at_once(q: JobStore):
    job = await q.submit(spec())
    (c,) = await q.claim("w", await lease(q), {"t": 1})
    done = await q.fail(job.id, c.token, "bad input", code="E_INPUT", retryable=False)
    assert done.state == JobState.FAILED and done.error_code == "E_INPUT"


async def test_cancel_pending_and_running_jobs(q: JobStore):
    pending = await q.submit(spec())
    running = await q.submit(spec())
    lid = await lease(q)
    (c,) = await q.claim("w", lid, {"t": 1})
    assert c.id == pending.id
    assert (await q.cancel(running.id)).state == JobState.CANCELLED
    assert await q.claim("w", lid, {"t": 1}) == []  # no longer in the ready index
    assert (await q.cancel(c.id)).state == JobState.CANCELLED
    assert await q.kv.get(keys.claim(c.id)) is None  # the signal its worker watches
    with pytest.raises(AspenError) as err:
        await q.complete(c.id, c.token)
    assert err.value.code == ErrorCode.STALE_EXECUTION
    with pytest.raises(AspenError) as err:
        await q.cancel(c.id)
    assert err.value.code == ErrorCode.INVALID_STATE
    with pytest.raises(AspenError) as err:
        await q.retry((await q.submit(spec())).id)
    assert err.value.code == ErrorCode.INVALID_STATE


async def run_all(q: JobStore, lid: int, outcome=lambda job: "ok") -> list[str]:
    """Claim and finish whatever is due; returns the ids in run order."""
    order = []
    while jobs := await q.claim("w", lid, {"t": 10}):
        for job in jobs:
            order.append(job.id)
            result = outcome(job)
            if result == "fail":
                await q.fail(job.id, job.token, "failed", retryable=False)
            else:
                await q.complete(job.id, job.token, result)
    return order


async def test_diamond_dependencies_run_in_order(q: JobStore):
    a = await q.submit(spec())
    b = await q.submit(spec(depends_on=[a.id]))
    c = await q.submit(spec(depends_on=[a.id]))
    d = await q.submit(spec(depends_on=[b.id, c.id]))
    assert (await q.get(d.id)).blocked_by == [b.id, c.id]
    order = await run_all(q, await lease(q))
    assert order[0] == a.id and set(order[1:3]) == {b.id, c.id} and order[3:] == [d.id]
    for job in (a, b, c, d):
        assert (await q.get(job.id)).state == JobState.SUCCEEDED


async def test_dependency_state_is_persisted_not_in_memory(any_kv):
    first = JobStore(any_kv)
    a = await first.submit(spec())
    d = await first.submit(spec(depends_on=[a.id]))
    other = JobStore(any_kv)  # e.g. another process: sees the graph from KV alone
    lid = await lease(other)
    (c,) = await other.claim("w", lid, {"t": 5})
    assert c.id == a.id
    await other.complete(a.id, c.token)
    (c,) = await other.claim("w", lid, {"t": 5})
    assert c.id == d.id


async def test_failure_propagates_through_the_graph(q: JobStore):
    a = await q.submit(spec())
    b = await q.submit(spec(depends_on=[a.id]))
    c = await q.submit(spec())
    d = await q.submit(spec(depends_on=[b.id, c.id]))
    lid = await lease(q)
    await run_all(q, lid, lambda job: "fail" if job.id == a.id else "ok")
    assert (await q.get(a.id)).state == JobState.FAILED
    for job_id in (b.id, d.id):
        failed = await q.get(job_id)
        assert failed.state == JobState.FAILED and failed.error_code == "DEPENDENCY_FAILED"
    assert "is failed" in (await q.get(b.id)).error
    assert (await q.get(c.id)).state == JobState.SUCCEEDED
    late = await q.submit(spec(depends_on=[a.id]))  # depends on an already failed job
    assert late.state == JobState.FAILED and late.error_code == "DEPENDENCY_FAILED"


async def test_sweep_repairs_an_interrupted_release(q: JobStore):
    a = await q.submit(spec())
    b = await q.submit(spec(depends_on=[a.id]))
    (c,) = await q.claim("w", await lease(q), {"t": 5})
    # Simulate a crash after A's completion but before its dependents were
    # released: finish A with the dependents list hidden from _finish.
    saved = await q.kv.get(keys.dependents(a.id))
    await q.kv.delete(keys.dependents(a.id))
    await q.complete(a.id, c.token)
    await q.kv.put(keys.dependents(a.id), saved.value)
    assert (await q.get(b.id)).blocked_by == [a.id]
    await q.sweep_blocked()
    assert (await q.get(b.id)).blocked_by == []
    (c,) = await q.claim("w", await lease(q), {"t": 5})
    assert c.id == b.id


async def test_missing_dependency_and_bad_ids_are_rejected(q: JobStore):
    with pytest.raises(AspenError) as err:
        await q.submit(spec(depends_on=["0" * 24]))
    assert err.value.code == ErrorCode.JOB_NOT_FOUND
    with pytest.raises(AspenError) as err:
        await q.get("../etc")
    assert err.value.code == ErrorCode.INVALID_JOB
    with pytest.raises(AspenError) as err:
        await q.get("f" * 24)
    assert err.value.code == ErrorCode.JOB_NOT_FOUND


async def test_stats_and_listing(q: JobStore):
    jobs = [await q.submit(spec("a" if i % 2 else "b")) for i in range(6)]
    await q.cancel(jobs[0].id)
    stats = await q.stats()
    assert stats["states"]["pending"] == 5 and stats["states"]["cancelled"] == 1 and stats["total"] == 6
    page, token = await q.list(limit=4)
    assert [j.id for j in page] == [j.id for j in jobs[:4]] and token
    rest, token = await q.list(limit=4, continuation=token)
    assert [j.id for j in rest] == [j.id for j in jobs[4:]] and token is None
    only_a, _ = await q.list(state=JobState.PENDING, job_type="a")
    assert {j.id for j in only_a} == {j.id for j in jobs[1::2]}


async def test_pools_share_the_queue_and_recover_a_dead_one(any_kv):
    """Two pools (as on two nodes) on one store, on every backend; one dies
    holding a job and the survivor finishes it."""
    from aspen.jobs.pool import WorkerPool
    from tests.jobs.test_pool import Recorder

    q = JobStore(any_kv)
    stuck, live = Recorder(delay=60, concurrency=1), Recorder(delay=0.05, concurrency=4)
    doomed = WorkerPool(q, [stuck], lease_ttl=2, poll_interval=0.3, maintenance_interval=0.3)
    await doomed.start()
    first = await q.submit(spec("rec", retry=RetryPolicy(max_retries=2, backoff_ms=0)))
    for _ in range(200):
        if stuck.starts:
            break
        await asyncio.sleep(0.05)
    assert first.id in stuck.starts
    for task in doomed._loops:  # the process freezes: no more heartbeats
        task.cancel()
    survivor = WorkerPool(q, [live], lease_ttl=2, poll_interval=0.3, maintenance_interval=0.3)
    async with survivor:
        rest = [await q.submit(spec("rec")) for _ in range(20)]
        for job in [first, *rest]:
            for _ in range(400):
                if (await q.get(job.id)).state == JobState.SUCCEEDED:
                    break
                await asyncio.sleep(0.05)
            assert (await q.get(job.id)).state == JobState.SUCCEEDED
    assert (await q.get(first.id)).attempts == 2
    await doomed.stop(grace=0)
