"""The job records: one definition each, stored in KV, sent over RPC and
printed by the CLI.

Times are wall-clock milliseconds since the epoch, because jobs are shared by
processes on many hosts and a monotonic clock means nothing across them.
"""

from __future__ import annotations

import random
import re
from enum import StrEnum
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.keys import RUN_AT_DIGITS
from aspen.rpc.nesting import check_value_depth

MAX_PAYLOAD_BYTES = 256 * 1024
MAX_PAYLOAD_DEPTH = 32  # workers and guests recurse over the payload; the RPC envelope allows 64 in all
MAX_RUN_AT_MS = 10**RUN_AT_DIGITS - 1  # what the ready index's fixed-width field holds (year 33658)
MAX_INLINE_RESULT_BYTES = 64 * 1024  # larger results go to a blob
MAX_DEPENDENCIES = 100
MAX_RETRIES = 100
MAX_TIMEOUT_MS = 24 * 3600 * 1000
DEFAULT_TIMEOUT_MS = 300_000
MAX_ERROR_HISTORY = 10
JOB_TYPE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
JOB_ID_RE = re.compile(r"^[0-9a-f]{24}$")


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Sort rank in the ready index: critical sorts (and is claimed) first."""
        return _RANK[self]


_RANK = {Priority.CRITICAL: 0, Priority.HIGH: 1, Priority.NORMAL: 2, Priority.LOW: 3}


class JobState(StrEnum):
    PENDING = "pending"  # ready to run (or waiting for its dependencies)
    SCHEDULED = "scheduled"  # waiting for run_at
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # a permanent failure (not retryable, or a dependency failed)
    RETRYING = "retrying"  # waiting for its backoff to pass
    DEAD = "dead"  # retries exhausted: the dead-letter view
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD, JobState.CANCELLED})
# A dependency ending in one of these fails its dependents.
FAILING_STATES = frozenset({JobState.FAILED, JobState.DEAD, JobState.CANCELLED})


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``max_retries`` extra attempts after the first; the n-th retry waits
    ``backoff_ms · multiplier^(n-1)`` capped at ``max_backoff_ms``, of which a
    random ``jitter`` fraction is taken off so a burst of failures does not
    retry in lockstep."""

    max_retries: int = 3
    backoff_ms: int = 1000
    multiplier: float = 2.0
    max_backoff_ms: int = 300_000
    jitter: float = 0.5

    def check(self) -> None:
        if not 0 <= self.max_retries <= MAX_RETRIES:
            raise AspenError(ErrorCode.INVALID_JOB, f"max_retries must be 0..{MAX_RETRIES}")
        if not 0 <= self.backoff_ms <= self.max_backoff_ms <= MAX_TIMEOUT_MS:
            raise AspenError(ErrorCode.INVALID_JOB, "need 0 <= backoff_ms <= max_backoff_ms <= 24 h")
        if not 1.0 <= self.multiplier <= 10.0:
            raise AspenError(ErrorCode.INVALID_JOB, "multiplier must be 1..10")
        if not 0.0 <= self.jitter <= 1.0:
            raise AspenError(ErrorCode.INVALID_JOB, "jitter must be 0..1")

    def delay_ms(self, retry: int) -> int:
        """Backoff before retry number ``retry`` (1-based)."""
        full = min(self.max_backoff_ms, self.backoff_ms * self.multiplier ** (retry - 1))
        return int(full * (1.0 - self.jitter * random.random()))


class JobSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a client submits (the body of ``JobSubmit``)."""

    type: str
    payload: Any = None
    priority: Priority = Priority.NORMAL
    retry: RetryPolicy = RetryPolicy()
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    run_at_ms: int | None = None  # None: now
    depends_on: list[str] = []
    tags: list[str] = []


class Job(msgspec.Struct, frozen=True):
    id: str
    type: str
    payload: Any
    priority: Priority
    state: JobState
    retry: RetryPolicy
    timeout_ms: int
    run_at_ms: int
    created_ms: int
    updated_ms: int
    depends_on: list[str] = []
    blocked_by: list[str] = []  # dependencies not yet succeeded
    tags: list[str] = []
    attempts: int = 0  # executions started
    token: str | None = None  # execution token of the current claim
    worker_id: str | None = None
    started_ms: int | None = None
    finished_ms: int | None = None
    progress: float = 0.0  # 0..100
    progress_message: str | None = None
    result: Any = None  # inline result (small)
    result_blob: str | None = None  # BLAKE3 hash of a large JSON result
    log_blob: str | None = None  # BLAKE3 hash of the last attempt's log
    error: str | None = None
    error_code: str | None = None
    errors: list[str] = []  # last few attempt errors, oldest first
    redrives: int = 0  # times retried from a terminal state
    submitter: str | None = None  # the caller that submitted it (None: the node itself)

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "state": self.state,
            "priority": self.priority,
            "attempts": self.attempts,
            "progress": self.progress,
            "created_ms": self.created_ms,
            "updated_ms": self.updated_ms,
            "error": self.error,
        }


class WorkerInfo(msgspec.Struct, frozen=True):
    """A live worker pool, stored under a key tied to its lease: it vanishes
    when the pool stops heartbeating."""

    worker_id: str
    node_id: str | None
    host: str
    pid: int
    job_types: list[str]
    concurrency: dict[str, int]
    running: list[str]
    started_ms: int
    heartbeat_ms: int
    processed: int = 0
    failed: int = 0
    details: dict[str, str] = {}  # what workers report of themselves (``vm.accel``)


class LiveLog(msgspec.Struct, frozen=True):
    """The last bytes of a running job's log: ``tail`` ends at byte ``size``."""

    size: int
    tail: bytes


class JobFailure(Exception):
    """Raised by a worker to fail a job with a code; ``retryable=False``
    skips the remaining retries (the job ends ``failed``)."""

    def __init__(self, message: str, *, code: str = ErrorCode.JOB_FAILED, retryable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


_job_encoder = msgspec.json.Encoder()
_job_decoder = msgspec.json.Decoder(Job)
_worker_decoder = msgspec.json.Decoder(WorkerInfo)
_livelog_decoder = msgspec.json.Decoder(LiveLog)


def encode(record: msgspec.Struct) -> bytes:
    return _job_encoder.encode(record)


def decode_job(raw: bytes) -> Job:
    return _job_decoder.decode(raw)


def decode_worker(raw: bytes) -> WorkerInfo:
    return _worker_decoder.decode(raw)


def decode_livelog(raw: bytes) -> LiveLog:
    return _livelog_decoder.decode(raw)


def parse_spec(body: Any) -> JobSpec:
    """Decode and check a submission; every problem is ``INVALID_JOB``, but
    a payload nested too deep, which is ``VALIDATION_ERROR`` like any other
    value nested too deep (checked first: decoding it recurses)."""
    if isinstance(body, dict):
        check_value_depth(body.get("payload"), max_depth=MAX_PAYLOAD_DEPTH)
    try:
        spec = msgspec.convert(body, JobSpec)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad job spec: {exc}") from exc
    if not JOB_TYPE_RE.match(spec.type):
        raise AspenError(ErrorCode.INVALID_JOB, "type must be 1-64 characters of [A-Za-z0-9_.-]", type=spec.type)
    spec.retry.check()
    if not 1 <= spec.timeout_ms <= MAX_TIMEOUT_MS:
        raise AspenError(ErrorCode.INVALID_JOB, f"timeout_ms must be 1..{MAX_TIMEOUT_MS}")
    if spec.run_at_ms is not None and not 0 <= spec.run_at_ms <= MAX_RUN_AT_MS:
        raise AspenError(ErrorCode.INVALID_JOB, f"run_at_ms must be 0..{MAX_RUN_AT_MS}")
    size = len(_job_encoder.encode(spec.payload))
    if size > MAX_PAYLOAD_BYTES:
        raise AspenError(ErrorCode.INVALID_JOB, f"payload is {size} bytes, the limit is {MAX_PAYLOAD_BYTES}", size=size)
    if len(spec.depends_on) > MAX_DEPENDENCIES:
        raise AspenError(ErrorCode.INVALID_JOB, f"at most {MAX_DEPENDENCIES} dependencies")
    for dep in spec.depends_on:
        check_job_id(dep)
    if len(set(spec.depends_on)) != len(spec.depends_on):
        raise AspenError(ErrorCode.INVALID_JOB, "depends_on lists a job twice")
    if len(spec.tags) > 16 or any(not 0 < len(t) <= 64 for t in spec.tags):
        raise AspenError(ErrorCode.INVALID_JOB, "at most 16 tags of 1-64 characters")
    return spec


def check_job_id(job_id: object) -> str:
    if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
        raise AspenError(ErrorCode.INVALID_JOB, f"not a job id: {job_id!r}")
    return job_id
