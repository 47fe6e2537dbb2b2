"""``aspen job …``: submit jobs and watch them run."""

from __future__ import annotations

import json as jsonlib
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from aspen import clock
from aspen.cli.common import (
    JsonOpt,
    UrlOpt,
    connect,
    console,
    fail,
    literal,
    print_json,
    reports_errors,
)
from aspen.errors import ErrorCode
from aspen.jobs.model import JobState, Priority

app = typer.Typer(help="Submit and follow jobs.", no_args_is_help=True)

_RELATIVE = re.compile(r"^\+(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_run_at(text: str, now_ms: int | None = None) -> int:
    """``+30s``/``+5m``/``+2h``/``+1d`` from now, or an ISO 8601 time (local
    time unless it names a zone); returns epoch milliseconds."""
    now_ms = clock.now_ms() if now_ms is None else now_ms
    m = _RELATIVE.match(text.strip())
    if m:
        return now_ms + int(float(m.group(1)) * _UNIT_MS[m.group(2)])
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise fail(
            ErrorCode.INVALID_ARGUMENT, f"--run-at {text!r}: use +30s, +5m, +2h, +1d or an ISO 8601 time"
        ) from None
    return int(when.timestamp() * 1000)


def _payload(payload: str | None, payload_file: Path | None) -> Any:
    if payload is not None and payload_file is not None:
        raise fail(ErrorCode.INVALID_ARGUMENT, "give --payload or --payload-file, not both")
    text = payload_file.read_text() if payload_file is not None else payload
    if text is None:
        return {}
    try:
        return jsonlib.loads(text)
    except ValueError as exc:
        raise fail(ErrorCode.INVALID_JOB, f"payload is not valid JSON: {exc}") from None


def _when(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000).strftime("%Y-%m-%d %H:%M:%S") if ms else "-"


_STATE_STYLE = {
    "succeeded": "green",
    "running": "cyan",
    "failed": "red",
    "dead": "bold red",
    "cancelled": "yellow",
    "retrying": "magenta",
}


def _state(state: str) -> Text:
    return Text(state, style=_STATE_STYLE.get(state, ""))


@app.command()
@reports_errors
def submit(
    job_type: Annotated[str, typer.Argument(metavar="TYPE", help="Job type, e.g. shell.")],
    payload: Annotated[str | None, typer.Option(help="Payload as JSON.")] = None,
    payload_file: Annotated[Path | None, typer.Option(help="Read the JSON payload from this file.")] = None,
    priority: Annotated[Priority, typer.Option(help="Queue priority.")] = Priority.NORMAL,
    retries: Annotated[int, typer.Option(help="Retries after the first attempt.")] = 3,
    backoff: Annotated[float, typer.Option(help="First retry delay in seconds (doubles each retry).")] = 1.0,
    timeout: Annotated[float, typer.Option(help="Seconds one attempt may run.")] = 300.0,
    run_at: Annotated[str | None, typer.Option(help="Start at: +30s, +5m, +2h, +1d or an ISO 8601 time.")] = None,
    depends_on: Annotated[list[str] | None, typer.Option(help="Job id to wait for (repeatable).")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the job to finish; exit 1 unless it succeeded.")
    ] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """Submit a job; prints its id."""
    body: dict[str, Any] = {
        "type": job_type,
        "payload": _payload(payload, payload_file),
        "priority": priority.value,
        "retry": {"max_retries": retries, "backoff_ms": int(backoff * 1000)},
        "timeout_ms": int(timeout * 1000),
        "depends_on": depends_on or [],
        "tags": tag or [],
    }
    if run_at is not None:
        body["run_at_ms"] = parse_run_at(run_at)
    with connect(url) as client:
        job = client.call("JobSubmit", body)["job"]
        if wait:
            job = _wait(client, job["id"])
    print_json(job) if json else console.print(
        literal(job["id"]) if not wait else literal(f"{job['id']} ") + _state(job["state"])
    )
    if wait and job["state"] != JobState.SUCCEEDED:
        raise typer.Exit(1)


def _wait(client: Any, job_id: str) -> dict[str, Any]:
    while True:
        job = client.call("JobStatus", {"id": job_id})["job"]
        if JobState(job["state"]).terminal:
            return job
        time.sleep(0.2)


@app.command()
@reports_errors
def status(job_id: Annotated[str, typer.Argument(metavar="ID")], url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Show one job."""
    with connect(url) as client:
        reply = client.call("JobStatus", {"id": job_id})
    if json:
        print_json(reply)
        return
    job = reply["job"]
    rows = [
        ("id", job["id"]),
        ("type", job["type"]),
        ("state", _state(job["state"])),
        ("priority", job["priority"]),
        ("attempts", f"{job['attempts']} of {job['retry']['max_retries'] + 1}"),
        (
            "progress",
            f"{job['progress']:.0f}%" + (f" {job['progress_message']}" if job.get("progress_message") else ""),
        ),
        ("created", _when(job["created_ms"])),
        ("run at", _when(job["run_at_ms"])),
        ("started", _when(job.get("started_ms"))),
        ("finished", _when(job.get("finished_ms"))),
        ("worker", job.get("worker_id") or "-"),
        ("depends on", ", ".join(job["depends_on"]) or "-"),
        ("waiting for", ", ".join(job["blocked_by"]) or "-"),
    ]
    if job.get("error"):
        rows.append(("error", f"{job.get('error_code')}: {job['error']}"))
    if reply.get("result") is not None:
        rows.append(("result", jsonlib.dumps(reply["result"])[:2000]))
    for name, value in rows:
        console.print(Text.assemble((f"{name:>12}", "bold"), " ", value))


def _list_table(jobs: list[dict[str, Any]]) -> Table:
    table = Table("id", "type", "state", "priority", "attempts", "created", "error")
    for job in jobs:
        table.add_row(
            literal(job["id"]),
            literal(job["type"]),
            _state(job["state"]),
            literal(job["priority"]),
            str(job["attempts"]),
            _when(job["created_ms"]),
            literal((job.get("error") or "")[:60]),
        )
    return table


@app.command("list")
@reports_errors
def list_jobs(
    state: Annotated[
        JobState | None, typer.Option(help="Only jobs in this state (dead = the dead-letter view).")
    ] = None,
    job_type: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    limit: Annotated[int, typer.Option(help="Jobs per page (max 1000).")] = 100,
    all_pages: Annotated[bool, typer.Option("--all", help="Follow continuation tokens to the end.")] = False,
    url: UrlOpt = None,
    json: JsonOpt = False,
) -> None:
    """List jobs, oldest first."""
    jobs: list[dict[str, Any]] = []
    token = None
    with connect(url) as client:
        while True:
            body = {"limit": limit, "continuation_token": token, "type": job_type}
            if state is not None:
                body["state"] = state.value
            page = client.call("JobList", body)
            jobs += page["jobs"]
            token = page["continuation_token"]
            if not (all_pages and token):
                break
    if json:
        print_json({"jobs": jobs, "continuation_token": token})
        return
    console.print(_list_table(jobs))
    if token:
        console.print("[dim]more jobs: --all[/]")


@app.command()
@reports_errors
def dead(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """The dead-letter view: jobs whose retries ran out (retry them with ``aspen job retry``)."""
    list_jobs(state=JobState.DEAD, job_type=None, limit=1000, all_pages=True, url=url, json=json)


@app.command()
@reports_errors
def logs(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job finishes.")] = False,
    url: UrlOpt = None,
) -> None:
    """Print a job's log (the current attempt while it runs, else the last one)."""
    offset = 0
    with connect(url) as client:
        while True:
            chunk = client.call("JobLogs", {"id": job_id, "offset": offset})
            sys.stdout.write(chunk["data"])
            sys.stdout.flush()
            moved = chunk["next_offset"] != offset
            offset = chunk["next_offset"]
            if moved:
                continue  # more may be waiting
            if not follow or chunk["is_finished"]:
                return
            time.sleep(0.5)


@app.command()
@reports_errors
def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")], url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Cancel a job that has not finished (a running one is killed)."""
    _act("JobCancel", job_id, url, json)


@app.command()
@reports_errors
def retry(job_id: Annotated[str, typer.Argument(metavar="ID")], url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Run a dead, failed or cancelled job again with a fresh retry budget."""
    _act("JobRetry", job_id, url, json)


def _act(request_type: str, job_id: str, url: str | None, json: bool) -> None:
    """Send a request that changes one job and show the job it returns."""
    with connect(url) as client:
        job = client.call(request_type, {"id": job_id})["job"]
    print_json(job) if json else console.print(literal(f"{job['id']} ") + _state(job["state"]))


@app.command()
@reports_errors
def workers(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Live worker pools: where they run, what they run, how busy they are."""
    with connect(url) as client:
        found = client.call("JobWorkers", {})["workers"]
    if json:
        print_json({"workers": found})
        return
    table = Table("worker", "node", "host/pid", "job types", "running", "done", "failed", "heartbeat", "details")
    now = time.time() * 1000
    for w in found:
        table.add_row(
            literal(w["worker_id"]),
            literal(w.get("node_id") or "-"),
            literal(f"{w['host']}/{w['pid']}"),
            literal(", ".join(f"{t}×{n}" for t, n in w["concurrency"].items())),
            str(len(w["running"])),
            str(w["processed"]),
            str(w["failed"]),
            f"{(now - w['heartbeat_ms']) / 1000:.0f}s ago",
            literal(", ".join(f"{k}={v}" for k, v in sorted(w.get("details", {}).items()))),
        )
    console.print(table)


@app.command()
@reports_errors
def stats(url: UrlOpt = None, json: JsonOpt = False) -> None:
    """Jobs per state, live workers."""
    with connect(url) as client:
        result = client.call("JobStats", {})
    if json:
        print_json(result)
        return
    table = Table("state", "jobs")
    for state_name, n in result["states"].items():
        table.add_row(_state(state_name), str(n))
    console.print(table)
    console.print(f"{result['total']} jobs, {result['workers']} worker pools, {result['running']} running")
