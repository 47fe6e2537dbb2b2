"""Request bodies of the job RPCs (``JobSubmit`` takes a
:class:`aspen.jobs.model.JobSpec`). Responses carry the model records."""

from __future__ import annotations

import msgspec

from aspen.jobs.model import JobState

MAX_LIST_LIMIT = 1000
MAX_LOG_CHUNK = 1 << 20


class JobRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of JobStatus, JobCancel and JobRetry."""

    id: str


class JobListBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    state: JobState | None = None
    type: str | None = None
    limit: int = 100
    continuation_token: str | None = None


class JobLogsBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    offset: int = 0  # byte offset into the log: follow by passing back ``next_offset``
    max_bytes: int = 256 * 1024


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Body of JobWorkers and JobStats."""
