"""The wasm executor with a real module compiled from Zig source."""

from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.wasm import WasmWorker, exported_functions
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.pool import WorkerPool
from aspen.plugins.build import REPO, compile_command
from aspen.plugins.host import PluginHost
from aspen.plugins.rules import parse_manifest

SOURCE = REPO / "tests" / "jobs" / "wasm" / "job.zig"


@pytest.fixture(scope="module")
def job_wasm(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("wasm") / "job.wasm"
    cmd = compile_command(SOURCE, out, REPO / "sdk" / "zig", REPO / "build" / "zig-cache")
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


@pytest.fixture
async def wasm_pool(store):
    worker = WasmWorker(concurrency=2)
    pool = WorkerPool(store, [worker], poll_interval=0.5, lease_ttl=3)
    async with pool:
        yield worker


async def submit(store, blobs, wasm: bytes, input_, **kw):
    module = (await blobs.add_bytes(wasm)).hash
    kw.setdefault("retry", RetryPolicy(max_retries=0))
    payload = {"module": module, "input": input_}
    payload.update(kw.pop("payload_extra", {}))
    return await store.submit(JobSpec(type="wasm", payload=payload, **kw))


async def test_runs_execute_job(wasm_pool, store, blobs, job_wasm, wait_for_state):
    job = await submit(store, blobs, job_wasm, {"op": "sum", "a": 40, "b": 2})
    done = await wait_for_state(job.id, JobState.SUCCEEDED)
    assert done.result == {"sum": 42, "attempt": 1}
    log = (await blobs.get_bytes(done.log_blob)).decode()
    assert "summed in the guest" in log and "execute_job" in log


async def test_guest_errors_and_faults(wasm_pool, store, blobs, job_wasm, wait_for_state):
    failed = await wait_for_state((await submit(store, blobs, job_wasm, {"op": "fail"})).id, JobState.FAILED)
    assert failed.error_code == "E_GUEST" and failed.error == "asked to fail"
    denied = await wait_for_state((await submit(store, blobs, job_wasm, {"op": "kv"})).id, JobState.FAILED)
    assert denied.error_code == ErrorCode.PERMISSION_DENIED  # no permissions for a blob module
    bad = await wait_for_state((await submit(store, blobs, job_wasm, {"op": "garbage"})).id, JobState.FAILED)
    assert bad.error_code == ErrorCode.PLUGIN_BAD_OUTPUT
    trap = await wait_for_state((await submit(store, blobs, job_wasm, {"op": "trap"})).id, JobState.DEAD)
    assert trap.error_code == ErrorCode.PLUGIN_TRAP  # retryable, and its one attempt is spent


async def test_guest_time_limit(wasm_pool, store, blobs, job_wasm, wait_for_state):
    job = await submit(store, blobs, job_wasm, {"op": "loop"}, payload_extra={"timeout_ms": 300})
    dead = await wait_for_state(job.id, JobState.DEAD)
    assert dead.error_code == ErrorCode.PLUGIN_TIMEOUT
    after = await submit(store, blobs, job_wasm, {"op": "sum", "a": 1, "b": 1})
    assert (await wait_for_state(after.id, JobState.SUCCEEDED)).result["sum"] == 2


async def test_missing_or_invalid_modules(wasm_pool, store, blobs, job_wasm, wait_for_state):
    missing = await store.submit(JobSpec(type="wasm", payload={"module": "ab" * 32, "input": {}}))
    assert (await wait_for_state(missing.id, JobState.FAILED)).error_code == ErrorCode.INVALID_JOB
    not_wasm = await submit(store, blobs, b"hello, not wasm", {})
    assert (await wait_for_state(not_wasm.id, JobState.FAILED)).error_code == ErrorCode.INVALID_JOB


async def test_installed_plugin_runs_with_its_manifest_permissions(store, kv, blobs, job_wasm, wait_for_state):
    manifest = {
        "name": "jobplug",
        "version": "0.1.0",
        "handles": ["JobPlugPing"],
        "priority": 960,
        "kv_prefixes": ["jobplug:"],
        "permissions": {"kv_write": True},
    }
    host = PluginHost(kv=kv, blobs=blobs)
    await host.load(parse_manifest(json.dumps(manifest)), job_wasm)
    try:
        node = SimpleNamespace(plugins=host)
        async with WorkerPool(store, [WasmWorker(node)], poll_interval=0.5, lease_ttl=3):
            spec = lambda i: JobSpec(
                type="wasm", payload={"plugin": "jobplug", "input": i}, retry=RetryPolicy(max_retries=0)
            )
            wrote = await store.submit(spec({"op": "kv", "key": "jobplug:out"}))
            assert (await wait_for_state(wrote.id, JobState.SUCCEEDED)).result == "wrote"
            assert (await kv.get("jobplug:out")).value == b"value"
            outside = await store.submit(spec({"op": "kv", "key": "__jobs:job:forged"}))
            denied = await wait_for_state(outside.id, JobState.FAILED)
            assert denied.error_code == ErrorCode.KV_PREFIX_DENIED  # the namespace still holds
            missing = await store.submit(
                JobSpec(type="wasm", payload={"plugin": "nope"}, retry=RetryPolicy(max_retries=0))
            )
            assert (await wait_for_state(missing.id, JobState.DEAD)).error_code == ErrorCode.PLUGIN_NOT_FOUND
    finally:
        await host.close()


def test_export_section_is_read(job_wasm):
    assert "execute_job" in exported_functions(job_wasm)
    with pytest.raises(AspenError) as err:
        exported_functions(b"\0asm\x01\0\0\0\x07\xff")
    assert err.value.code == ErrorCode.INVALID_JOB


@pytest.mark.parametrize(
    "payload",
    [{}, {"module": "x"}, {"module": "ab" * 32, "plugin": "p"}, {"plugin": "p", "timeout_ms": 0}, "str"],
)
def test_bad_payloads(payload):
    with pytest.raises(AspenError) as err:
        WasmWorker().validate(payload)
    assert err.value.code == ErrorCode.INVALID_JOB
