"""The nix executor: a real ``nix build`` where nix is installed; where it
is not, jobs fail at once with EXECUTOR_UNAVAILABLE (tested here for real)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

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
        "{ outputs = { self }: { packages.x86_64-linux.default = derivation {"
        ' name = "aspen-nix-test"; system = "x86_64-linux"; builder = "/bin/sh";'
        ' args = [ "-c" "echo built > $out" ]; }; }; }'
    )
    job = await store.submit(JobSpec(type="nix", payload={"installable": f"path:{tmp_path}"}, timeout_ms=600_000))
    done = await wait_for_state(job.id, JobState.SUCCEEDED, timeout=600)
    assert done.result["out_paths"] and done.result["out_paths"][0].startswith("/nix/store/")


@pytest.mark.parametrize(
    "payload", [{}, {"installable": ""}, {"installable": "--impure"}, {"installable": "x", "args": "y"}]
)
def test_bad_payloads(payload):
    with pytest.raises(AspenError) as err:
        NixWorker().validate(payload)
    assert err.value.code == ErrorCode.INVALID_JOB


@pytest.mark.parametrize(
    "args",
    [
        ["--option", "allow-unsafe-native-code-during-evaluation", "true"],
        ["--impure"],
        ["--expr", "builtins.readFile /etc/shadow"],
        ["-f", "default.nix"],
        ["--out-link", "/etc/evil"],
        ["--out-link", "../up"],
        ["--out-link"],
        ["-L", "--option=sandbox=false"],
    ],
)
def test_nix_options_outside_the_allow_list_are_refused(args):
    with pytest.raises(AspenError) as err:
        NixWorker().validate({"installable": "nixpkgs#hello", "args": args})
    assert err.value.code == ErrorCode.INVALID_ARGUMENT


def test_allowed_nix_args():
    NixWorker().validate({"installable": "nixpkgs#hello", "args": ["-L", "--out-link", "result", "nixpkgs#jq"]})


FAKE_NIX = """#!/bin/sh
# A stand-in for nix (not installed here): shows what a real nix would get.
echo "uid=$(id -u) $(grep CapEff /proc/self/status)" >&2
echo "args=$*" >&2
echo "env=$(env | cut -d= -f1 | sort | tr '\\n' ,)" >&2
echo "NIX_REMOTE=$NIX_REMOTE" >&2
touch /nix-probe 2>/dev/null && echo "wrote outside" >&2
echo /nix/store/00000000000000000000000000000000-fake
"""


async def test_nix_runs_in_the_sandbox_with_a_scrubbed_environment(store, wait_for_state, monkeypatch):
    """Checked with a stand-in binary at the nix path: the argv it gets, its
    uid, capabilities and environment are those a real nix would get."""
    monkeypatch.setenv("ASPEN_TOKEN", "node-secret")
    fake_dir = tempfile.mkdtemp(prefix="aspen-fake-nix-")
    try:
        os.chmod(fake_dir, 0o755)
        nix = os.path.join(fake_dir, "nix")
        Path(nix).write_text(FAKE_NIX)
        os.chmod(nix, 0o755)
        async with WorkerPool(store, [NixWorker(nix=nix)], poll_interval=0.2):
            job = await store.submit(
                JobSpec(type="nix", payload={"installable": "path:/src#x", "args": ["-L", "nixpkgs#jq"]})
            )
            done = await wait_for_state(job.id, JobState.SUCCEEDED)
        log = (await store.blobs.get_bytes(done.log_blob)).decode()
    finally:
        shutil.rmtree(fake_dir)
    assert done.result == {"out_paths": ["/nix/store/00000000000000000000000000000000-fake"]}
    assert "uid=65534 CapEff:\t0000000000000000" in log
    assert "args=--extra-experimental-features nix-command flakes build --no-link --print-out-paths" in log
    assert log.split("args=")[1].split("\n")[0].endswith("-L nixpkgs#jq -- path:/src#x")
    assert "NIX_REMOTE=daemon" in log and "ASPEN_TOKEN" not in log and "wrote outside" not in log
    env_names = set(log.split("env=")[1].split("\n")[0].strip(",").split(","))
    assert env_names <= {"PATH", "HOME", "LANG", "NIX_REMOTE", "ASPEN_JOB_ID", "PWD", "SHLVL", "_"}
