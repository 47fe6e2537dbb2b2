"""WorkerPool behaviour with real Python workers on the embedded backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.clock import now_ms
from aspen.jobs import keys
from aspen.jobs.model import Job, JobFailure, JobSpec, JobState, Priority, RetryPolicy
from aspen.jobs.pool import WorkerPool
from aspen.jobs.store import JobStore
from aspen.jobs.worker import JobContext


class Recorder:
    """Records every execution; fails the first ``fail_first`` attempts of each job."""

    def __init__(self, job_types=("rec",), *, fail_first: int = 0, delay: float = 0.0, concurrency: int = 4):
        self.job_types = frozenset(job_types)
        self.concurrency = concurrency
        self.fail_first = fail_first
        self.delay = delay
        self.starts: dict[str, list[int]] = {}
        self.active = 0
        self.max_active = 0
        self.cancelled: list[str] = []

    async def execute(self, job: Job, ctx: JobContext):
        self.starts.setdefault(job.id, []).append(now_ms())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            ctx.log(f"attempt {ctx.attempt}")
            await ctx.progress(50, "half way")
            await asyncio.sleep(self.delay)
            if ctx.attempt <= self.fail_first:
                raise JobFailure(f"planned failure {ctx.attempt}", code="E_PLANNED")
            return {"payload": job.payload, "attempt": ctx.attempt}
        except asyncio.CancelledError:
            self.cancelled.append(job.id)
            raise
        finally:
            self.active -= 1


def pool_for(store: JobStore, *workers, **kw) -> WorkerPool:
    kw.setdefault("poll_interval", 0.5)
    kw.setdefault("maintenance_interval", 0.3)
    kw.setdefault("lease_ttl", 2)
    return WorkerPool(store, list(workers), **kw)


async def test_runs_jobs_concurrently_and_records_result_log_progress(store, wait_for_state, blobs):
    rec = Recorder(delay=0.3, concurrency=5)
    async with pool_for(store, rec):
        jobs = [await store.submit(JobSpec(type="rec", payload={"n": i})) for i in range(5)]
        for job in jobs:
            done = await wait_for_state(job.id, JobState.SUCCEEDED)
            assert done.result["payload"] == job.payload and done.progress == 100.0
        assert rec.max_active == 5  # many jobs of one type at once
    log = await blobs.get_bytes(done.log_blob)
    assert log == b"attempt 1\n"


async def test_retries_wait_their_backoff(store, wait_for_state):
    rec = Recorder(fail_first=2)
    async with pool_for(store, rec):
        job = await store.submit(
            JobSpec(type="rec", retry=RetryPolicy(max_retries=3, backoff_ms=600, multiplier=2.0, jitter=0.0))
        )
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
    starts = rec.starts[job.id]
    assert done.attempts == 3 and len(starts) == 3
    assert starts[1] - starts[0] >= 600 and starts[2] - starts[1] >= 1200
    assert starts[1] - starts[0] < 600 + 1500  # and not much later: the pool wakes when it is due
    assert [e.split(":")[1].strip() for e in done.errors] == ["E_PLANNED", "E_PLANNED"]


async def test_exhausted_retries_dead_letter_then_retry(store, wait_for_state):
    rec = Recorder(fail_first=2)
    async with pool_for(store, rec):
        job = await store.submit(JobSpec(type="rec", retry=RetryPolicy(max_retries=1, backoff_ms=50)))
        dead = await wait_for_state(job.id, JobState.DEAD)
        assert dead.attempts == 2 and dead.error_code == "E_PLANNED"
        rec.fail_first = 0
        await store.retry(job.id)
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
        assert done.redrives == 1 and done.attempts == 1


async def test_delayed_job_fires_on_time(store, wait_for_state):
    rec = Recorder()
    async with pool_for(store, rec, poll_interval=5.0):  # the poll alone would be late
        await asyncio.sleep(0.2)
        run_at = now_ms() + 1500
        job = await store.submit(JobSpec(type="rec", run_at_ms=run_at))
        assert job.state == JobState.SCHEDULED
        await wait_for_state(job.id, JobState.SUCCEEDED)
    started = rec.starts[job.id][0]
    assert run_at <= started <= run_at + 700


async def test_new_job_wakes_idle_pool_promptly(store, wait_for_state):
    rec = Recorder()
    async with pool_for(store, rec, poll_interval=10.0):
        await asyncio.sleep(0.3)
        t0 = time.monotonic()
        job = await store.submit(JobSpec(type="rec"))
        await wait_for_state(job.id, JobState.SUCCEEDED)
        assert time.monotonic() - t0 < 3.0  # watch wake-up, not the 10 s poll


async def test_an_idle_pool_scans_the_ready_queues_once_per_poll(store, wait_for_state, monkeypatch):
    """With nothing ready, one read tells the claim loop so: not a scan per
    job type and priority rank every poll interval."""
    scans = []
    real = store.kv.scan

    async def counted(*a, **k):
        if (a[0] if a else k.get("start") or "").startswith(keys.READY):
            scans.append(1)
        return await real(*a, **k)

    monkeypatch.setattr(store.kv, "scan", counted)
    rec = Recorder(job_types=("a", "b", "c", "d"))
    async with pool_for(store, rec, poll_interval=0.1):
        await asyncio.sleep(0.3)
        scans.clear()
        await asyncio.sleep(1.0)  # ~10 polls with nothing ready
        idle = len(scans)
        job = await store.submit(JobSpec(type="c"))
        await wait_for_state(job.id, JobState.SUCCEEDED)  # work is still found
    assert 5 <= idle <= 30, f"{idle} scans of the ready queues in a second of idling over 4 types"


async def test_priorities_are_honoured(store, wait_for_state):
    rec = Recorder(concurrency=1)
    low = [await store.submit(JobSpec(type="rec", priority=Priority.LOW)) for _ in range(3)]
    crit = [await store.submit(JobSpec(type="rec", priority=Priority.CRITICAL)) for _ in range(3)]
    async with pool_for(store, rec):
        for job in low:
            await wait_for_state(job.id, JobState.SUCCEEDED)
    order = sorted(rec.starts, key=lambda i: rec.starts[i][0])
    assert set(order[:3]) == {j.id for j in crit}


async def test_cancel_running_job_stops_its_execution(store, wait_for_state):
    rec = Recorder(delay=30)
    async with pool_for(store, rec):
        job = await store.submit(JobSpec(type="rec"))
        await wait_for_state(job.id, JobState.RUNNING)
        await asyncio.sleep(0.2)
        await store.cancel(job.id)
        for _ in range(100):
            if rec.cancelled:
                break
            await asyncio.sleep(0.05)
        assert rec.cancelled == [job.id]
        assert (await store.get(job.id)).state == JobState.CANCELLED


async def test_timeout_fails_the_attempt(store, wait_for_state):
    rec = Recorder(delay=30)
    async with pool_for(store, rec):
        job = await store.submit(JobSpec(type="rec", timeout_ms=300, retry=RetryPolicy(max_retries=0)))
        dead = await wait_for_state(job.id, JobState.DEAD)
    assert dead.error_code == "TIMEOUT" and rec.cancelled == [job.id]


async def test_dead_pool_jobs_return_to_the_queue(store, wait_for_state):
    """A pool that stops heartbeating (here: its lease revoked, as when its
    process dies) loses its claims; another pool runs the job."""
    stuck = Recorder(delay=30)
    fine = Recorder(job_types=("rec",))
    first = pool_for(store, stuck)
    await first.start()
    job = await store.submit(JobSpec(type="rec", retry=RetryPolicy(max_retries=2, backoff_ms=0)))
    await wait_for_state(job.id, JobState.RUNNING)
    for task in first._loops:  # simulate a frozen process: no heartbeat, nothing
        task.cancel()
    await store.kv.lease_revoke(first._lease)
    async with pool_for(store, fine):
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
    assert done.attempts == 2 and "WORKER_LOST" in done.errors[0]
    await first.stop(grace=0)


async def test_workers_register_with_heartbeat(store, wait_for_state):
    rec = Recorder(job_types=("a", "b"), concurrency=3)
    pool = pool_for(store, rec, node_id="n1")
    async with pool:
        (info,) = await store.workers()
        assert info.worker_id == pool.worker_id and info.job_types == ["a", "b"]
        assert info.concurrency == {"a": 3, "b": 3} and info.node_id == "n1"
    assert await store.workers() == []  # gone with its lease


async def test_two_workers_for_one_type_is_an_error(store):
    with pytest.raises(Exception) as err:
        WorkerPool(store, [Recorder(), Recorder()])
    assert "two workers" in str(err.value)


def make_recorder(node):
    """An ``aspen.workers`` entry point for the test below."""
    return [Recorder(job_types=("from-entry-point",))]


def test_workers_come_from_the_entry_point_group(tmp_path, monkeypatch):
    from aspen.errors import AspenError, ErrorCode
    from aspen.jobs.builtin import entry_point_workers

    dist = tmp_path / "extra_workers-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-workers\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[aspen.workers]\nrec = tests.jobs.test_pool:make_recorder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (worker,) = [w for w in entry_point_workers(None) if "from-entry-point" in w.job_types]
    assert isinstance(worker, Recorder)
    (dist / "entry_points.txt").write_text("[aspen.workers]\nbroken = tests.jobs.no_such_module:factory\n")
    with pytest.raises(AspenError) as err:
        entry_point_workers(None)
    assert err.value.code == ErrorCode.PLUGIN_LOAD_FAILED


class BigResult:
    job_types = frozenset({"big"})

    async def execute(self, job, ctx):
        return {"rows": ["x" * 100] * 2000}  # ~200 KiB: more than an inline result


async def test_large_results_are_stored_as_blobs(store, wait_for_state, blobs):
    async with pool_for(store, BigResult()):
        job = await store.submit(JobSpec(type="big"))
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
    assert done.result is None and done.result_blob
    assert await blobs.size(done.result_blob) > 64 * 1024
    assert (await store.read_result(done))["rows"][1999] == "x" * 100


async def test_heartbeat_keeps_a_job_longer_than_the_lease(store, wait_for_state):
    """The claim hangs off the pool's lease: a job running ~3× the lease TTL
    survives because the heartbeat renews that lease, and the registration
    lists the job while it runs."""
    rec = Recorder(delay=6.0)
    pool = pool_for(store, rec, lease_ttl=2)
    async with pool:
        job = await store.submit(JobSpec(type="rec", retry=RetryPolicy(max_retries=2, backoff_ms=0)))
        await wait_for_state(job.id, JobState.RUNNING)
        seen_running = 0
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5.0:  # well past two lease TTLs
            (info,) = await store.workers()
            assert info.worker_id == pool.worker_id
            if job.id in info.running:
                seen_running += 1
            running = await store.get(job.id)
            assert running.state == JobState.RUNNING and running.attempts == 1
            await asyncio.sleep(0.5)
        assert seen_running >= 5  # the heartbeat keeps re-publishing it
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
        (info,) = await store.workers()
        for _ in range(40):  # the next heartbeat drops the finished job
            if job.id not in info.running:
                break
            await asyncio.sleep(0.1)
            (info,) = await store.workers()
        assert info.running == [] and info.processed == 1
    assert done.attempts == 1 and done.errors == [] and done.worker_id == pool.worker_id
    assert len(rec.starts[job.id]) == 1 and rec.cancelled == []  # never reaped and re-run
    assert done.finished_ms - done.started_ms >= 5900  # wall-clock ms vs the loop's monotonic sleep
