"""The shell executor, for real: subprocesses, process groups, bubblewrap."""

from __future__ import annotations

import asyncio
import os
import random
import shutil

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.shell import ShellWorker
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.pool import WorkerPool
from aspen.jobs.sandbox import Sandbox
from aspen.jobs.store import JobStore

HAVE_BWRAP = shutil.which("bwrap") is not None
# Every behaviour runs both inside bubblewrap (the default) and, opted out explicitly, on the host.
MODES = ["required", "none"]


def alive_with(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def shell_job(command, **kw) -> JobSpec:
    payload = {"command": command}
    payload.update(kw.pop("payload", {}))
    kw.setdefault("retry", RetryPolicy(max_retries=0))
    return JobSpec(type="shell", payload=payload, **kw)


@pytest.fixture(params=MODES)
async def shell_pool(request, store: JobStore):
    worker = ShellWorker(sandbox=Sandbox(request.param))
    if request.param == "required":
        assert worker.sandbox.bwrap is not None, "the default mode needs bubblewrap: install it (scripts/setup.sh)"
    pool = WorkerPool(store, [worker], poll_interval=0.5, maintenance_interval=0.5, lease_ttl=3)
    await pool.start()
    yield worker
    await pool.stop(grace=5)


async def logs(store: JobStore, job_id: str) -> str:
    job = await store.get(job_id)
    return (await store.blobs.get_bytes(job.log_blob)).decode() if job.log_blob else ""


async def test_output_env_cwd_and_result(shell_pool, store, wait_for_state):
    job = await store.submit(
        shell_job("pwd; echo out $FOO; echo err >&2", payload={"env": {"FOO": "bar"}, "cwd": "sub"})
    )
    done = await wait_for_state(job.id, JobState.SUCCEEDED)
    assert done.result["exit_code"] == 0 and done.result["sandboxed"] == (shell_pool.sandbox.mode == "required")
    out = await logs(store, job.id)
    assert "out bar\n" in out and "err\n" in out
    assert out.splitlines()[0].endswith("/sub")


async def test_argv_command(shell_pool, store, wait_for_state):
    job = await store.submit(shell_job(["printf", "%s|", "a b", "c"]))
    await wait_for_state(job.id, JobState.SUCCEEDED)
    assert await logs(store, job.id) == "a b|c|"


async def test_exit_status_is_a_failure(shell_pool, store, wait_for_state):
    retryable = await store.submit(shell_job("exit 3", retry=RetryPolicy(max_retries=1, backoff_ms=10)))
    dead = await wait_for_state(retryable.id, JobState.DEAD)
    assert dead.error_code == "EXIT_3" and dead.attempts == 2
    missing = await store.submit(shell_job("no-such-command-here", retry=RetryPolicy(max_retries=3)))
    failed = await wait_for_state(missing.id, JobState.FAILED)
    assert failed.error_code == "EXIT_127" and failed.attempts == 1  # not retried: cannot help
    assert "not found" in await logs(store, missing.id)


async def test_timeout_kills_the_whole_process_tree(shell_pool, store, wait_for_state):
    marker = f"{random.randint(100000, 999999)}.5"
    # The child in the background would outlive a plain kill of the shell.
    job = await store.submit(shell_job(f"sleep {marker} & echo started; wait", timeout_ms=1500))
    await wait_for_state(job.id, JobState.RUNNING)
    for _ in range(100):
        if alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker), "the background child never started"
    dead = await wait_for_state(job.id, JobState.DEAD, timeout=20)
    assert dead.error_code == "TIMEOUT"
    for _ in range(60):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []
    assert "started" in await logs(store, job.id)


async def test_cancel_kills_a_running_job(shell_pool, store, wait_for_state):
    marker = f"{random.randint(100000, 999999)}.25"
    job = await store.submit(shell_job(f"sleep {marker} & sleep {marker}"))
    await wait_for_state(job.id, JobState.RUNNING)
    for _ in range(100):
        if len(alive_with(marker)) >= 2:
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker)
    await store.cancel(job.id)
    for _ in range(100):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []
    assert (await store.get(job.id)).state == JobState.CANCELLED


async def test_background_leftovers_die_with_a_finished_job(shell_pool, store, wait_for_state):
    marker = f"{random.randint(100000, 999999)}.75"
    job = await store.submit(shell_job(f"(sleep {marker} &) ; echo done"))
    await wait_for_state(job.id, JobState.SUCCEEDED)
    for _ in range(60):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []


@pytest.mark.skipif(not HAVE_BWRAP, reason="bubblewrap (bwrap) is not installed")
async def test_sandbox_has_no_network_and_a_read_only_system(store, wait_for_state):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
    async with server:
        host = WorkerPool(store, [ShellWorker(sandbox=Sandbox("none"))], poll_interval=0.5)
        async with host:
            job = await store.submit(shell_job(["python3", "-c", probe]))
            await wait_for_state(job.id, JobState.SUCCEEDED)  # the probe works on the host
        sandboxed = WorkerPool(store, [ShellWorker()], poll_interval=0.5)
        async with sandboxed:
            net = await store.submit(shell_job(["python3", "-c", probe]))
            await wait_for_state(net.id, JobState.FAILED, JobState.DEAD)
            assert "Connection refused" in await logs(store, net.id) or "unreachable" in await logs(store, net.id)
            ro = await store.submit(shell_job("touch /usr/aspen-probe"))
            await wait_for_state(ro.id, JobState.FAILED, JobState.DEAD)
            assert "Read-only file system" in await logs(store, ro.id)
            rw = await store.submit(shell_job("echo hi > f && cat f && ls /tmp | wc -l"))
            await wait_for_state(rw.id, JobState.SUCCEEDED)
            assert await logs(store, rw.id) == "hi\n0\n"
    assert not os.path.exists("/usr/aspen-probe")


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"command": ""},
        {"command": []},
        {"command": "ls", "cwd": "/etc"},
        {"command": "ls", "cwd": "../x"},
        {"command": "ls", "env": {"A=B": "c"}},
        {"command": "ls", "unknown": 1},
        {"command": 5},
    ],
)
def test_bad_payloads_are_rejected(payload):
    with pytest.raises(AspenError) as err:
        ShellWorker().validate(payload)
    assert err.value.code == ErrorCode.INVALID_JOB
