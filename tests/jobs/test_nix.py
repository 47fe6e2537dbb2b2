"""The nix executor: a real ``nix build`` where nix is installed; where it
is not, jobs fail at once with EXECUTOR_UNAVAILABLE (tested here for real)."""

from __future__ import annotations

import shutil

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.nix import NixWorker
from aspen.jobs.model import JobSpec, JobState, RetryPolicy
from aspen.jobs.pool import WorkerPool

HAVE_NIX = shutil.which("nix") is not None


@pytest.fixture
async def nix_pool(store):
    async with WorkerPool(store, [NixWorker()], poll_interval=0.5, lease_ttl=3):
        yield


@pytest.mark.skipif(HAVE_NIX, reason="nix is installed: this checks the behaviour without it")
async def test_without_nix_jobs_fail_executor_unavailable(nix_pool, store, wait_for_state):
    job = await store.submit(
        JobSpec(type="nix", payload={"installable": "nixpkgs#hello"}, retry=RetryPolicy(max_retries=3))
    )
    failed = await wait_for_state(job.id, JobState.FAILED)
    assert failed.error_code == ErrorCode.EXECUTOR_UNAVAILABLE and failed.attempts == 1  # not retried


@pytest.mark.skipif(not HAVE_NIX, reason="EXECUTOR_UNAVAILABLE: nix is not installed on this machine")
async def test_nix_build(nix_pool, store, wait_for_state, tmp_path):
    flake = tmp_path / "flake.nix"
    flake.write_text(
        '{ outputs = { self }: { packages.x86_64-linux.default = derivation {'
        ' name = "aspen-nix-test"; system = "x86_64-linux"; builder = "/bin/sh";'
        ' args = [ "-c" "echo built > $out" ]; }; }; }'
    )
    job = await store.submit(JobSpec(type="nix", payload={"installable": f"path:{tmp_path}"}, timeout_ms=600_000))
    done = await wait_for_state(job.id, JobState.SUCCEEDED, timeout=600)
    assert done.result["out_paths"] and done.result["out_paths"][0].startswith("/nix/store/")


@pytest.mark.parametrize("payload", [{}, {"installable": ""}, {"installable": "--impure"}, {"installable": "x", "args": "y"}])
def test_bad_payloads(payload):
    with pytest.raises(AspenError) as err:
        NixWorker().validate(payload)
    assert err.value.code == ErrorCode.INVALID_JOB
