"""Job quotas: bounded output, retention of finished jobs, limits within node caps."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.builtin import pool_options
from aspen.jobs.executors.shell import ShellWorker
from aspen.jobs.handler import create
from aspen.jobs.limits import CAPS, LimitPolicy
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.output import marker
from aspen.jobs.pool import WorkerPool
from aspen.rpc.handler import Request, RequestContext
from tests.jobs.test_shell import logs

LIMIT = 64 * 1024


class Chatty:
    """Writes its log itself, past the limit (the pool must cut it)."""

    job_types = frozenset({"chatty"})

    async def execute(self, job, ctx):
        for _ in range(200):
            ctx.log("x" * 1023)
        return "spoke"


async def test_streamed_output_is_cut_at_the_limit_with_a_marker(store, wait_for_state):
    async with WorkerPool(store, [ShellWorker()], poll_interval=0.2, output_limit=LIMIT):
        job = await store.submit(JobSpec(type="shell", payload={"command": "head -c 20M /dev/zero | tr '\\0' a"}))
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
    dropped = (20 << 20) - LIMIT
    assert done.result["output_dropped"] == dropped
    out = await logs(store, job.id)
    assert out == "a" * LIMIT + marker(LIMIT, dropped).decode()
    assert await store.blobs.size(done.log_blob) < LIMIT + 200  # what is kept is bounded


async def test_a_log_written_directly_is_cut_before_it_is_kept(store, wait_for_state):
    async with WorkerPool(store, [Chatty()], poll_interval=0.2, output_limit=LIMIT):
        job = await store.submit(JobSpec(type="chatty"))
        done = await wait_for_state(job.id, JobState.SUCCEEDED)
    out = await logs(store, job.id)
    assert out == ("x" * 1023 + "\n") * 64 + marker(LIMIT, 200 * 1024 - LIMIT).decode()
    assert done.result == "spoke"


async def test_finished_jobs_are_collected_after_the_retention(store, wait_for_state):
    pool = WorkerPool(
        store, [ShellWorker()], poll_interval=0.2, maintenance_interval=0.1, retention_seconds=1.0, collect_interval=0.1
    )
    async with pool:
        ok = await store.submit(JobSpec(type="shell", payload={"command": "echo kept for a while"}))
        bad = await store.submit(
            JobSpec(type="shell", payload={"command": "echo failing; exit 3"}, retry=RetryPolicy(max_retries=0))
        )
        done = await wait_for_state(ok.id, JobState.SUCCEEDED)
        await wait_for_state(bad.id, JobState.DEAD)
        assert await store.blobs.has(done.log_blob)
        assert (await store.get(ok.id)).state == JobState.SUCCEEDED  # still there right after finishing
        deadline = time.monotonic() + 10
        while True:
            try:
                await store.get(ok.id)
                await store.get(bad.id)
            except AspenError as exc:
                assert exc.code == ErrorCode.JOB_NOT_FOUND
                counts = [await store.count(JobState.SUCCEEDED), await store.count(JobState.DEAD)]
                if counts == [0, 0] and not await store.blobs.has(done.log_blob):  # blobs go right after
                    break
            assert time.monotonic() < deadline, "finished jobs were not collected"
            await asyncio.sleep(0.05)


async def test_collection_keeps_recent_and_unfinished_jobs(store, wait_for_state):
    async with WorkerPool(store, [ShellWorker()], poll_interval=0.2):
        finished = await store.submit(JobSpec(type="shell", payload={"command": "true"}))
        await wait_for_state(finished.id, JobState.SUCCEEDED)
    waiting = await store.submit(JobSpec(type="shell", payload={"command": "true"}))  # no pool: stays pending
    cutoff = (await store.get(finished.id)).finished_ms  # finished exactly then: not before
    assert await store.collect_finished(cutoff) == []
    assert await store.collect_finished(cutoff + 1) == [finished.id]
    assert (await store.get(waiting.id)).state == JobState.PENDING


def test_limits_above_the_node_cap_are_refused_with_quota_exceeded():
    worker = ShellWorker(policy=LimitPolicy.from_options({"max_memory_mb": 2048}))
    worker.validate({"command": "true", "limits": {"memory_mb": 2048, "processes": 10}})
    with pytest.raises(AspenError) as err:
        worker.validate({"command": "true", "limits": {"memory_mb": 4096}})
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED
    assert err.value.details == {"quota": "limits.memory_mb", "limit": 2048, "used": 4096}
    for bad in ({"memory_mb": 0}, {"memory_mb": "lots"}, {"swap_mb": 1}):
        with pytest.raises(AspenError) as err:
            worker.validate({"command": "true", "limits": bad})
        assert err.value.code == ErrorCode.INVALID_JOB


@pytest.mark.parametrize(
    "options",
    [
        {"memory_mb": CAPS.memory_mb + 1},
        {"max_processes": -1},
        {"cpus": "two"},
        {"max_output_mb": 0},
        {"retention_days": "x"},
    ],
)
def test_bad_quota_config_is_refused(options):
    with pytest.raises(AspenError) as err:
        LimitPolicy.from_options(options)
        pool_options(options)
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


async def test_submit_over_a_cap_is_refused_before_anything_is_stored(kv, blobs, tmp_path):
    config = SimpleNamespace(sections={"jobs": {"workers": False, "cpu_seconds": 30, "max_cpu_seconds": 60}})
    handler = create(SimpleNamespace(kv=kv, blobs=blobs, node_id="n", data_dir=str(tmp_path), config=config))
    await handler.start()
    body = {"type": "shell", "payload": {"command": "true", "limits": {"cpu_seconds": 61}}}
    with pytest.raises(AspenError) as err:
        await handler.handle(Request("JobSubmit", body), RequestContext())
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED and err.value.details["limit"] == 60
    assert (await handler.store.stats())["total"] == 0
    await handler.stop()
