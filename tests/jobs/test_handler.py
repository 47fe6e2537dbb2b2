"""The job RPCs through the real handler, on real stores and a real pool."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.handler import create
from aspen.jobs.pool import WorkerPool
from aspen.rpc.handler import Request, RequestContext
from tests.jobs.test_pool import Recorder


@pytest.fixture
async def handler(kv, blobs, tmp_path):
    config = SimpleNamespace(sections={"jobs": {"lease_ttl": 3}})
    node = SimpleNamespace(kv=kv, blobs=blobs, node_id="node-1", data_dir=str(tmp_path), config=config)
    h = create(node)
    await h.start()
    h.pool.poll_interval = 0.5
    yield h
    await h.stop()


async def call(handler, type_: str, body) -> dict:
    response = await handler.handle(Request(type_, body), RequestContext())
    assert response.type == f"{type_}Result"
    return response.body


async def wait_state(handler, job_id: str, *states: str, timeout: float = 20.0) -> dict:
    for _ in range(int(timeout / 0.05)):
        job = (await call(handler, "JobStatus", {"id": job_id}))["job"]
        if job["state"] in states:
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"type": "no-such-type"}, ErrorCode.UNKNOWN_JOB_TYPE),
        ({"type": "shell", "payload": {"command": ""}}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"cmd": "ls"}}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "priority": "urgent"}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "timeout_ms": 0}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "retry": {"max_retries": -1}}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "depends_on": ["nope"]}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "depends_on": ["0" * 24]}, ErrorCode.JOB_NOT_FOUND),
        ({"type": "shell", "payload": "x" * 300_000}, ErrorCode.INVALID_JOB),
        ({"type": "bad type!"}, ErrorCode.INVALID_JOB),
        ({"payload": {}}, ErrorCode.INVALID_JOB),
        ({"type": "shell", "payload": {"command": "ls"}, "extra": 1}, ErrorCode.INVALID_JOB),
        ("not an object", ErrorCode.INVALID_JOB),
    ],
)
async def test_bad_submissions_are_rejected_with_codes(handler, body, code):
    with pytest.raises(AspenError) as err:
        await call(handler, "JobSubmit", body)
    assert err.value.code == code
    assert (await call(handler, "JobStats", {}))["total"] == 0  # nothing was stored


async def test_submit_status_logs_list_stats_workers(handler):
    job = (await call(handler, "JobSubmit", {"type": "shell", "payload": {"command": "echo hello"}}))["job"]
    done = await wait_state(handler, job["id"], "succeeded")
    assert done["attempts"] == 1
    status = await call(handler, "JobStatus", {"id": job["id"]})
    assert status["result"]["exit_code"] == 0
    logs = await call(handler, "JobLogs", {"id": job["id"]})
    assert logs["data"] == "hello\n" and logs["is_finished"] and logs["next_offset"] == 6
    listed = await call(handler, "JobList", {"state": "succeeded"})
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]
    stats = await call(handler, "JobStats", {})
    assert stats["states"]["succeeded"] == 1 and stats["workers"] == 1
    (worker,) = (await call(handler, "JobWorkers", {}))["workers"]
    assert {"shell", "nix"} <= set(worker["job_types"]) and worker["node_id"] == "node-1"


async def test_logs_follow_a_running_job(handler):
    script = "for i in 1 2 3 4; do echo line $i; sleep 0.6; done"
    job = (await call(handler, "JobSubmit", {"type": "shell", "payload": {"command": script}}))["job"]
    seen, offset, partial = "", 0, False
    for _ in range(400):
        chunk = await call(handler, "JobLogs", {"id": job["id"], "offset": offset})
        seen += chunk["data"]
        offset = chunk["next_offset"]
        if chunk["state"] == "running" and seen:
            partial = True
        if chunk["is_finished"]:
            seen += (await call(handler, "JobLogs", {"id": job["id"], "offset": offset}))["data"]
            break
        await asyncio.sleep(0.05)
    assert partial  # output arrived while the job was still running
    assert seen == "".join(f"line {i}\n" for i in (1, 2, 3, 4))


async def test_cancel_and_retry_through_rpc(handler):
    job = (await call(handler, "JobSubmit", {"type": "shell", "payload": {"command": "sleep 30"}}))["job"]
    await wait_state(handler, job["id"], "running")
    assert (await call(handler, "JobCancel", {"id": job["id"]}))["job"]["state"] == "cancelled"
    with pytest.raises(AspenError) as err:
        await call(handler, "JobCancel", {"id": job["id"]})
    assert err.value.code == ErrorCode.INVALID_STATE
    again = (await call(handler, "JobRetry", {"id": job["id"]}))["job"]
    assert again["state"] == "pending" and again["redrives"] == 1
    await wait_state(handler, job["id"], "running")
    await call(handler, "JobCancel", {"id": job["id"]})
    with pytest.raises(AspenError) as err:
        await call(handler, "JobStatus", {"id": "0" * 24})
    assert err.value.code == ErrorCode.JOB_NOT_FOUND
    with pytest.raises(AspenError) as err:
        await call(handler, "JobList", {"state": "bogus"})
    assert err.value.code == ErrorCode.VALIDATION_ERROR


async def test_types_of_remote_workers_are_accepted(handler, store):
    other = WorkerPool(store, [Recorder(job_types=("remote-type",))], poll_interval=0.5)
    async with other:  # e.g. a pool in another process, sharing the KV store
        handler._remote_types = (0.0, frozenset())
        job = (await call(handler, "JobSubmit", {"type": "remote-type", "payload": {"a": 1}}))["job"]
        await wait_state(handler, job["id"], "succeeded")
