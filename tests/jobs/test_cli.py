"""``aspen job …`` end to end: the real command against a real node process."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.node.node_process import ASPEN, NodeProcess


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    with NodeProcess(tmp_path_factory.mktemp("jobs-node") / "data") as proc:
        yield proc


def aspen(node, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [ASPEN, "job", *args, "--url", node.url],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"aspen job {args} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def status(node, job_id: str) -> dict:
    return json.loads(aspen(node, "status", job_id, "--json").stdout)["job"]


def wait_state(node, job_id: str, *states: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = status(node, job_id)
        if job["state"] in states:
            return job
        time.sleep(0.2)
    raise AssertionError(f"{job_id} is {job['state']}")


def test_submit_wait_status_logs(node):
    out = aspen(node, "submit", "shell", "--payload", '{"command": "echo from-cli"}', "--wait").stdout
    job_id, state = out.split()
    assert state == "succeeded"
    assert aspen(node, "logs", job_id).stdout == "from-cli\n"
    assert "exit_code" in aspen(node, "status", job_id).stdout
    listed = json.loads(aspen(node, "list", "--state", "succeeded", "--type", "shell", "--json").stdout)
    assert job_id in [j["id"] for j in listed["jobs"]]


def test_follow_streams_a_running_job(node):
    script = "for i in 1 2 3; do echo tick $i; sleep 0.5; done"
    job_id = aspen(node, "submit", "shell", "--payload", json.dumps({"command": script})).stdout.strip()
    assert aspen(node, "logs", job_id, "--follow").stdout == "tick 1\ntick 2\ntick 3\n"
    assert status(node, job_id)["state"] == "succeeded"


def test_dead_letter_retry_cancel_workers_stats(node):
    job_id = aspen(
        node, "submit", "shell", "--payload", '{"command": "exit 4"}', "--retries", "1", "--backoff", "0.1"
    ).stdout.strip()
    dead = wait_state(node, job_id, "dead")
    assert dead["attempts"] == 2 and dead["error_code"] == "EXIT_4"
    assert job_id in aspen(node, "dead").stdout
    assert "pending" in aspen(node, "retry", job_id).stdout
    wait_state(node, job_id, "dead")

    slow = aspen(node, "submit", "shell", "--payload", '{"command": "sleep 60"}').stdout.strip()
    wait_state(node, slow, "running")
    assert "cancelled" in aspen(node, "cancel", slow).stdout
    again = aspen(node, "cancel", slow, check=False)
    assert again.returncode == 1 and "INVALID_STATE" in again.stderr

    workers = json.loads(aspen(node, "workers", "--json").stdout)["workers"]
    assert len(workers) == 1 and "shell" in workers[0]["job_types"]
    stats = json.loads(aspen(node, "stats", "--json").stdout)
    assert stats["states"]["dead"] >= 1 and stats["states"]["cancelled"] >= 1


def test_delayed_and_dependent_jobs(node):
    first = aspen(node, "submit", "shell", "--payload", '{"command": "true"}', "--run-at", "+20s").stdout.strip()
    assert status(node, first)["state"] == "scheduled"
    second = aspen(node, "submit", "shell", "--payload", '{"command": "true"}', "--depends-on", first).stdout.strip()
    assert status(node, second)["blocked_by"] == [first]
    done = wait_state(node, second, "succeeded", timeout=60)  # 20 s of delay on a machine that may be busy
    assert done["started_ms"] >= status(node, first)["finished_ms"]
    assert status(node, first)["started_ms"] >= status(node, first)["run_at_ms"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["submit", "nonexistent-type"], "UNKNOWN_JOB_TYPE"),
        (["submit", "shell", "--payload", "{not json"], "INVALID_JOB"),
        (["submit", "shell", "--payload", '{"command": ""}'], "INVALID_JOB"),
        (["submit", "shell", "--payload", '{"command": "true"}', "--run-at", "tomorrowish"], "INVALID_ARGUMENT"),
        (["status", "0123"], "INVALID_JOB"),
        (["status", "0" * 24], "JOB_NOT_FOUND"),
    ],
)
def test_errors_exit_non_zero_with_code(node, args, code):
    result = aspen(node, *args, check=False)
    assert result.returncode == 1 and code in result.stderr


def test_submit_priority_and_timeout(node):
    job_id = aspen(
        node, "submit", "shell", "--payload", '{"command": "true"}', "--priority", "high", "--timeout", "45"
    ).stdout.strip()
    job = wait_state(node, job_id, "succeeded")
    assert job["priority"] == "high" and job["timeout_ms"] == 45_000

    bad = aspen(node, "submit", "shell", "--priority", "urgent", check=False)
    assert bad.returncode != 0 and "urgent" in bad.stderr

    started = time.monotonic()
    slow = aspen(
        node,
        "submit",
        "shell",
        "--payload",
        '{"command": "sleep 60"}',
        "--timeout",
        "1.5",
        "--retries",
        "1",
        "--backoff",
        "30",
    ).stdout.strip()
    job = wait_state(node, slow, "retrying", "dead", "failed")
    assert time.monotonic() - started < 30  # the timeout, not the 60 s sleep, ended it
    assert job["state"] == "retrying" and job["attempts"] == 1
    assert job["error_code"] == "TIMEOUT" and "timed out after 1500 ms" in job["error"]
    assert "cancelled" in aspen(node, "cancel", slow).stdout
