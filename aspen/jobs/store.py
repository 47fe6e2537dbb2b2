"""The durable job queue on a ``KeyValueStore``.

Every state change is one KV transaction that compares the job record's
``mod_revision`` (a real compare-and-swap, not Rust Aspen's read-compare-write
race), so concurrent pools, the reaper and clients never lose an update.
Claims carry the claiming pool's lease; completions carry the execution token
of the claim, so a worker whose claim expired (and was handed to someone
else) cannot complete the job a second time.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.claims import JobClaims
from aspen.jobs.job_records import (
    MAX_CAS_ATTEMPTS,
    absent,
    encode_json,
    new_job_id,
    ready_key_of,
    state_ops,
    unchanged,
)
from aspen.jobs.model import (
    FAILING_STATES,
    Job,
    JobSpec,
    JobState,
    WorkerInfo,
    decode_job,
    decode_livelog,
    decode_worker,
    encode,
)
from aspen.jobs.retention import JobRetention
from aspen.storage.pages import count_prefix
from aspen.storage.records import DeleteOp, PutOp


class JobStore(JobClaims, JobRetention):
    """Submit, claim, complete, fail, cancel, retry; the reaper and the
    dependency sweep. Stateless: any number of instances in any number of
    processes may share one KV store."""

    # --- reads --------------------------------------------------------------

    async def list(
        self,
        *,
        state: JobState | None = None,
        job_type: str | None = None,
        limit: int = 100,
        continuation: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of jobs in creation order, optionally by state and type."""
        if state is not None:
            page = await self.kv.scan(keys.state_prefix(state), limit=limit, continuation=continuation)
            ids = [e.key.rsplit(":", 1)[1] for e in page.entries if not job_type or e.value == job_type.encode()]
            found = await self.kv.batch_read([keys.job(i) for i in ids]) if ids else []
            jobs = [decode_job(kv.value) for kv in found if kv is not None]
        else:
            page = await self.kv.scan(keys.JOB, limit=limit, continuation=continuation)
            jobs = [decode_job(e.value) for e in page.entries]
            if job_type:
                jobs = [j for j in jobs if j.type == job_type]
        return jobs, page.continuation_token if page.is_truncated else None

    async def count(self, state: JobState) -> int:
        return await count_prefix(self.kv, keys.state_prefix(state))

    async def stats(self) -> dict[str, Any]:
        states = {s.value: await self.count(s) for s in JobState}
        workers = await self.workers()
        return {
            "states": states,
            "total": sum(states.values()),
            "workers": len(workers),
            "running": sum(len(w.running) for w in workers),
        }

    async def workers(self) -> list[WorkerInfo]:
        page = await self.kv.scan(keys.WORKERS, limit=10_000)
        return [decode_worker(e.value) for e in page.entries]

    async def read_log(self, job: Job, offset: int = 0, max_bytes: int = 256 * 1024) -> tuple[bytes, int]:
        """Log bytes from ``offset``: the log blob of a finished attempt, or
        the live tail of a running one. Returns (data, next offset)."""
        if offset < 0 or max_bytes < 1:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "offset must be >= 0 and max_bytes >= 1")
        if job.state != JobState.RUNNING and job.log_blob and self.blobs is not None:
            size = await self.blobs.size(job.log_blob)
            if offset >= size:
                return b"", size
            data = await self.blobs.get_bytes(job.log_blob, offset=offset, length=min(max_bytes, size - offset))
            return data, offset + len(data)
        kv = await self.kv.get(keys.livelog(job.id))
        if kv is None:
            return b"", offset
        live = decode_livelog(kv.value)
        start = max(offset, live.size - len(live.tail))
        data = live.tail[start - (live.size - len(live.tail)) :][:max_bytes]
        return data, start + len(data)

    # --- submit -------------------------------------------------------------

    async def unfinished_count(self, submitter: str) -> int:
        """How many of ``submitter``'s jobs have not reached a final state."""
        return await count_prefix(self.kv, keys.unfinished_prefix(submitter))

    async def submit(self, spec: JobSpec, submitter: str | None = None) -> Job:
        """Store a new job. Its dependencies must exist; one that already
        failed fails the new job at once (like a later failure would).
        ``submitter`` (the caller) alone sees it, besides ``job:admin``."""
        now = now_ms()
        job_id = new_job_id()
        run_at = spec.run_at_ms if spec.run_at_ms is not None else now
        for _ in range(MAX_CAS_ATTEMPTS):
            n = len(spec.depends_on)
            found = (
                await self.kv.batch_read(
                    [keys.job(d) for d in spec.depends_on] + [keys.dependents(d) for d in spec.depends_on]
                )
                if n
                else []
            )
            deps, dep_lists = found[:n], found[n:]
            blocked_by: list[str] = []
            failed_dep: Job | None = None
            for dep_id, kv in zip(spec.depends_on, deps):
                if kv is None:
                    raise AspenError(ErrorCode.JOB_NOT_FOUND, f"dependency {dep_id} does not exist", id=dep_id)
                dep = decode_job(kv.value)
                if dep.state in FAILING_STATES and failed_dep is None:
                    failed_dep = dep
                elif dep.state != JobState.SUCCEEDED:
                    blocked_by.append(dep_id)
            job = Job(
                id=job_id,
                type=spec.type,
                payload=spec.payload,
                priority=spec.priority,
                state=JobState.SCHEDULED if run_at > now else JobState.PENDING,
                retry=spec.retry,
                timeout_ms=spec.timeout_ms,
                run_at_ms=run_at,
                created_ms=now,
                updated_ms=now,
                depends_on=list(spec.depends_on),
                blocked_by=blocked_by,
                tags=list(spec.tags),
                submitter=submitter,
            )
            compares = [absent(keys.job(job_id)), *(unchanged(keys.job(d), kv) for d, kv in zip(spec.depends_on, deps))]
            ops: list[PutOp | DeleteOp] = []
            if failed_dep is not None:
                job = msgspec.structs.replace(
                    job,
                    state=JobState.FAILED,
                    finished_ms=now,
                    error=f"dependency {failed_dep.id} is {failed_dep.state}",
                    error_code=ErrorCode.DEPENDENCY_FAILED,
                )
            elif blocked_by:
                ops.append(PutOp(keys.blocked(job_id), b""))
                for dep_id, lst in zip(spec.depends_on, dep_lists):
                    if dep_id in blocked_by:
                        current = msgspec.json.decode(lst.value) if lst else []
                        compares.append(unchanged(keys.dependents(dep_id), lst))
                        ops.append(PutOp(keys.dependents(dep_id), encode_json([*current, job_id])))
            else:
                ops.append(PutOp(ready_key_of(job), b""))
            ops += [PutOp(keys.job(job_id), encode(job)), *state_ops(None, job)]
            result = await self.kv.transaction(compares, ops)
            if result.succeeded:
                return job
        raise AspenError(ErrorCode.UNAVAILABLE, "could not submit: too much contention on its dependencies")

    # --- client operations --------------------------------------------------

    async def cancel(self, job_id: str, reason: str = "cancelled") -> Job:
        """Cancel a job that has not finished. A running job's claim is
        deleted, which tells its worker (watching claims) to stop it."""

        def change(job: Job):
            if job.state.terminal:
                raise AspenError(ErrorCode.INVALID_STATE, f"job {job_id} already {job.state}", state=job.state)
            new = msgspec.structs.replace(
                job,
                state=JobState.CANCELLED,
                token=None,
                finished_ms=now_ms(),
                error=reason,
                error_code=ErrorCode.CANCELLED,
            )
            return new, [
                DeleteOp(ready_key_of(job)),
                DeleteOp(keys.claim(job_id)),
                DeleteOp(keys.running(job_id)),
                DeleteOp(keys.blocked(job_id)),
                DeleteOp(keys.livelog(job_id)),
            ]

        _, new = await self._update(job_id, change)  # type: ignore[misc]
        await self._resolve_dependents(await self._dependents_of(job_id))
        return new

    async def retry(self, job_id: str) -> Job:
        """Run a ``dead``, ``failed`` or ``cancelled`` job again, with a fresh
        retry budget (the dead-letter redrive)."""
        job = await self.get(job_id)
        deps = await self.kv.batch_read([keys.job(d) for d in job.depends_on])
        dep_jobs = [decode_job(kv.value) for kv in deps if kv is not None]
        for dep in dep_jobs:
            if dep.state in FAILING_STATES:
                raise AspenError(
                    ErrorCode.INVALID_STATE,
                    f"dependency {dep.id} is {dep.state}: retry it first",
                    dependency=dep.id,
                )
        pending_deps = [d.id for d in dep_jobs if d.state != JobState.SUCCEEDED]
        if pending_deps:
            # Re-arming a dependency edge needs the submit-time guarantees; keep redrive simple and explicit.
            raise AspenError(
                ErrorCode.INVALID_STATE,
                f"dependencies {', '.join(pending_deps)} have not succeeded yet",
                dependencies=pending_deps,
            )

        def change(job: Job):
            if job.state not in FAILING_STATES:
                raise AspenError(
                    ErrorCode.INVALID_STATE,
                    f"job {job_id} is {job.state}; only dead, failed or cancelled jobs can be retried",
                    state=job.state,
                )
            new = msgspec.structs.replace(
                job,
                state=JobState.PENDING,
                attempts=0,
                run_at_ms=now_ms(),
                blocked_by=[],
                finished_ms=None,
                error=None,
                error_code=None,
                redrives=job.redrives + 1,
            )
            return new, [PutOp(ready_key_of(new), b"")]

        _, new = await self._update(job_id, change)  # type: ignore[misc]
        return new
