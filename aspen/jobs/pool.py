"""``WorkerPool``: claims jobs for its workers and runs them.

One pool per process (or node) holds one KV lease: its registration and all
its claims hang off it, so one keepalive per heartbeat covers every running
job, and a dead process loses all its claims at once when the lease expires.
The reaper (any pool runs it) then returns those jobs to the queue.

Each job's log is kept (as a blob) up to ``output_limit`` bytes; finished
jobs older than ``retention_seconds`` are collected with their logs.

Wake-up: a watch on the ready index wakes the claim loop as soon as work is
queued anywhere; a bounded poll (and the earliest ``run_at``) covers delayed
jobs, retries and a watch that lags.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
import time
from contextlib import suppress
from pathlib import Path
from typing import Any, Self

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.job_records import new_job_id
from aspen.jobs.model import Job, JobFailure, LiveLog, WorkerInfo, encode
from aspen.jobs.output import DEFAULT_OUTPUT_LIMIT, cap_file
from aspen.jobs.store import JobStore
from aspen.jobs.worker import JobContext, Worker
from aspen.storage.records import Compare, PutOp

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 4
LIVE_LOG_INTERVAL = 1.0
LIVE_LOG_TAIL = 64 * 1024
# Codes that retrying cannot fix.
PERMANENT_CODES = frozenset(
    {ErrorCode.INVALID_JOB, ErrorCode.EXECUTOR_UNAVAILABLE, ErrorCode.UNKNOWN_JOB_TYPE, ErrorCode.QUOTA_EXCEEDED}
)
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600.0
COLLECT_INTERVAL = 60.0


class WorkerPool:
    """Routes claimed jobs to workers by type, at most ``concurrency`` jobs
    per worker at a time."""

    def __init__(
        self,
        store: JobStore,
        workers: list[Worker],
        *,
        worker_id: str | None = None,
        node_id: str | None = None,
        lease_ttl: int = 10,
        poll_interval: float = 1.0,
        maintenance_interval: float = 1.0,
        log_dir: str | os.PathLike[str] | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        retention_seconds: float = DEFAULT_RETENTION_SECONDS,
        collect_interval: float = COLLECT_INTERVAL,
    ) -> None:
        self.store = store
        self.kv = store.kv
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{new_job_id()[-6:]}"
        self.node_id = node_id
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.maintenance_interval = maintenance_interval
        self._log_dir = Path(log_dir) if log_dir else Path(tempfile.gettempdir()) / "aspen-job-logs"
        self.output_limit = output_limit
        self.retention_seconds = retention_seconds
        self.collect_interval = collect_interval
        self._routes: dict[str, Worker] = {}
        self._limits: dict[Worker, int] = {}
        for worker in workers:
            self._limits[worker] = max(1, int(getattr(worker, "concurrency", DEFAULT_CONCURRENCY)))
            for job_type in worker.job_types:
                if job_type in self._routes:
                    raise AspenError(ErrorCode.INVALID_ARGUMENT, f"two workers for job type {job_type!r}")
                self._routes[job_type] = worker
        self._busy: dict[Worker, int] = {w: 0 for w in self._limits}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tokens: dict[str, str] = {}
        self._contexts: dict[str, JobContext] = {}
        self._lost: set[str] = set()  # job ids whose claim vanished (cancel, lease loss)
        self._finishing: set[str] = set()  # our own completion deletes the claim: not a cancel
        self._wake = asyncio.Event()
        self._lease = 0
        self._started_ms = now_ms()
        self._processed = 0
        self._failed = 0
        self._stopping = False
        self._loops: list[asyncio.Task[None]] = []

    @property
    def job_types(self) -> frozenset[str]:
        return frozenset(self._routes)

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        await self._register()
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._heartbeat_loop(), name="jobs-heartbeat"),
            asyncio.create_task(self._watch_ready(), name="jobs-watch-ready"),
            asyncio.create_task(self._watch_claims(), name="jobs-watch-claims"),
            asyncio.create_task(self._maintenance_loop(), name="jobs-maintenance"),
            asyncio.create_task(self._live_log_loop(), name="jobs-live-log"),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming, give running jobs ``grace`` seconds, then cancel
        them; revoking the lease hands unfinished jobs back at once."""
        self._stopping = True
        self._wake.set()
        claim_loop = self._loops[0] if self._loops else None
        if claim_loop is not None:  # no new claims from here on
            claim_loop.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await claim_loop
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=5.0)
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with suppress(asyncio.CancelledError, Exception):
                await task
        for worker in self._limits:
            close = getattr(worker, "close", None)
            if close is not None:
                with suppress(Exception):
                    await close()
        with suppress(AspenError):
            await self.kv.lease_revoke(self._lease)
        with suppress(AspenError):
            await self.store.reap()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- registration and heartbeat -----------------------------------------

    def _info(self) -> WorkerInfo:
        return WorkerInfo(
            worker_id=self.worker_id,
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            job_types=sorted(self._routes),
            concurrency={t: self._limits[w] for t, w in sorted(self._routes.items())},
            running=sorted(self._tasks),
            started_ms=self._started_ms,
            heartbeat_ms=now_ms(),
            processed=self._processed,
            failed=self._failed,
            details={k: v for w in self._limits for k, v in (getattr(w, "details", None) or {}).items()},
        )

    async def _register(self) -> None:
        self._lease = (await self.kv.lease_grant(self.lease_ttl)).id
        await self.kv.put(keys.worker(self.worker_id), encode(self._info()), lease=self._lease)

    async def _heartbeat_loop(self) -> None:
        interval = max(0.2, self.lease_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                try:
                    await self.kv.lease_keepalive(self._lease)
                except AspenError as exc:
                    if exc.code != ErrorCode.LEASE_NOT_FOUND:
                        raise
                    log.warning("worker %s lost its lease; its claims are void", self.worker_id)
                    self._abandon(list(self._tasks))
                    await self._register()
                    continue
                await self.kv.put(keys.worker(self.worker_id), encode(self._info()), lease=self._lease)
                await self._check_claims()
            except Exception as exc:  # noqa: BLE001 - keep heartbeating through transient storage errors
                log.warning("heartbeat of %s failed: %s", self.worker_id, exc)

    async def _check_claims(self) -> None:
        """Fallback for the claim watch: stop executions whose claim is gone."""
        ids = list(self._tokens)
        if not ids:
            return
        claims = await self.kv.batch_read([keys.claim(i) for i in ids])
        self._abandon([i for i, c in zip(ids, claims) if c is None or c.value.decode() != self._tokens.get(i)])

    def _abandon(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if task is not None and job_id not in self._lost:
                self._lost.add(job_id)
                task.cancel()

    # --- watches and maintenance --------------------------------------------

    async def _watch_ready(self) -> None:
        while True:
            try:
                async for event in self.kv.watch(keys.READY):
                    if event.type == "put" and keys.parse_ready(event.kv.key)[0] in self._routes:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
                log.warning("ready watch failed, restarting: %s", exc)
                self._wake.set()
                await asyncio.sleep(self.poll_interval)

    async def _watch_claims(self) -> None:
        """A deleted claim of a job we run means cancel or a lost lease."""
        while True:
            try:
                async for event in self.kv.watch(keys.CLAIM):
                    if event.type == "delete":
                        job_id = event.kv.key[len(keys.CLAIM) :]
                        if job_id in self._tokens and job_id not in self._finishing:
                            self._abandon([job_id])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
                log.warning("claim watch failed, restarting: %s", exc)
                await asyncio.sleep(self.poll_interval)

    async def _maintenance_loop(self) -> None:
        collected_at = 0.0
        while True:
            await asyncio.sleep(self.maintenance_interval)
            try:
                if await self.store.reap():
                    self._wake.set()
                await self.store.sweep_blocked()
                if time.monotonic() - collected_at >= self.collect_interval:
                    collected_at = time.monotonic()
                    gone = await self.store.collect_finished(now_ms() - int(self.retention_seconds * 1000))
                    if gone:
                        log.info("collected %d finished jobs older than %.0f s", len(gone), self.retention_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
                log.warning("job maintenance failed: %s", exc)

    async def _live_log_loop(self) -> None:
        """Publish the tail of each running job's log, for ``logs --follow``."""
        published: dict[str, int] = {}
        while True:
            await asyncio.sleep(LIVE_LOG_INTERVAL)
            for job_id, ctx in list(self._contexts.items()):
                size = ctx.log_size()
                if size == published.get(job_id) or job_id in self._finishing:
                    continue
                try:
                    tail = await asyncio.to_thread(_read_tail, ctx.log_path, LIVE_LOG_TAIL)
                    await self.kv.transaction(
                        [Compare(keys.claim(job_id), "value", "==", ctx.token.encode())],
                        [PutOp(keys.livelog(job_id), encode(LiveLog(size=size, tail=tail)), lease=self._lease)],
                    )
                    published[job_id] = size
                except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
                    log.debug("live log of %s not published: %s", job_id, exc)
            for job_id in set(published) - set(self._contexts):
                del published[job_id]

    # --- claiming and running -----------------------------------------------

    async def _claim_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            wants: dict[str, int] = {}
            for job_type, worker in self._routes.items():
                free = self._limits[worker] - self._busy[worker]
                if free > 0:
                    wants[job_type] = free
            claimed: list[Job] = []
            ready = False
            if wants:
                try:
                    ready = await self.store.anything_ready()  # one read while idle
                    if ready:
                        claimed = await self.store.claim(self.worker_id, self._lease, wants)
                except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
                    log.warning("claim failed: %s", exc)
            for job in claimed:
                self._start(job)
            if claimed:
                continue
            timeout = self.poll_interval
            if ready:
                with suppress(Exception):
                    due = await self.store.next_due_ms(wants)
                    if due is not None:
                        timeout = min(timeout, max(0.0, (due - now_ms()) / 1000))
            with suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel in 3.11
                    await self._wake.wait()

    def _start(self, job: Job) -> None:
        worker = self._routes[job.type]
        self._busy[worker] += 1
        self._tokens[job.id] = job.token or ""
        self._tasks[job.id] = asyncio.create_task(self._run(worker, job), name=f"job-{job.id}")

    async def _run(self, worker: Worker, job: Job) -> None:
        token = job.token or ""
        log_path = self._log_dir / f"{job.id}.{job.attempts}.log"
        ctx = JobContext(
            job, token, self.worker_id, self.kv, self.store.blobs, log_path, self.store.progress, self.output_limit
        )
        self._contexts[job.id] = ctx
        outcome: tuple[str, Any] | None = None
        started = time.monotonic()
        try:
            async with asyncio.timeout(job.timeout_ms / 1000):
                result = await worker.execute(job, ctx)
            outcome = ("ok", result)
        except TimeoutError:
            outcome = ("fail", JobFailure(f"timed out after {job.timeout_ms} ms", code=ErrorCode.TIMEOUT))
        except asyncio.CancelledError:
            if job.id not in self._lost and not self._stopping:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if self._stopping and job.id not in self._lost:
                outcome = ("fail", JobFailure("the worker pool shut down", code=ErrorCode.WORKER_STOPPED))
        except JobFailure as exc:
            outcome = ("fail", exc)
        except AspenError as exc:
            outcome = ("fail", JobFailure(exc.message, code=exc.code, retryable=exc.code not in PERMANENT_CODES))
        except Exception as exc:
            log.exception("job %s (%s) raised", job.id, job.type)
            outcome = ("fail", JobFailure(f"{type(exc).__name__}: {exc}", code=ErrorCode.WORKER_ERROR))
        finally:
            self._finishing.add(job.id)
        try:
            if outcome is not None:
                await self._report(job, token, outcome, ctx, time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - a supervision loop: log and go on, never die
            log.warning("could not record the outcome of job %s: %s", job.id, exc)
        finally:
            with suppress(FileNotFoundError):
                log_path.unlink()
            self._finishing.discard(job.id)
            self._lost.discard(job.id)
            self._tokens.pop(job.id, None)
            self._contexts.pop(job.id, None)
            self._tasks.pop(job.id, None)
            self._busy[worker] -= 1
            self._wake.set()

    async def _report(self, job: Job, token: str, outcome: tuple[str, Any], ctx: JobContext, took: float) -> None:
        log_blob = None
        dropped = 0
        if ctx.log_size() > self.output_limit:  # a cheap stat first: most logs are small
            dropped = await asyncio.to_thread(cap_file, ctx.log_path, self.output_limit)
        if dropped:
            log.warning("job %s: output over %d bytes, %d bytes dropped", job.id, self.output_limit, dropped)
        if self.store.blobs is not None and ctx.log_size() > 0:
            log_blob = (await self.store.blobs.add_file(str(ctx.log_path))).hash
            await self.store.blobs.protect(log_blob, f"job-log:{job.id}")
        kind, value = outcome
        try:
            if kind == "ok":
                await self.store.complete(job.id, token, value, log_blob=log_blob)
                self._processed += 1
            else:
                failure: JobFailure = value
                await self.store.fail(
                    job.id, token, failure.message, code=failure.code, retryable=failure.retryable, log_blob=log_blob
                )
                self._failed += 1
        except AspenError as exc:
            if exc.code != ErrorCode.STALE_EXECUTION:
                raise
            log.info("job %s: late outcome after %.1fs dropped (%s)", job.id, took, exc.message)


def _read_tail(path: Path, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - size))
        return f.read()
