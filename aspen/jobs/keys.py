"""The key layout of the job system: everything under ``__jobs:``.

| key | value | why |
|---|---|---|
| ``__jobs:job:{id}`` | Job JSON | the record; ids sort by creation time |
| ``__jobs:ready:{type}:{rank}:{run_at_ms:015}:{id}`` | ``b""`` | claimable jobs; a range scan up to *now* per (type, priority) finds due work in priority then time order, so delayed jobs and retry backoff need no separate timer |
| ``__jobs:claim:{id}`` | execution token | attached to the claiming pool's lease: it vanishes when the pool stops heartbeating |
| ``__jobs:running:{id}`` | execution token | no lease: lets the reaper find claims whose lease expired |
| ``__jobs:blocked:{id}`` | ``b""`` | jobs waiting for dependencies (re-checked by the sweep) |
| ``__jobs:dependents:{id}`` | JSON list of ids | who waits for this job, persisted with the graph |
| ``__jobs:state:{state}:{id}`` | job type | per-state index: list/stats/dead-letter without reading every record |
| ``__jobs:workers:{worker_id}`` | WorkerInfo JSON | attached to the pool's lease: live workers only |
| ``__jobs:livelog:{id}`` | LiveLog JSON | the tail of a running job's log (pool's lease), for ``logs --follow`` |
| ``__jobs:unfinished:{submitter}:{id}`` | ``b""`` | a submitter's jobs not yet final: its pending-jobs quota |
"""

from __future__ import annotations

from urllib.parse import quote

PREFIX = "__jobs:"
JOB = PREFIX + "job:"
READY = PREFIX + "ready:"
CLAIM = PREFIX + "claim:"
RUNNING = PREFIX + "running:"
BLOCKED = PREFIX + "blocked:"
DEPENDENTS = PREFIX + "dependents:"
STATE = PREFIX + "state:"
WORKERS = PREFIX + "workers:"
LIVELOG = PREFIX + "livelog:"
UNFINISHED = PREFIX + "unfinished:"

RUN_AT_DIGITS = 15


def job(job_id: str) -> str:
    return JOB + job_id


def ready_prefix(job_type: str, rank: int) -> str:
    return f"{READY}{job_type}:{rank}:"


def ready(job_type: str, rank: int, run_at_ms: int, job_id: str) -> str:
    return f"{READY}{job_type}:{rank}:{max(0, run_at_ms):0{RUN_AT_DIGITS}d}:{job_id}"


def ready_until(job_type: str, rank: int, now_ms: int) -> str:
    """Exclusive scan end: every ready key of (type, rank) due at ``now_ms``."""
    return f"{READY}{job_type}:{rank}:{now_ms + 1:0{RUN_AT_DIGITS}d}"


def parse_ready(key: str) -> tuple[str, int, int, str]:
    """(type, rank, run_at_ms, id) of a ready key."""
    job_type, rank, run_at, job_id = key[len(READY) :].split(":")
    return job_type, int(rank), int(run_at), job_id


def claim(job_id: str) -> str:
    return CLAIM + job_id


def running(job_id: str) -> str:
    return RUNNING + job_id


def blocked(job_id: str) -> str:
    return BLOCKED + job_id


def dependents(job_id: str) -> str:
    return DEPENDENTS + job_id


def state(state: str, job_id: str) -> str:
    return f"{STATE}{state}:{job_id}"


def state_prefix(state: str) -> str:
    return f"{STATE}{state}:"


def worker(worker_id: str) -> str:
    return WORKERS + worker_id


def livelog(job_id: str) -> str:
    return LIVELOG + job_id


def unfinished_prefix(submitter: str) -> str:
    return f"{UNFINISHED}{quote(submitter, safe='')}:"


def unfinished(submitter: str, job_id: str) -> str:
    return unfinished_prefix(submitter) + job_id
