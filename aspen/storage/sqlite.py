"""The embedded KV backend: one SQLite file in WAL mode, etcd semantics.

A write is acknowledged only once its transaction is committed with
``synchronous=FULL`` (fsynced); concurrent writes share one commit (see
:mod:`aspen.storage.sqlite_threads`). Watchers read the ``events`` table by
cursor: a commit in this process wakes them at once, and they also poll at a
short interval so that writes made by another process on the same file
(two nodes sharing one database) reach them too. Leases expire through a
background task that revokes them like ``lease_revoke`` does, emitting
delete events.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.storage import limits
from aspen.storage import sqlite_ops as ops
from aspen.storage.records import (
    CasResult,
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    LeaseInfo,
    PutOp,
    RangeOp,
    ScanPage,
    TxnOp,
    TxnResult,
    WatchEvent,
    WriteOp,
)
from aspen.storage.sqlite_threads import GroupCommitWriter, ReadThread, connect

log = logging.getLogger(__name__)

DEFAULT_EVENT_RETENTION = 100_000
_WATCH_BATCH = 1000



class SqliteKeyValueStore:
    """:class:`aspen.storage.protocol.KeyValueStore` on one SQLite file.

    Open with :meth:`open`; the store belongs to the event loop it was opened on."""

    def __init__(
        self,
        wconn: sqlite3.Connection,
        rconn: sqlite3.Connection,
        revision: int,
        *,
        event_retention: int,
        watch_poll_interval: float,
        lease_check_interval: float,
    ) -> None:
        self._revision_seen = revision  # the newest revision this process knows of
        self._revision_committed = revision  # the newest revision this process wrote
        self._watch_wakeups: set[asyncio.Event] = set()
        self._poll = watch_poll_interval
        self._closed = False
        self._reader = ReadThread("aspen-kv-read", rconn, max_group=256)
        self._writer = GroupCommitWriter(
            "aspen-kv-write",
            wconn,
            max_group=512,
            read_revision=ops.read_revision,
            finish_group=ops.FinishGroup(event_retention),
            after_commit=self._after_commit,
        )
        self._expiry = asyncio.get_running_loop().create_task(self._expire_leases_forever(lease_check_interval))

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        event_retention: int = DEFAULT_EVENT_RETENTION,
        watch_poll_interval: float = 0.1,
        lease_check_interval: float = 0.5,
        busy_timeout: float = 30.0,
    ) -> SqliteKeyValueStore:
        """Open (creating if needed) the store at ``path``.

        ``durable=False`` trades the fsync per commit for speed (a crash may
        lose the last writes, never corrupt the file). ``event_retention`` is
        how many recent revisions of watch history are kept. Watchers poll
        the file every ``watch_poll_interval`` seconds for other processes'
        writes; leases are checked for expiry every ``lease_check_interval``."""
        if not isinstance(event_retention, int) or event_retention < 1:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "event_retention must be a positive integer")
        path = os.fspath(path)

        def setup() -> tuple[sqlite3.Connection, sqlite3.Connection, int]:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            conns: list[sqlite3.Connection] = []
            try:
                conns.append(connect(path, durable=durable, busy_timeout_s=busy_timeout))
                ops.create_schema(conns[0])
                conns.append(connect(path, durable=durable, busy_timeout_s=busy_timeout))
                conns[1].execute("PRAGMA query_only=1")  # the read thread never writes
                return conns[0], conns[1], ops.read_revision(conns[1])
            except BaseException:
                for conn in conns:
                    conn.close()
                raise

        try:
            wconn, rconn, revision = await asyncio.to_thread(setup)
        except Exception as exc:
            raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot open {path}: {exc}", path=path) from exc
        return cls(
            wconn,
            rconn,
            revision,
            event_retention=event_retention,
            watch_poll_interval=watch_poll_interval,
            lease_check_interval=lease_check_interval,
        )

    # --- plumbing -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise AspenError(ErrorCode.STORE_CLOSED, "the store is closed")

    async def _write(self, fn: Any, *args: Any) -> Any:
        self._check_open()
        return await self._writer.submit(fn, *args)

    async def _read(self, fn: Any, *args: Any) -> Any:
        self._check_open()
        return await self._reader.submit(fn, *args)

    def _after_commit(self, revision: int, outcomes: list) -> None:
        """On the loop, before callers see results: advance the revision this
        process knows of and wake the watchers."""
        if revision > self._revision_committed:
            self._revision_committed = revision
            self._revision_seen = max(self._revision_seen, revision)
            for wake in self._watch_wakeups:
                wake.set()
        for fut, result, exc in outcomes:
            if not fut.cancelled():
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(result)

    def _saw(self, revision: int) -> int:
        self._revision_seen = max(self._revision_seen, revision)
        return revision

    # --- reads ----------------------------------------------------------------

    # get and batch_read submit directly (no _read frame): they are the hot path.
    async def get(self, key: str) -> KeyValue | None:
        kb = limits.check_key(key)
        self._check_open()
        return await self._reader.submit(ops.get, kb)

    async def batch_read(self, keys: Sequence[str]) -> list[KeyValue | None]:
        keys = list(keys)
        limits.check_operation_count(len(keys), "keys")
        kbs = [limits.check_key(k) for k in keys]
        self._check_open()
        return await self._reader.submit(ops.get_many, kbs)

    async def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int = limits.DEFAULT_SCAN_LIMIT,
        continuation: str | None = None,
    ) -> ScanPage:
        limit = limits.check_limit(limit)
        lo, hi = limits.scan_bounds(prefix, start, end, continuation)
        if hi is not None and lo >= hi:
            return ScanPage(entries=[], is_truncated=False, continuation_token=None, revision=await self.current_revision())
        entries, more, revision = await self._read(ops.scan, lo, hi, limit)
        token = limits.encode_continuation(entries[-1].key.encode("utf-8")) if more else None
        return ScanPage(entries=entries, is_truncated=more, continuation_token=token, revision=self._saw(revision))

    async def current_revision(self) -> int:
        return self._saw(await self._read(ops.read_revision))

    # --- writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        args = (limits.check_key(key), limits.check_value(value), limits.check_lease_id(lease))
        return await self._write(ops.put, *args)

    async def delete(self, key: str) -> bool:
        return bool(await self._write(ops.delete_key, limits.check_key(key)))

    async def delete_prefix(self, prefix: str) -> int:
        lo = limits.check_prefix(prefix, allow_empty=False)
        return await self._write(ops.delete_range, lo, limits.prefix_end(lo))

    async def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> CasResult:
        kb = limits.check_key(key)
        exp = None if expected is None else limits.check_value(expected)
        ok, kv, revision = await self._write(ops.compare_and_swap, kb, exp, limits.check_value(new))
        return CasResult(succeeded=ok, actual=kv, revision=revision)

    async def compare_and_delete(self, key: str, expected: bytes) -> CasResult:
        kb = limits.check_key(key)
        ok, kv, revision = await self._write(ops.compare_and_swap, kb, limits.check_value(expected), None)
        return CasResult(succeeded=ok, actual=kv, revision=revision)

    async def batch_write(self, ops_: Sequence[WriteOp]) -> int:
        items = list(ops_)
        limits.check_operation_count(len(items))
        limits.check_distinct_writes(items)
        prepared = []
        for op in items:
            if isinstance(op, PutOp):
                prepared.append(("put", limits.check_key(op.key), limits.check_value(op.value), limits.check_lease_id(op.lease)))
            elif isinstance(op, DeleteOp):
                if op.prefix:
                    lo = limits.check_prefix(op.key, allow_empty=False)
                    prepared.append(("delete_prefix", lo, limits.prefix_end(lo), 0))
                else:
                    prepared.append(("delete", limits.check_key(op.key), None, 0))
            else:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"batch_write takes PutOp or DeleteOp, got {type(op).__name__}")
        return await self._write(ops.batch, prepared)

    async def transaction(
        self,
        compares: Sequence[Compare],
        on_success: Sequence[TxnOp] = (),
        on_failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        compares, on_success, on_failure = list(compares), list(on_success), list(on_failure)
        limits.check_ops_count(compares, on_success, on_failure)
        limits.check_distinct_writes(on_success)
        limits.check_distinct_writes(on_failure)
        checked = [(limits.check_compare(c), limits.check_key(c.key)) for c in compares]
        return await self._write(ops.transaction, checked, _txn_ops(on_success), _txn_ops(on_failure))

    async def compact(self, revision: int) -> None:
        """Forget watch history before ``revision``; watching from an older
        revision then raises COMPACTED."""
        if not isinstance(revision, int) or isinstance(revision, bool) or revision < 1:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"revision must be a positive integer, got {revision!r}")
        await self._write(ops.compact, revision)

    # --- leases ---------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> LeaseInfo:
        return await self._write(ops.lease_grant, limits.check_ttl(ttl), limits.check_lease_id(lease_id))

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        return await self._write(ops.lease_keepalive, limits.check_lease_id(lease_id, allow_zero=False))

    async def lease_revoke(self, lease_id: int) -> int:
        return await self._write(ops.lease_revoke, limits.check_lease_id(lease_id, allow_zero=False))

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo:
        lease_id = limits.check_lease_id(lease_id, allow_zero=False)
        return await self._read(functools.partial(ops.lease_info, with_keys=True), lease_id, now_ms())

    async def lease_list(self) -> list[LeaseInfo]:
        return await self._read(ops.lease_list, now_ms())

    async def _expire_leases_forever(self, interval: float) -> None:
        while not self._closed:
            await asyncio.sleep(interval)
            try:
                while await self._read(ops.has_expired_lease, now_ms()):
                    if not await self._write(ops.expire_leases, 100):
                        break
            except AspenError as exc:
                if exc.code == ErrorCode.STORE_CLOSED:
                    return
                log.warning("lease expiry failed: %s", exc)
            except Exception:  # keep expiring leases whatever one round hit
                log.exception("lease expiry failed")

    # --- watch ----------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Arguments are checked at once; ``COMPACTED`` comes from the first
        ``anext``. ``None`` starts after the newest revision this process has
        written or read, fixed when ``watch`` is called, so a write awaited
        before the call is never delivered and one made after it always is."""
        lo = limits.check_prefix(prefix)
        if start_revision is not None:
            limits.check_revision(start_revision)
        self._check_open()
        start = self._revision_seen + 1 if start_revision is None else start_revision
        return self._watch(lo, limits.prefix_end(lo) if lo else None, start)

    async def _watch(self, lo: bytes, hi: bytes | None, start: int) -> AsyncIterator[WatchEvent]:
        wake = asyncio.Event()
        self._watch_wakeups.add(wake)
        try:
            cursor: int | None = None
            covered = start - 1
            while True:
                wake.clear()
                cursor, covered, events = await self._read(ops.read_events, cursor, covered, start, lo, hi, _WATCH_BATCH)
                for event in events:
                    yield event
                if len(events) < _WATCH_BATCH:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                    # cancellation that races the wake-up, and a watch must stop
                    # when its consumer is cancelled.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._poll):
                            await wake.wait()
        finally:
            self._watch_wakeups.discard(wake)

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued operations, stop the threads; watchers then fail with STORE_CLOSED."""
        if self._closed:
            return
        self._closed = True
        self._expiry.cancel()
        try:
            await self._expiry
        except asyncio.CancelledError:
            pass
        await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._reader.stop)
        for wake in self._watch_wakeups:
            wake.set()

    async def __aenter__(self) -> SqliteKeyValueStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _txn_ops(items: list[TxnOp]) -> list[tuple[TxnOp, bytes, bytes | None]]:
    """Validate transaction ops; each comes back with its key or range bounds."""
    out: list[tuple[TxnOp, bytes, bytes | None]] = []
    for op in items:
        if isinstance(op, PutOp):
            limits.check_value(op.value)
            limits.check_lease_id(op.lease)
            out.append((op, limits.check_key(op.key), None))
        elif isinstance(op, DeleteOp):
            if op.prefix:
                lo = limits.check_prefix(op.key, allow_empty=False)
                out.append((op, lo, limits.prefix_end(lo)))
            else:
                out.append((op, limits.check_key(op.key), None))
        elif isinstance(op, GetOp):
            out.append((op, limits.check_key(op.key), None))
        elif isinstance(op, RangeOp):
            limits.check_limit(op.limit)
            lo = limits.check_prefix(op.prefix)
            out.append((op, lo, limits.prefix_end(lo)))
        else:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"unknown transaction op {type(op).__name__}")
    return out
