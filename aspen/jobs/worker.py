"""What a job worker implements, and what it gets while running a job."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from aspen.jobs.model import Job
from aspen.jobs.output import DEFAULT_OUTPUT_LIMIT
from aspen.storage.protocol import BlobStore, KeyValueStore

# Workers from other distributions: each entry point names a factory
# ``factory(node) -> Worker | list[Worker]`` (``node`` as for handlers).
WORKERS_ENTRY_POINT_GROUP = "aspen.workers"
# A result dict's ``output_blobs`` ({name: hash}): blobs the worker protected
# under ``output_tag(job id, name)``; they are released with the job.
OUTPUT_BLOBS = "output_blobs"


def output_tag(job_id: str, name: str) -> str:
    return f"job-output:{job_id}:{name}"[:1024]


@runtime_checkable
class Worker(Protocol):
    """Runs jobs of ``job_types``. ``execute`` returns the JSON-able result,
    or raises :class:`aspen.jobs.model.JobFailure` (any other exception is a
    retryable failure). It must tolerate cancellation (timeout, cancel, a
    lost claim) and, as delivery is at-least-once, running a job twice.

    Optional attributes: ``concurrency`` (jobs at once, default 4) and
    ``validate(payload)`` (raise ``INVALID_JOB`` to reject at submit)."""

    job_types: frozenset[str]

    async def execute(self, job: Job, ctx: JobContext) -> Any: ...


@dataclass
class JobContext:
    """Per-execution services. The log file is uploaded as the job's log
    blob when the execution ends, cut to ``output_limit`` bytes."""

    job: Job
    token: str
    worker_id: str
    kv: KeyValueStore
    blobs: BlobStore | None
    log_path: Path
    _progress: Any = field(repr=False, default=None)
    output_limit: int = DEFAULT_OUTPUT_LIMIT

    @property
    def attempt(self) -> int:
        return self.job.attempts

    def log(self, text: str) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    async def progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0..100); raises ``STALE_EXECUTION`` once the
        claim is lost, so a worker can stop early."""
        await self._progress(self.job.id, self.token, percent, message)

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except FileNotFoundError:
            return 0
