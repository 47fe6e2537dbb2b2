"""Jobs: a durable queue in the KV store, worker pools that share it from any
process or node, and the built-in executors."""

from aspen.jobs.model import (
    Job,
    JobFailure,
    JobSpec,
    JobState,
    Priority,
    RetryPolicy,
    WorkerInfo,
)
from aspen.jobs.pool import WorkerPool
from aspen.jobs.store import JobStore
from aspen.jobs.worker import JobContext, Worker

__all__ = [
    "Job",
    "JobContext",
    "JobFailure",
    "JobSpec",
    "JobState",
    "JobStore",
    "Priority",
    "RetryPolicy",
    "Worker",
    "WorkerInfo",
    "WorkerPool",
]
