"""Job dependencies: releasing a blocked job when its dependencies
succeed, failing it when one fails, and the sweep that repairs a resolution
a crash interrupted."""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from aspen.clock import now_ms
from aspen.errors import ErrorCode
from aspen.jobs import keys
from aspen.jobs.job_records import (
    JobRecords,
    ready_key_of,
)
from aspen.jobs.model import (
    FAILING_STATES,
    Job,
    JobState,
    decode_job,
)
from aspen.storage.records import DeleteOp, PutOp


class JobDependencies(JobRecords):
    """Resolution of dependency edges after a job finishes or is cancelled."""

    async def _dependents_of(self, job_id: str) -> list[str]:
        kv = await self.kv.get(keys.dependents(job_id))
        return msgspec.json.decode(kv.value) if kv else []

    async def _resolve_dependents(self, ids: Sequence[str]) -> None:
        """Re-check each dependent; cascades through the graph iteratively."""
        todo = list(ids)
        seen: set[str] = set()
        while todo:
            job_id = todo.pop()
            if job_id in seen:
                continue
            seen.add(job_id)
            if await self._reevaluate(job_id):
                todo.extend(await self._dependents_of(job_id))

    async def _reevaluate(self, job_id: str) -> bool:
        """Release a blocked job whose dependencies all succeeded, or fail it
        when one failed. Idempotent; True when the job became terminal."""
        job = await self.get(job_id)
        if job.state.terminal or not job.blocked_by:
            return job.state.terminal
        deps = await self.kv.batch_read([keys.job(d) for d in job.blocked_by])
        states = {d: decode_job(kv.value).state if kv else JobState.DEAD for d, kv in zip(job.blocked_by, deps)}
        failed = next((d for d, s in states.items() if s in FAILING_STATES), None)
        still = [d for d, s in states.items() if s != JobState.SUCCEEDED]

        def change(current: Job):
            if current.state.terminal or current.blocked_by != job.blocked_by:
                return None  # someone else moved it; the next sweep re-checks
            if failed is not None:
                new = msgspec.structs.replace(
                    current,
                    state=JobState.FAILED,
                    finished_ms=now_ms(),
                    error=f"dependency {failed} is {states[failed]}",
                    error_code=ErrorCode.DEPENDENCY_FAILED,
                )
                return new, [DeleteOp(keys.blocked(job_id))]
            if still == current.blocked_by:
                return None
            new = msgspec.structs.replace(current, blocked_by=still)
            if still:
                return new, []
            return new, [DeleteOp(keys.blocked(job_id)), PutOp(ready_key_of(new), b"")]

        changed = await self._update(job_id, change)
        return changed is not None and changed[1].state.terminal

    async def sweep_blocked(self, limit: int = 500) -> None:
        """Re-check a page of blocked jobs: repairs a dependency resolution
        interrupted by a crash between a job's finish and its dependents."""
        page = await self.kv.scan(keys.BLOCKED, limit=limit, continuation=self._sweep_continuation)
        self._sweep_continuation = page.continuation_token if page.is_truncated else None
        ids = [e.key[len(keys.BLOCKED) :] for e in page.entries]
        if ids:
            await self._resolve_dependents(ids)
