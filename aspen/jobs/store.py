"""The durable job queue on a ``KeyValueStore``.

Every state change is one KV transaction that compares the job record's
``mod_revision`` (a real compare-and-swap, not Rust Aspen's read-compare-write
race), so concurrent pools, the reaper and clients never lose an update.
Claims carry the claiming pool's lease; completions carry the execution token
of the claim, so a worker whose claim expired (and was handed to someone
else) cannot complete the job a second time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.model import (
    FAILING_STATES,
    MAX_ERROR_HISTORY,
    MAX_INLINE_RESULT_BYTES,
    Job,
    JobSpec,
    JobState,
    Priority,
    WorkerInfo,
    check_job_id,
    decode_job,
    decode_livelog,
    decode_worker,
    encode,
)
from aspen.jobs.worker import OUTPUT_BLOBS, output_tag
from aspen.storage.pages import count_prefix
from aspen.storage.protocol import BlobStore, KeyValueStore
from aspen.storage.records import Compare, DeleteOp, KeyValue, PutOp

MAX_CAS_ATTEMPTS = 100
RANKS = tuple(sorted(p.rank for p in Priority))
_json = msgspec.json.Encoder()


_id_sequence = itertools.count()


def new_job_id() -> str:
    """Sortable by creation time: 12 hex digits of ms, a per-process
    sequence (creation order within a millisecond), 8 random."""
    return f"{now_ms():012x}{next(_id_sequence) & 0xFFFF:04x}{secrets.token_hex(4)}"


def _exists(key: str) -> Compare:
    return Compare(key, "exists", "==", True)


def _absent(key: str) -> Compare:
    return Compare(key, "exists", "==", False)


def _unchanged(key: str, kv: KeyValue | None) -> Compare:
    return Compare(key, "mod_revision", "==", kv.mod_revision if kv else 0)


def _state_ops(old: Job | None, new: Job) -> list[PutOp | DeleteOp]:
    """The state index, and the submitter's index of unfinished jobs (its quota)."""
    if old is not None and old.state == new.state:
        return []
    ops: list[PutOp | DeleteOp] = [PutOp(keys.state(new.state, new.id), new.type.encode())]
    if old is not None:
        ops.insert(0, DeleteOp(keys.state(old.state, old.id)))
    was_open = old is not None and not old.state.terminal
    if new.submitter is not None and was_open != (not new.state.terminal):
        owned = keys.unfinished(new.submitter, new.id)
        ops.append(DeleteOp(owned) if new.state.terminal else PutOp(owned, b""))
    return ops


def _ready_key(job: Job) -> str:
    return keys.ready(job.type, job.priority.rank, job.run_at_ms, job.id)


class JobStore:
    """Submit, claim, complete, fail, cancel, retry; the reaper and the
    dependency sweep. Stateless: any number of instances in any number of
    processes may share one KV store."""

    def __init__(self, kv: KeyValueStore, blobs: BlobStore | None = None) -> None:
        self.kv = kv
        self.blobs = blobs
        self._sweep_continuation: str | None = None

    # --- reads --------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        kv = await self.kv.get(keys.job(check_job_id(job_id)))
        if kv is None:
            raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
        return decode_job(kv.value)

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

    async def read_result(self, job: Job) -> Any:
        if job.result_blob is None:
            return job.result
        if self.blobs is None:
            raise AspenError(ErrorCode.UNAVAILABLE, "the result is in a blob and this node has no blob store")
        return msgspec.json.decode(await self.blobs.get_bytes(job.result_blob))

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
                await self.kv.batch_read([keys.job(d) for d in spec.depends_on] + [keys.dependents(d) for d in spec.depends_on])
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
            compares = [_absent(keys.job(job_id)), *(_unchanged(keys.job(d), kv) for d, kv in zip(spec.depends_on, deps))]
            ops: list[PutOp | DeleteOp] = []
            if failed_dep is not None:
                job = msgspec.structs.replace(
                    job,
                    state=JobState.FAILED,
                    finished_ms=now,
                    error=f"dependency {failed_dep.id} is {failed_dep.state}",
                    error_code="DEPENDENCY_FAILED",
                )
            elif blocked_by:
                ops.append(PutOp(keys.blocked(job_id), b""))
                for dep_id, lst in zip(spec.depends_on, dep_lists):
                    if dep_id in blocked_by:
                        current = msgspec.json.decode(lst.value) if lst else []
                        compares.append(_unchanged(keys.dependents(dep_id), lst))
                        ops.append(PutOp(keys.dependents(dep_id), _json.encode([*current, job_id])))
            else:
                ops.append(PutOp(_ready_key(job), b""))
            ops += [PutOp(keys.job(job_id), encode(job)), *_state_ops(None, job)]
            result = await self.kv.transaction(compares, ops)
            if result.succeeded:
                return job
        raise AspenError(ErrorCode.UNAVAILABLE, "could not submit: too much contention on its dependencies")

    # --- the generic compare-and-swap update --------------------------------

    async def _update(
        self,
        job_id: str,
        change: Callable[[Job], tuple[Job, list[PutOp | DeleteOp]] | None],
        compares: Callable[[Job], Sequence[Compare]] = lambda job: (),
    ) -> tuple[Job, Job] | None:
        """Apply ``change`` (which raises to refuse, or returns None for no-op)
        until the transaction wins. Returns (old, new)."""
        key = keys.job(check_job_id(job_id))
        for _ in range(MAX_CAS_ATTEMPTS):
            kv = await self.kv.get(key)
            if kv is None:
                raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
            old = decode_job(kv.value)
            changed = change(old)
            if changed is None:
                return None
            new, ops = changed
            new = msgspec.structs.replace(new, updated_ms=now_ms())
            result = await self.kv.transaction(
                [_unchanged(key, kv), *compares(old)],
                [PutOp(key, encode(new)), *_state_ops(old, new), *ops],
            )
            if result.succeeded:
                return old, new
        raise AspenError(ErrorCode.UNAVAILABLE, f"job {job_id}: too much contention")

    # --- claiming -----------------------------------------------------------

    async def claim(self, worker_id: str, lease: int, wants: dict[str, int]) -> list[Job]:
        """Claim up to ``wants[type]`` due jobs per type, highest priority
        first. Each claim is one transaction that deletes the ready key, so
        exactly one pool wins it; a batch of claims is sent concurrently
        (the embedded store commits them together)."""
        claimed: list[Job] = []
        wants = {t: n for t, n in wants.items() if n > 0}
        now = now_ms()
        for rank in RANKS:
            for job_type in list(wants):
                if wants[job_type] <= 0:
                    continue
                page = await self.kv.scan(
                    start=keys.ready_prefix(job_type, rank),
                    end=keys.ready_until(job_type, rank, now),
                    limit=wants[job_type] + 8,
                )
                entries = [e.key for e in page.entries]
                while entries and wants[job_type] > 0:
                    batch, entries = entries[: wants[job_type]], entries[wants[job_type] :]
                    records = await self.kv.batch_read([keys.job(keys.parse_ready(k)[3]) for k in batch])
                    won = [
                        job
                        for job in await asyncio.gather(
                            *(self._claim_one(k, kv, worker_id, lease) for k, kv in zip(batch, records))
                        )
                        if job is not None
                    ]
                    claimed += won
                    wants[job_type] -= len(won)
                    if len(won) < len(batch):
                        # Lost races: another pool works the head of this queue,
                        # so spread out instead of following it key by key.
                        random.shuffle(entries)
        return claimed

    async def _claim_one(self, ready_key: str, kv: KeyValue | None, worker_id: str, lease: int) -> Job | None:
        job_id = keys.parse_ready(ready_key)[3]
        if kv is None:
            await self.kv.transaction([_exists(ready_key), _absent(keys.job(job_id))], [DeleteOp(ready_key)])
            return None
        old = decode_job(kv.value)
        if old.state not in (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING) or _ready_key(old) != ready_key:
            # A stale index entry (its job moved on): drop it unless the record changes meanwhile.
            await self.kv.transaction([_unchanged(keys.job(job_id), kv)], [DeleteOp(ready_key)])
            return None
        attempt = old.attempts + 1
        token = f"{attempt}.{secrets.token_hex(8)}"
        now = now_ms()
        new = msgspec.structs.replace(
            old,
            state=JobState.RUNNING,
            attempts=attempt,
            token=token,
            worker_id=worker_id,
            started_ms=now,
            updated_ms=now,
            progress=0.0,
            progress_message=None,
        )
        result = await self.kv.transaction(
            [_exists(ready_key), _unchanged(keys.job(job_id), kv)],
            [
                DeleteOp(ready_key),
                PutOp(keys.job(job_id), encode(new)),
                PutOp(keys.claim(job_id), token.encode(), lease=lease),
                PutOp(keys.running(job_id), token.encode()),
                *_state_ops(old, new),
            ],
        )
        return new if result.succeeded else None

    async def next_due_ms(self, job_types: Iterable[str]) -> int | None:
        """The earliest ``run_at`` of any ready job of these types (due or not)."""
        best: int | None = None
        for job_type in job_types:
            for rank in RANKS:
                page = await self.kv.scan(keys.ready_prefix(job_type, rank), limit=1)
                if page.entries:
                    run_at = keys.parse_ready(page.entries[0].key)[2]
                    best = run_at if best is None else min(best, run_at)
        return best

    # --- the worker's side of a claim ---------------------------------------

    def _check_token(self, job: Job, token: str) -> None:
        if job.state != JobState.RUNNING or job.token != token:
            raise AspenError(
                ErrorCode.STALE_EXECUTION,
                f"job {job.id} is no longer held by this execution (state {job.state})",
                id=job.id,
                state=job.state,
            )

    async def progress(self, job_id: str, token: str, percent: float, message: str | None = None) -> None:
        if not 0.0 <= percent <= 100.0:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "progress must be 0..100")

        def change(job: Job):
            self._check_token(job, token)
            return msgspec.structs.replace(job, progress=percent, progress_message=message), []

        await self._update(job_id, change)

    async def complete(self, job_id: str, token: str, result: Any = None, *, log_blob: str | None = None) -> Job:
        """Record success (once: a stale token raises ``STALE_EXECUTION``)
        and release the dependents this unblocks."""
        raw = _json.encode(result)
        inline, blob = result, None
        if len(raw) > MAX_INLINE_RESULT_BYTES:
            if self.blobs is None:
                raise AspenError(ErrorCode.UNAVAILABLE, "result too large to keep inline and no blob store")
            blob = (await self.blobs.add_bytes(raw)).hash
            await self.blobs.protect(blob, f"job-result:{job_id}")
            inline = None
        return await self._finish(
            job_id,
            token,
            lambda job: msgspec.structs.replace(
                job,
                state=JobState.SUCCEEDED,
                result=inline,
                result_blob=blob,
                log_blob=log_blob or job.log_blob,
                progress=100.0,
                error=None,
                error_code=None,
            ),
        )

    async def fail(
        self,
        job_id: str,
        token: str,
        error: str,
        *,
        code: str = "JOB_FAILED",
        retryable: bool = True,
        log_blob: str | None = None,
    ) -> Job:
        """Record a failed attempt: back to the queue after the backoff while
        retries remain, else ``dead`` (or ``failed`` when not retryable)."""

        def next_state(job: Job) -> Job:
            errors = [*job.errors, f"attempt {job.attempts}: {code}: {error}"][-MAX_ERROR_HISTORY:]
            common = dict(error=error, error_code=code, errors=errors, log_blob=log_blob or job.log_blob)
            if retryable and job.attempts <= job.retry.max_retries:
                run_at = now_ms() + job.retry.delay_ms(job.attempts)
                return msgspec.structs.replace(job, state=JobState.RETRYING, run_at_ms=run_at, **common)
            return msgspec.structs.replace(job, state=JobState.DEAD if retryable else JobState.FAILED, **common)

        return await self._finish(job_id, token, next_state)

    async def _finish(self, job_id: str, token: str, next_state: Callable[[Job], Job]) -> Job:
        key = keys.job(check_job_id(job_id))
        for _ in range(MAX_CAS_ATTEMPTS):
            kv, deps_kv = await self.kv.batch_read([key, keys.dependents(job_id)])
            if kv is None:
                raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
            old = decode_job(kv.value)
            self._check_token(old, token)
            now = now_ms()
            new = msgspec.structs.replace(next_state(old), token=None, updated_ms=now)
            if new.state.terminal:
                new = msgspec.structs.replace(new, finished_ms=now)
            ops: list[PutOp | DeleteOp] = [
                PutOp(key, encode(new)),
                DeleteOp(keys.claim(job_id)),
                DeleteOp(keys.running(job_id)),
                DeleteOp(keys.livelog(job_id)),
                *_state_ops(old, new),
            ]
            if not new.state.terminal:
                ops.append(PutOp(_ready_key(new), b""))
            # Comparing the dependents list too makes it authoritative: a
            # dependent submitted meanwhile makes this transaction retry.
            result = await self.kv.transaction([_unchanged(key, kv), _unchanged(keys.dependents(job_id), deps_kv)], ops)
            if result.succeeded:
                if new.state.terminal and deps_kv is not None:
                    await self._resolve_dependents(msgspec.json.decode(deps_kv.value))
                return new
        raise AspenError(ErrorCode.UNAVAILABLE, f"job {job_id}: too much contention")

    # --- client operations --------------------------------------------------

    async def cancel(self, job_id: str, reason: str = "cancelled") -> Job:
        """Cancel a job that has not finished. A running job's claim is
        deleted, which tells its worker (watching claims) to stop it."""

        def change(job: Job):
            if job.state.terminal:
                raise AspenError(ErrorCode.INVALID_STATE, f"job {job_id} already {job.state}", state=job.state)
            new = msgspec.structs.replace(
                job, state=JobState.CANCELLED, token=None, finished_ms=now_ms(), error=reason, error_code="CANCELLED"
            )
            return new, [
                DeleteOp(_ready_key(job)),
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
            return new, [PutOp(_ready_key(new), b"")]

        _, new = await self._update(job_id, change)  # type: ignore[misc]
        return new

    # --- dependencies -------------------------------------------------------

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
                    error_code="DEPENDENCY_FAILED",
                )
                return new, [DeleteOp(keys.blocked(job_id))]
            if still == current.blocked_by:
                return None
            new = msgspec.structs.replace(current, blocked_by=still)
            if still:
                return new, []
            return new, [DeleteOp(keys.blocked(job_id)), PutOp(_ready_key(new), b"")]

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

    # --- retention ----------------------------------------------------------

    async def collect_finished(self, before_ms: int, limit: int = 500) -> list[str]:
        """Delete up to ``limit`` jobs that finished before ``before_ms``, with
        their index keys, and release their log and result blobs (deleted
        unless another tag still protects the same bytes). Ids sort by
        creation time and a job finishes after it is created, so only ids
        created before the cutoff are scanned."""
        collected: list[str] = []
        for state in sorted(s for s in JobState if s.terminal):
            if len(collected) >= limit:
                break
            prefix = keys.state_prefix(state)
            end = f"{prefix}{max(0, before_ms):012x}"
            page = await self.kv.scan(start=prefix, end=end, limit=limit - len(collected))
            ids = [e.key[len(prefix) :] for e in page.entries]
            records = await self.kv.batch_read([keys.job(i) for i in ids]) if ids else []
            for job_id, kv in zip(ids, records):
                job = decode_job(kv.value) if kv is not None else None
                if job is not None and (not job.state.terminal or (job.finished_ms or job.updated_ms) >= before_ms):
                    continue
                ops = [DeleteOp(keys.state(state, job_id)), DeleteOp(keys.dependents(job_id))]
                if kv is not None:
                    ops.append(DeleteOp(keys.job(job_id)))
                result = await self.kv.transaction([_unchanged(keys.job(job_id), kv)], ops)
                if result.succeeded:
                    collected.append(job_id)
                    if job is not None:
                        await self._release_blobs(job)
        return collected

    async def _release_blobs(self, job: Job) -> None:
        if self.blobs is None:
            return
        tagged = [(f"job-log:{job.id}", job.log_blob)]
        with suppress(AspenError, msgspec.DecodeError):  # a result that is gone or is not JSON holds no outputs
            result = await self.read_result(job)
            if isinstance(result, dict) and isinstance(result.get(OUTPUT_BLOBS), dict):
                tagged += [(output_tag(job.id, n), h) for n, h in result[OUTPUT_BLOBS].items() if isinstance(h, str)]
        tagged.append((f"job-result:{job.id}", job.result_blob))
        for tag, blob in tagged:
            if blob is None:
                continue
            await self.blobs.unprotect(tag)
            try:
                await self.blobs.delete(blob)
            except AspenError as exc:
                if exc.code not in (ErrorCode.BLOB_PROTECTED, ErrorCode.BLOB_NOT_FOUND):
                    raise

    # --- recovery of expired claims -----------------------------------------

    async def reap(self, limit: int = 1000) -> list[str]:
        """Return jobs whose claim expired (their pool died or stalled) to the
        queue: at-least-once. Counts as an attempt, so a job that keeps
        killing its workers ends dead instead of looping forever."""
        page = await self.kv.scan(keys.RUNNING, limit=limit)
        if not page.entries:
            return []
        claims = await self.kv.batch_read([keys.claim(e.key[len(keys.RUNNING) :]) for e in page.entries])
        reaped: list[str] = []
        for entry, claim in zip(page.entries, claims):
            if claim is not None and claim.value == entry.value:
                continue
            job_id = entry.key[len(keys.RUNNING) :]
            token = entry.value.decode()
            try:
                await self.fail(job_id, token, "the worker holding the claim stopped heartbeating", code="WORKER_LOST")
                reaped.append(job_id)
            except AspenError as exc:
                if exc.code not in (ErrorCode.STALE_EXECUTION, ErrorCode.JOB_NOT_FOUND):
                    raise
                # The record moved on: drop the orphaned index entry.
                await self.kv.transaction(
                    [Compare(entry.key, "mod_revision", "==", entry.mod_revision)], [DeleteOp(entry.key)]
                )
        return reaped
