"""The hostile job corpus, for real: bubblewrap as root, real processes.

Each job tries what an attacker would; each test checks it was contained on
the host (not only that the job failed), that the node kept serving, and
that a normal job still runs afterwards.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import stat
import tempfile
import time

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.builtin import builtin_workers
from aspen.jobs.cgroup import Cgroups
from aspen.jobs.executors.shell import ShellWorker
from aspen.jobs.limits import DEFAULTS, JobLimits, LimitPolicy
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.pool import WorkerPool
from aspen.jobs.sandbox import Sandbox
from tests.jobs.test_shell import alive_with, logs

SANDBOX_UID = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="these attacks are tried as root, as nodes run")


def job(command, *, timeout_ms: int = 20_000, **payload) -> JobSpec:
    return JobSpec(
        type="shell",
        payload={"command": command, **payload},
        retry=RetryPolicy(max_retries=0),
        timeout_ms=timeout_ms,
    )


@pytest.fixture
async def pool(store):
    assert shutil.which("bwrap"), "bubblewrap must be installed (scripts/setup.sh installs it)"
    worker = ShellWorker(concurrency=2)
    async with WorkerPool(store, [worker], poll_interval=0.2, maintenance_interval=0.5, lease_ttl=3):
        yield worker


async def run(store, wait_for_state, spec: JobSpec, *states: JobState, timeout: float = 30) -> tuple[object, str]:
    submitted = await store.submit(spec)
    done = await wait_for_state(submitted.id, *(states or (JobState.SUCCEEDED,)), timeout=timeout)
    return done, await logs(store, submitted.id)


async def still_serving(store, wait_for_state) -> None:
    """The node's storage answers and a normal sandboxed job runs."""
    await store.kv.put("probe", b"1")
    assert (await store.kv.get("probe")).value == b"1"
    _, out = await run(store, wait_for_state, job("echo fine"))
    assert out == "fine\n"


def uid_processes(uid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as f:
                    for line in f:
                        if line.startswith("Uid:"):
                            if int(line.split()[1]) == uid:
                                pids.append(int(entry))
                            break
            except OSError:
                pass
    return pids


async def test_job_is_an_unprivileged_user_with_no_capabilities(pool, store, wait_for_state):
    script = (
        "id -u; id -g; id -G; grep CapEff /proc/self/status; "
        "mount -o remount,bind,rw /etc 2>&1; echo mount=$?; "
        "touch /etc/aspen-probe 2>&1; echo etc=$?; "
        "unshare -U true 2>&1; echo userns=$?"
    )
    _, out = await run(store, wait_for_state, job(script))
    lines = out.splitlines()
    assert lines[:3] == [str(SANDBOX_UID)] * 3  # uid, gid, and no supplementary group
    assert lines[3].split() == ["CapEff:", "0000000000000000"]
    assert "mount=0" not in out and "etc=0" not in out and "userns=0" not in out
    assert "Read-only file system" in out
    assert not os.path.exists("/etc/aspen-probe")


async def test_secrets_node_data_and_environment_stay_out(pool, store, wait_for_state, monkeypatch, tmp_path):
    monkeypatch.setenv("ASPEN_TOKEN", "node-secret-token")
    data = tmp_path / "node-data"
    data.mkdir()
    (data / "kv.sqlite3").write_bytes(b"trust store")
    script = f"cat /etc/shadow; ls {data}; echo x >> {data}/kv.sqlite3; echo ENV; env | cut -d= -f1; true"
    _, out = await run(store, wait_for_state, job(script, env={"MINE": "1"}))
    assert "/etc/shadow: Permission denied" in out
    assert f"{data}': No such file or directory" in out or f"{data}: No such file" in out
    assert (data / "kv.sqlite3").read_bytes() == b"trust store"
    names = set(out.split("ENV\n", 1)[1].split())
    assert "ASPEN_TOKEN" not in out and "node-secret-token" not in out
    assert {"PATH", "HOME", "LANG", "ASPEN_JOB_ID", "ASPEN_JOB_ATTEMPT", "MINE"} <= names
    assert names <= {"PATH", "HOME", "LANG", "ASPEN_JOB_ID", "ASPEN_JOB_ATTEMPT", "MINE", "PWD", "SHLVL", "_"}


async def test_no_connection_to_a_local_listener(pool, store, wait_for_state):
    accepted = []
    server = await asyncio.start_server(lambda r, w: (accepted.append(1), w.close()), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')"
    async with server:
        _, out = await run(store, wait_for_state, job(["python3", "-c", probe]), JobState.FAILED, JobState.DEAD)
        await asyncio.sleep(0)  # let a connection that did arrive be accepted
    assert "connected" not in out and ("unreachable" in out or "refused" in out)
    assert accepted == []


async def test_writes_outside_the_work_dir_fail(pool, store, wait_for_state):
    name = f"aspen-probe-{random.randint(0, 10**9)}"
    script = (
        f"for p in /{name} /usr/{name} /dev/{name} /proc/{name}; do touch $p 2>/dev/null && echo wrote $p; done; "
        f"touch /tmp/{name} && echo private-tmp; touch {name} && echo workdir; pwd"
    )
    _, out = await run(store, wait_for_state, job(script))
    assert "wrote" not in out
    assert out.splitlines() == ["private-tmp", "workdir", "/work"]
    assert not os.path.exists(f"/tmp/{name}") and not os.path.exists(f"/{name}")


async def test_a_setuid_binary_gains_nothing(store, wait_for_state):
    suid_dir = tempfile.mkdtemp(prefix="aspen-suid-")
    try:
        os.chmod(suid_dir, 0o755)
        binary = os.path.join(suid_dir, "id")
        shutil.copy("/usr/bin/id", binary)
        os.chmod(binary, 0o4755)  # setuid root
        assert os.stat(binary).st_mode & stat.S_ISUID and os.stat(binary).st_uid == 0
        worker = ShellWorker(sandbox=Sandbox(ro_binds=[suid_dir]))
        async with WorkerPool(store, [worker], poll_interval=0.2):
            _, out = await run(store, wait_for_state, job(f"{binary} -u; {binary} -ru; su -c id root 2>&1; true"))
        first, second = out.splitlines()[:2]
        assert (first, second) == (str(SANDBOX_UID), str(SANDBOX_UID))
        assert "uid=0" not in out
    finally:
        shutil.rmtree(suid_dir)


async def test_fork_bomb_is_bounded_and_the_node_serves(store, wait_for_state):
    for _ in range(200):  # RLIMIT_NPROC counts every process of the uid: let an earlier test's sandboxes go first
        if not uid_processes(SANDBOX_UID):
            break
        await asyncio.sleep(0.05)
    before = set(uid_processes(SANDBOX_UID))
    limit = 48
    worker = ShellWorker(concurrency=2, policy=LimitPolicy(defaults=JobLimits(processes=limit)))
    async with WorkerPool(store, [worker], poll_interval=0.2, lease_ttl=3):
        # Every process forks two more, then blocks (opening a FIFO no one writes), holding its slot.
        bomb = await store.submit(job("mkfifo p; f() { f & f & read x < p; }; f", timeout_ms=8000))
        await wait_for_state(bomb.id, JobState.RUNNING)
        peak = 0
        deadline = time.monotonic() + 6  # a loaded machine forks slowly: watch until near the limit, then 1 s more
        while time.monotonic() < deadline:
            peak = max(peak, len(set(uid_processes(SANDBOX_UID)) - before))
            if peak > limit - len(before) - 8:
                deadline = min(deadline, time.monotonic() + 1)
            await store.kv.put("during-bomb", b"ok")  # the node keeps serving
            await asyncio.sleep(0.05)
        # it really forked (up to the limit less what the uid already ran), and no further (+ bwrap's own two)
        assert limit - len(before) - 8 < peak <= limit + 2
        done = await wait_for_state(bomb.id, JobState.DEAD, timeout=20)
        assert done.error_code == "TIMEOUT"
        for _ in range(100):
            if not set(uid_processes(SANDBOX_UID)) - before:
                break
            await asyncio.sleep(0.05)
        assert not set(uid_processes(SANDBOX_UID)) - before  # nothing of the bomb survives
        await still_serving(store, wait_for_state)


@pytest.mark.parametrize(
    ("limits", "command", "expect"),
    [
        ({"memory_mb": 128}, ["python3", "-c", "b = bytearray(512 << 20)"], "MemoryError"),
        ({"open_files": 16}, ["python3", "-c", "f = [open('/dev/null') for _ in range(64)]"], "Too many open files"),
        ({"disk_mb": 16}, "head -c 64M /dev/zero > big; ls -l big; exit 1", "No space left on device"),
        ({"disk_mb": 16}, "for i in $(seq 40); do head -c 1M /dev/zero > f$i || exit 9; done", "No space left"),
        ({"disk_mb": 16}, "head -c 64M /dev/zero > /tmp/big; exit 1", "No space left on device"),
        ({"file_size_mb": 4, "disk_mb": 64}, "head -c 32M /dev/zero > big", ""),
    ],
    ids=["memory-hog", "fd-hog", "disk-filler", "many-files", "tmp-filler", "file-size"],
)
async def test_resource_hogs_hit_their_limit(pool, store, wait_for_state, limits, command, expect):
    started = time.monotonic()
    done, out = await run(store, wait_for_state, job(command, limits=limits), JobState.FAILED, JobState.DEAD)
    assert expect in out and done.error_code != "TIMEOUT"
    assert time.monotonic() - started < 15
    if "file_size_mb" in limits:
        assert done.error_code == "EXIT_153"  # 128 + SIGXFSZ: killed at the file size limit
    if limits.get("disk_mb") == 16 and "big" in command and "/tmp" not in command:
        (listing,) = [line for line in out.splitlines() if line.startswith("-rw")]
        assert int(listing.split()[4]) <= 16 << 20
    await still_serving(store, wait_for_state)


async def test_cpu_limit_stops_a_spinning_job(pool, store, wait_for_state):
    done, _ = await run(
        store, wait_for_state, job(["python3", "-c", "while True: pass"], limits={"cpu_seconds": 1}), JobState.DEAD
    )
    assert done.error_code == "EXIT_152"  # 128 + SIGXCPU, long before the 20 s timeout
    assert done.finished_ms - done.started_ms < 10_000


async def test_a_job_ignoring_sigterm_still_dies_at_its_timeout(pool, store, wait_for_state):
    marker = f"{random.randint(100000, 999999)}.5"
    spec = job(f"trap '' TERM; sleep {marker} & trap '' TERM; wait; wait", timeout_ms=1500)
    submitted = await store.submit(spec)
    for _ in range(100):
        if alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker)
    done = await wait_for_state(submitted.id, JobState.DEAD, timeout=15)
    assert done.error_code == "TIMEOUT" and done.finished_ms - done.started_ms < 6000
    for _ in range(100):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []
    await still_serving(store, wait_for_state)


async def test_without_bubblewrap_the_default_refuses_to_run(store, wait_for_state, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on this PATH
    worker = ShellWorker(sandbox=Sandbox())
    monkeypatch.undo()
    assert worker.sandbox.bwrap is None
    async with WorkerPool(store, [worker], poll_interval=0.2):
        spec = JobSpec(type="shell", payload={"command": "touch /tmp/ran"}, retry=RetryPolicy(max_retries=3))
        failed, _ = await run(store, wait_for_state, spec, JobState.FAILED)
    assert failed.error_code == ErrorCode.EXECUTOR_UNAVAILABLE and failed.attempts == 1
    assert "bubblewrap" in failed.error and 'shell_sandbox = "none"' in failed.error


def test_node_config_defaults_to_required_and_refuses_unknown_modes():
    (shell,) = [w for w in builtin_workers({}) if "shell" in w.job_types]
    assert shell.sandbox.mode == "required" and shell.sandbox.uid == SANDBOX_UID
    for old in ("auto", "off", "yes"):
        with pytest.raises(AspenError) as err:
            builtin_workers({"shell_sandbox": old})
        assert err.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(AspenError) as err:
        builtin_workers({"sandbox_uid": 0})
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


async def test_opting_out_warns_at_start_and_on_every_job(store, wait_for_state, caplog):
    caplog.set_level(logging.WARNING)
    worker = ShellWorker(sandbox=Sandbox("none"))
    assert any("sandbox disabled" in r.getMessage() for r in caplog.records)
    async with WorkerPool(store, [worker], poll_interval=0.2):
        for _ in range(2):
            done, _ = await run(store, wait_for_state, job("id -u"))
            assert done.result["sandboxed"] is False
    assert sum("UNSANDBOXED" in r.getMessage() for r in caplog.records) == 2


async def test_cgroup_limits_or_a_logged_reason(store, wait_for_state, caplog):
    """Where the node can make cgroups, the job's has the limits; where it
    cannot (this machine: memory, pids and cpu are bound to cgroup v1), the
    reason is logged and the rlimits above carry the limits alone."""
    caplog.set_level(logging.WARNING)
    cgroups = Cgroups.open(name=f"aspen-test-{os.getpid()}")
    if cgroups is None:
        (record,) = [r for r in caplog.records if "cgroups unavailable" in r.getMessage()]
        assert "rlimits" in record.getMessage()
        return
    try:
        worker = ShellWorker(cgroups=cgroups, policy=LimitPolicy())
        async with WorkerPool(store, [worker], poll_interval=0.2):
            submitted = await store.submit(job("sleep 2"))
            await wait_for_state(submitted.id, JobState.RUNNING)
            path = cgroups.parent / f"job-{submitted.id}-1"
            for _ in range(100):
                if path.exists() and (path / "cgroup.procs").read_text().strip():
                    break
                await asyncio.sleep(0.02)
            assert int((path / "memory.max").read_text()) == DEFAULTS.memory_mb << 20
            assert int((path / "pids.max").read_text()) == DEFAULTS.processes
            await wait_for_state(submitted.id, JobState.SUCCEEDED)
            assert not path.exists()
    finally:
        cgroups.close()
