"""The vm executor, for real: QEMU microvms (TCG here) inside bubblewrap.

Each boot costs seconds under TCG on a shared 2-core machine, so the tests
share boots where one job can show several behaviours, and run at most two
VMs at once.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.vm import VmConfig, VmWorker
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.pool import WorkerPool
from aspen.jobs.store import JobStore
from aspen.jobs.vm import image as vm_image
from aspen.jobs.vm.cache import ImageCache
from aspen.jobs.worker import OUTPUT_BLOBS
from tests.jobs.test_shell import alive_with, logs

BOOT = 90.0  # seconds a job may take, boot included, on a busy machine
ENDED = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD)
FAILED = (JobState.FAILED, JobState.DEAD)
OUTPUT_LIMIT = 2 << 20  # the job output quota of the tests' pools


@pytest.fixture(scope="session")
def cache_dir():
    """One image build for the session (the kernel unpacks in seconds), not
    under pytest's own temp dir: the sandbox uid cannot enter that."""
    root = tempfile.mkdtemp(prefix="aspen-vmtest-cache-")
    os.chmod(root, 0o755)
    ImageCache(root).prebuilt()
    yield root
    shutil.rmtree(root, ignore_errors=True)


def vm_job(command, timeout_ms: int = int(BOOT * 1000), **payload) -> JobSpec:
    return JobSpec(
        type="vm", payload={"command": command, **payload}, retry=RetryPolicy(max_retries=0), timeout_ms=timeout_ms
    )


@pytest.fixture
async def vm_pool(store: JobStore, cache_dir: str):
    worker = VmWorker(VmConfig(cache_dir=cache_dir, max_concurrent=2))
    pool = WorkerPool(
        store, [worker], poll_interval=0.5, maintenance_interval=0.5, lease_ttl=5, output_limit=OUTPUT_LIMIT
    )
    await pool.start()
    yield worker
    await pool.stop(grace=5)


def vm_leftovers(job_id: str) -> tuple[list[int], list[str]]:
    """QEMU processes and temporary directories of a job."""
    return alive_with(f"aspen-vm-{job_id}-"), glob.glob(f"{tempfile.gettempdir()}/aspen-vm-{job_id}-*")


async def wait_gone(job_id: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(vm_leftovers(job_id)):
        assert time.monotonic() < deadline, f"left behind by {job_id}: {vm_leftovers(job_id)}"
        await asyncio.sleep(0.05)


async def test_job_returns_output_inputs_outputs_and_has_no_network(store, vm_pool, wait_for_state):
    hits = []
    server = await asyncio.start_server(lambda r, w: hits.append(1) or w.close(), "0.0.0.0", 0)
    port = server.sockets[0].getsockname()[1]
    data = (await store.blobs.add_bytes(b"input bytes\n")).hash
    script = (
        "echo to-stdout; echo to-stderr >&2; cat /in/src/data.txt > copy.txt; mkdir -p sub; echo two > sub/b;"
        " touch /in/src/data.txt 2>/dev/null && echo in-writable;"
        " ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1 && echo ping-ok;"
        f" nc -w 2 10.0.2.2 {port} </dev/null >/dev/null 2>&1 && echo tcp-ok;"
        " head -c 3000000 /dev/zero > big 2>/dev/null; ls /sys/class/net"
    )
    try:
        job = await store.submit(vm_job(script, files_in={"src/data.txt": data}))
        done = await wait_for_state(job.id, *ENDED, timeout=BOOT)
    finally:
        server.close()
    assert done.state == JobState.SUCCEEDED, (done.error, await logs(store, job.id))
    result = await store.read_result(done)
    assert result["exit_code"] == 0 and result["accel"] in ("tcg", "kvm")
    assert result["stdout"].split("\n")[0] == "to-stdout" and result["stderr"] == "to-stderr\n"
    assert "in-writable" not in result["stdout"]  # inputs are read-only
    assert "ping-ok" not in result["stdout"] and "tcp-ok" not in result["stdout"] and not hits
    assert result["stdout"].split() == ["to-stdout", "lo"]  # no network device at all
    assert sorted(result["outputs"]) == ["big", "copy.txt", "sub/b"]
    sizes = [await store.blobs.size(h) for h in result[OUTPUT_BLOBS].values()]
    assert 0 < await store.blobs.size(result["outputs"]["big"]) and sum(sizes) <= OUTPUT_LIMIT  # the quota holds
    assert await store.blobs.get_bytes(result["outputs"]["copy.txt"]) == b"input bytes\n"
    assert await store.blobs.get_bytes(result["stderr_blob"]) == b"to-stderr\n"
    manifest = json.loads(await store.blobs.get_bytes(result["image"]))
    assert set(manifest) == {"aspen_vm_image", "kernel", "initrd"}
    await store.collect_finished(done.finished_ms + 1)  # the outputs go with the job
    for h in (result["outputs"]["copy.txt"], result["stdout_blob"], result["stderr_blob"]):
        assert not await store.blobs.has(h)
    info = (await store.workers())[0]
    assert info.details["vm.accel"] == result["accel"] and info.details["vm.accel_reason"]
    await wait_gone(job.id)


async def test_nonzero_exit_is_reported_with_stderr_in_the_log(store, vm_pool, wait_for_state):
    job = await store.submit(vm_job("echo said-this; echo went-wrong >&2; exit 3"))
    done = await wait_for_state(job.id, *ENDED, timeout=BOOT)
    assert done.state in FAILED and done.error_code == "EXIT_3", done.error
    text = await logs(store, job.id)
    assert "--- stdout ---\nsaid-this" in text and "--- stderr ---\nwent-wrong" in text
    await wait_gone(job.id)


async def test_timeout_kills_the_vm_within_a_second(store, vm_pool, wait_for_state):
    job = await store.submit(vm_job("sleep 600", timeout_ms=15_000))
    done = await wait_for_state(job.id, *ENDED, timeout=BOOT)
    assert done.state in FAILED and done.error_code == ErrorCode.TIMEOUT
    assert 15_000 <= done.finished_ms - done.started_ms < 15_000 + 1_000
    await wait_gone(job.id, timeout=1.0)


async def test_cancel_mid_run_leaves_nothing(store, vm_pool, wait_for_state):
    job = await store.submit(vm_job("sleep 600"))
    deadline = time.monotonic() + BOOT
    while not vm_leftovers(job.id)[0]:
        assert not (await store.get(job.id)).state.terminal, await store.get(job.id)
        assert time.monotonic() < deadline, ("the VM never started", await store.get(job.id))
        await asyncio.sleep(0.1)
    await store.cancel(job.id)
    await wait_gone(job.id)
    assert (await store.get(job.id)).state == JobState.CANCELLED


async def test_bombs_end_their_own_job_two_at_once_and_a_user_image(store, vm_pool, wait_for_state, cache_dir):
    kernel, initrd = ImageCache(cache_dir).prebuilt()
    custom = Path(cache_dir) / "user-initrd"  # the same guest under another hash: a user's image
    custom.write_bytes(initrd.read_bytes() + b"\0" * 512)
    user_image = await vm_image.store(store.blobs, kernel, custom)
    hog = await store.submit(vm_job("dd if=/dev/zero of=/dev/null bs=200M count=5 && echo survived"))
    bomb = await store.submit(vm_job("b() { b | b & }; b; sleep 600", timeout_ms=20_000))
    ok = await store.submit(vm_job("echo still-fine", image=user_image))
    most = 0
    deadline = time.monotonic() + 3 * BOOT
    while (await store.get(ok.id)).state not in ENDED:
        most = max(most, len(glob.glob(f"{tempfile.gettempdir()}/aspen-vm-*")))
        assert most <= 2, "more VMs than [jobs.vm] max_concurrent"
        assert time.monotonic() < deadline
        await asyncio.sleep(0.1)
    assert most == 2, [(j.state, j.error) for j in [await store.get(i.id) for i in (hog, bomb, ok)]]
    hog_done = await wait_for_state(hog.id, *ENDED, timeout=BOOT)
    assert hog_done.state in FAILED and hog_done.error_code.startswith("EXIT_"), hog_done.error
    bomb_done = await wait_for_state(bomb.id, *ENDED, timeout=BOOT)
    assert bomb_done.state in FAILED
    ok_done = await store.get(ok.id)
    assert ok_done.state == JobState.SUCCEEDED, (ok_done.error, await logs(store, ok.id))
    result = await store.read_result(ok_done)
    assert result["stdout"] == "still-fine\n" and result["image"] == user_image
    for job in (hog, bomb, ok):
        await wait_gone(job.id)


def test_payload_and_caps_are_checked_at_submit(cache_dir):
    worker = VmWorker(VmConfig(cache_dir=cache_dir, max_memory_mib=512, max_cpus=2))
    with pytest.raises(AspenError) as err:
        worker.validate({"command": "true", "memory_mib": 513})
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED
    with pytest.raises(AspenError) as err:
        worker.validate({"command": "true", "cpus": 3})
    assert err.value.code == ErrorCode.QUOTA_EXCEEDED
    with pytest.raises(AspenError) as err:
        worker.validate({"command": "true", "network": True})
    assert err.value.code == ErrorCode.FORBIDDEN
    bad = [
        {}, {"command": "x", "argv": ["x"]}, {"command": ""}, {"argv": []}, {"command": "x", "surprise": 1},
        {"command": "x", "files_in": {"../etc/passwd": "h"}}, {"command": "x", "files_in": {".aspen/run": "h"}},
        {"command": "x", "files_in": {"/abs": "h"}}, {"command": "x", "memory_mib": 0},
        {"command": "x", "timeout_ms": 0}, {"command": "x", "env": {"A=B": "c"}}, [1, 2], "text",
        {"command": "x" * 70_000}, {"command": "x", "files_in": {"a": {"b": {"c": []}}}}, {"command": "x", "cpus": 1.5},
    ]  # fmt: skip
    for payload in bad:
        with pytest.raises(AspenError) as err:
            worker.validate(payload)
        assert err.value.code == ErrorCode.INVALID_JOB, payload
    for options in ({"memory_mib": 2048, "max_memory_mib": 1024}, {"max_concurrent": 0}, {"kvm": "maybe"}, {"x": 1}):
        with pytest.raises(AspenError) as err:
            VmConfig.from_options(options)
        assert err.value.code == ErrorCode.INVALID_ARGUMENT


async def test_missing_qemu_or_image_fails_clearly(store, cache_dir, wait_for_state, monkeypatch):
    worker = VmWorker(VmConfig(cache_dir=cache_dir, max_input_mib=1))
    async with WorkerPool(store, [worker], poll_interval=0.5, lease_ttl=5):
        missing = await store.submit(vm_job("true", image="0" * 64))
        done = await wait_for_state(missing.id, *ENDED)
        assert done.error_code == ErrorCode.INVALID_JOB, done.error
        big = (await store.blobs.add_bytes(b"x" * (1 << 20))).hash
        too_much = await store.submit(vm_job("true", files_in={"a": big, "b": big}))
        done = await wait_for_state(too_much.id, *ENDED)
        assert done.error_code == ErrorCode.QUOTA_EXCEEDED, done.error
        monkeypatch.setattr("aspen.jobs.vm.qemu.find_qemu", lambda: None)
        job = await store.submit(vm_job("true"))
        done = await wait_for_state(job.id, *ENDED)
        assert done.error_code == ErrorCode.EXECUTOR_UNAVAILABLE and "qemu-system-x86" in done.error


def test_image_build_is_reproducible(cache_dir):
    _, release = vm_image.find_kernel()
    modules = Path("/lib/modules") / release
    first, second = vm_image.initramfs(vm_image.BUSYBOX, modules), vm_image.initramfs(vm_image.BUSYBOX, modules)
    assert first == second and first.startswith(b"070701")
    assert (Path(cache_dir) / "build" / "initrd.cpio").read_bytes() == first


async def test_network_only_when_asked_and_allowed(store, cache_dir, wait_for_state):
    hits = []
    server = await asyncio.start_server(lambda r, w: hits.append(1) or w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    worker = VmWorker(VmConfig(cache_dir=cache_dir, network=True))
    try:
        async with WorkerPool(store, [worker], poll_interval=0.5, lease_ttl=5):
            script = f"ls /sys/class/net; nc -w 5 10.0.2.2 {port} </dev/null && echo tcp-ok"
            job = await store.submit(vm_job(script, network=True))
            done = await wait_for_state(job.id, *ENDED, timeout=BOOT)
    finally:
        server.close()
    assert done.state == JobState.SUCCEEDED, (done.error, await logs(store, job.id))
    assert "eth0" in (await store.read_result(done))["stdout"].split() and hits


def test_cli_runs_a_vm_job_and_workers_show_the_acceleration(tmp_path):
    from tests.jobs.test_cli import aspen
    from tests.node.node_process import NodeProcess

    with NodeProcess(tmp_path / "data") as node:
        over = aspen(node, "submit", "vm", "--payload", '{"command": "true", "memory_mib": 99999}', check=False)
        assert over.returncode == 1 and "QUOTA_EXCEEDED" in over.stderr
        job_id, state = aspen(node, "submit", "vm", "--payload", '{"argv": ["echo", "hi"]}', "--wait").stdout.split()
        assert state == "succeeded"
        result = json.loads(aspen(node, "status", job_id, "--json").stdout)["result"]
        assert result["stdout"] == "hi\n"
        assert f"vm.accel={result['accel']}" in aspen(node, "workers").stdout
