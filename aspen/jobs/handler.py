"""The job RPCs, and the node's worker pool.

Registered through the ``aspen.handlers`` entry-point group
(``jobs = "aspen.jobs.handler:create"``). Node config, table ``[jobs]``:
``workers = true`` (run a pool on this node), ``lease_ttl = 10``,
``shell_concurrency = 4``; the sandbox, limit, output and retention keys are
read in :mod:`aspen.jobs.builtin`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.jobs.builtin import builtin_workers, entry_point_workers, pool_options
from aspen.jobs.model import Job, parse_spec
from aspen.jobs.pool import WorkerPool
from aspen.jobs.requests import (
    JOB_REQUESTS,
    MAX_LIST_LIMIT,
    MAX_LOG_CHUNK,
    JobCancel,
    JobList,
    JobLogs,
    JobRetry,
    JobStats,
    JobStatus,
    JobWorkers,
)
from aspen.jobs.store import JobStore
from aspen.jobs.worker import Worker
from aspen.rpc.handler import Request, RequestContext, Response

log = logging.getLogger(__name__)

REQUEST_TYPES = tuple(JOB_REQUESTS)
KNOWN_TYPES_CACHE_SECONDS = 2.0


def _body(body: Any, cls: type) -> Any:
    try:
        return msgspec.convert(body, cls)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.VALIDATION_ERROR, str(exc)) from None


def _builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)


class JobsHandler:
    name = "core.jobs"
    priority = 50
    request_types = frozenset(REQUEST_TYPES)

    def __init__(self, node: Any, workers: list[Worker] | None = None) -> None:
        self.node = node
        self.options = _options(node)
        self.store = JobStore(node.kv, getattr(node, "blobs", None))
        self.workers = (
            workers if workers is not None else [*builtin_workers(self.options, node), *entry_point_workers(node)]
        )
        self.local_types = {t: w for w in self.workers for t in w.job_types}
        self.pool: WorkerPool | None = None
        self._remote_types: tuple[float, frozenset[str]] = (0.0, frozenset())

    async def start(self) -> None:
        if hasattr(self.node, "jobs"):
            self.node.jobs = self  # the node's slot for the job system
        if not self.options.get("workers", True):
            return
        data_dir = getattr(self.node, "data_dir", None)
        self.pool = WorkerPool(
            self.store,
            self.workers,
            node_id=getattr(self.node, "node_id", None),
            lease_ttl=int(self.options.get("lease_ttl", 10)),
            log_dir=f"{data_dir}/job-logs" if data_dir else None,
            **pool_options(self.options),
        )
        await self.pool.start()

    async def stop(self) -> None:
        if self.pool is not None:
            await self.pool.stop(grace=float(self.options.get("shutdown_grace", 10)))
            self.pool = None

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        method = getattr(self, "_" + request.type[3:].lower())
        result_type, body = await method(request.body, ctx)
        return Response(result_type, body)

    def _sees_all(self, ctx: RequestContext) -> bool:
        return ctx.principal is None or self.node.auth.allows(ctx.principal, "job:admin")

    async def _visible(self, job_id: str, ctx: RequestContext) -> Job:
        """The job, if the caller submitted it or holds ``job:admin``;
        anyone else's is ``JOB_NOT_FOUND``, exactly like a missing one."""
        job = await self.store.get(job_id)
        if job.submitter != ctx.caller and not self._sees_all(ctx):
            raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
        return job

    async def _known_types(self) -> frozenset[str]:
        """Types some worker runs: ours, and those live pools advertise."""
        at, types = self._remote_types
        if time.monotonic() - at > KNOWN_TYPES_CACHE_SECONDS:
            types = frozenset(t for w in await self.store.workers() for t in w.job_types)
            self._remote_types = (time.monotonic(), types)
        return types | frozenset(self.local_types)

    async def _submit(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        spec = parse_spec(body)
        if spec.type not in await self._known_types():
            raise AspenError(ErrorCode.UNKNOWN_JOB_TYPE, f"no worker runs jobs of type {spec.type!r}", type=spec.type)
        validate = getattr(self.local_types.get(spec.type), "validate", None)
        if validate is not None:
            validate(spec.payload)
        if ctx.caller is not None:
            limit = int(self.node.config.sections.get("quotas", {}).get("pending_jobs_per_submitter", 10_000))
            used = await self.store.unfinished_count(ctx.caller)
            if used >= limit:
                raise quota_exceeded("pending_jobs_per_submitter", limit, used)
        job = await self.store.submit(spec, ctx.caller)
        return "JobSubmitResult", {"job": _builtins(job)}

    async def _status(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        job = await self._visible(_body(body, JobStatus).id, ctx)
        return "JobStatusResult", {"job": _builtins(job), "result": await self.store.read_result(job)}

    async def _list(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        req = _body(body, JobList)
        if not 1 <= req.limit <= MAX_LIST_LIMIT:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"limit must be 1..{MAX_LIST_LIMIT}")
        jobs, token = await self.store.list(
            state=req.state, job_type=req.type, limit=req.limit, continuation=req.continuation_token
        )
        if not self._sees_all(ctx):  # a page may come back short; the continuation goes on
            jobs = [j for j in jobs if j.submitter == ctx.caller]
        return "JobListResult", {"jobs": [j.summary() for j in jobs], "continuation_token": token}

    async def _logs(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        req = _body(body, JobLogs)
        job = await self._visible(req.id, ctx)
        data, next_offset = await self.store.read_log(job, req.offset, min(req.max_bytes, MAX_LOG_CHUNK))
        return "JobLogsResult", {
            "id": job.id,
            "state": job.state,
            "data": data.decode("utf-8", errors="replace"),
            "next_offset": next_offset,
            "is_finished": job.state.terminal,
        }

    async def _cancel(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        job = await self.store.cancel((await self._visible(_body(body, JobCancel).id, ctx)).id)
        return "JobCancelResult", {"job": _builtins(job)}

    async def _retry(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        job = await self.store.retry((await self._visible(_body(body, JobRetry).id, ctx)).id)
        return "JobRetryResult", {"job": _builtins(job)}

    async def _workers(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        _body(body, JobWorkers)
        return "JobWorkersResult", {"workers": _builtins(await self.store.workers())}

    async def _stats(self, body: Any, ctx: RequestContext) -> tuple[str, dict]:
        _body(body, JobStats)
        return "JobStatsResult", await self.store.stats()


def _options(node: Any) -> dict[str, Any]:
    config = getattr(node, "config", None)
    sections = getattr(config, "sections", None) or {}
    options = sections.get("jobs", {}) if isinstance(sections, dict) else {}
    if not isinstance(options, dict):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "config table [jobs] must be a table")
    return options


def create(node: Any) -> JobsHandler:
    return JobsHandler(node)
