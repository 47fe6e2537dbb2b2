"""Claims: a pool takes due jobs (one transaction each, carrying the pool's
lease), reports progress, completes or fails them with the claim's execution
token, and the reaper returns jobs whose claim expired."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.dependencies import JobDependencies
from aspen.jobs.job_records import (
    MAX_CAS_ATTEMPTS,
    absent,
    encode_json,
    exists,
    ready_key_of,
    state_ops,
    unchanged,
)
from aspen.jobs.model import (
    MAX_ERROR_HISTORY,
    MAX_INLINE_RESULT_BYTES,
    Job,
    JobState,
    Priority,
    check_job_id,
    decode_job,
    encode,
)
from aspen.storage.records import Compare, DeleteOp, KeyValue, PutOp

RANKS = tuple(sorted(p.rank for p in Priority))


class JobClaims(JobDependencies):
    """The pool's side of the queue; finishing a job resolves its dependents."""

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
            await self.kv.transaction([exists(ready_key), absent(keys.job(job_id))], [DeleteOp(ready_key)])
            return None
        old = decode_job(kv.value)
        if old.state not in (JobState.PENDING, JobState.SCHEDULED, JobState.RETRYING) or ready_key_of(old) != ready_key:
            # A stale index entry (its job moved on): drop it unless the record changes meanwhile.
            await self.kv.transaction([unchanged(keys.job(job_id), kv)], [DeleteOp(ready_key)])
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
            [exists(ready_key), unchanged(keys.job(job_id), kv)],
            [
                DeleteOp(ready_key),
                PutOp(keys.job(job_id), encode(new)),
                PutOp(keys.claim(job_id), token.encode(), lease=lease),
                PutOp(keys.running(job_id), token.encode()),
                *state_ops(old, new),
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

    async def anything_ready(self) -> bool:
        """Whether any job of any type is ready: one read, for a claim loop to
        skip its scan per (type, rank) while the queues are empty."""
        return bool((await self.kv.scan(keys.READY, limit=1)).entries)

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
        raw = encode_json(result)
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
        code: str = ErrorCode.JOB_FAILED,
        retryable: bool = True,
        log_blob: str | None = None,
    ) -> Job:
        """Record a failed attempt: back to the queue after the backoff while
        retries remain, else ``dead`` (or ``failed`` when not retryable)."""

        def next_state(job: Job) -> Job:
            errors = [*job.errors, f"attempt {job.attempts}: {code}: {error}"][-MAX_ERROR_HISTORY:]
            common = {"error": error, "error_code": code, "errors": errors, "log_blob": log_blob or job.log_blob}
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
                *state_ops(old, new),
            ]
            if not new.state.terminal:
                ops.append(PutOp(ready_key_of(new), b""))
            # Comparing the dependents list too makes it authoritative: a
            # dependent submitted meanwhile makes this transaction retry.
            result = await self.kv.transaction([unchanged(key, kv), unchanged(keys.dependents(job_id), deps_kv)], ops)
            if result.succeeded:
                if new.state.terminal and deps_kv is not None:
                    await self._resolve_dependents(msgspec.json.decode(deps_kv.value))
                return new
        raise AspenError(ErrorCode.UNAVAILABLE, f"job {job_id}: too much contention")

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
                await self.fail(
                    job_id, token, "the worker holding the claim stopped heartbeating", code=ErrorCode.WORKER_LOST
                )
                reaped.append(job_id)
            except AspenError as exc:
                if exc.code not in (ErrorCode.STALE_EXECUTION, ErrorCode.JOB_NOT_FOUND):
                    raise
                # The record moved on: drop the orphaned index entry.
                await self.kv.transaction(
                    [Compare(entry.key, "mod_revision", "==", entry.mod_revision)], [DeleteOp(entry.key)]
                )
        return reaped
