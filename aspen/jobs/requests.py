"""The job request catalog: one Struct per request body, named for its
request type as every catalog is (``JobSubmit`` takes a
:class:`aspen.jobs.model.JobSpec`, checked by :func:`aspen.jobs.model.parse_spec`).
Responses carry the model records."""

from __future__ import annotations

import msgspec

from aspen.jobs.model import JobSpec, JobState

MAX_LIST_LIMIT = 1000
MAX_LOG_CHUNK = 1 << 20


class JobStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str


class JobCancel(JobStatus):
    """Cancel a job that has not finished."""


class JobRetry(JobStatus):
    """Run a dead, failed or cancelled job again."""


class JobList(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: JobState | None = None
    type: str | None = None
    limit: int = 100
    continuation_token: str | None = None


class JobLogs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    offset: int = 0  # byte offset into the log: follow by passing back ``next_offset``
    max_bytes: int = 256 * 1024


class JobWorkers(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No arguments: the live worker pools."""


class JobStats(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """No arguments: job counts by state, and the pools."""


# request type -> request body
JOB_REQUESTS: dict[str, type[msgspec.Struct]] = {
    "JobSubmit": JobSpec,
    "JobStatus": JobStatus,
    "JobList": JobList,
    "JobLogs": JobLogs,
    "JobCancel": JobCancel,
    "JobRetry": JobRetry,
    "JobWorkers": JobWorkers,
    "JobStats": JobStats,
}
