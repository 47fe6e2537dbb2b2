"""The embedded KV backend: one SQLite file in WAL mode, etcd semantics.

A write is acknowledged only once its transaction is committed with
``synchronous=FULL`` (fsynced); concurrent writes share one commit (see
:mod:`aspen.storage.sqlite_threads`). Watchers read the ``events`` table by
cursor: a commit in this process wakes them at once, and one poller per
store reads the file's revision at a short interval and wakes them all when
another process on the same file (two nodes sharing one database) has
written: one small read per interval however many watchers there are.
Leases expire through a background task that revokes them like
``lease_revoke`` does, emitting delete events.
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
from aspen.storage import sqlite_ops as ops
from aspen.storage.backend import CheckedOp
from aspen.storage.front_door import KvFrontDoor
from aspen.storage.records import (
    CasResult,
    Compare,
    KeyValue,
    LeaseInfo,
    TxnResult,
    WatchEvent,
)
from aspen.storage.sqlite_threads import GroupCommitWriter, ReadThread, connect

log = logging.getLogger(__name__)

DEFAULT_EVENT_RETENTION = 100_000
_WATCH_BATCH = 1000


class SqliteKvBackend:
    """The raw operations (:class:`aspen.storage.backend.KvBackend`) on one SQLite file.

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
        self._polled = revision  # the file's revision at the last poll
        loop = asyncio.get_running_loop()
        self._expiry = loop.create_task(self._expire_leases_forever(lease_check_interval))
        self._poller = loop.create_task(self._poll_other_writers())

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
    ) -> SqliteKvBackend:
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

    # get and get_many submit directly (no _read frame): they are the hot path.
    async def get(self, key: bytes) -> KeyValue | None:
        self._check_open()
        return await self._reader.submit(ops.get, key)

    async def get_many(self, keys: list[bytes]) -> list[KeyValue | None]:
        self._check_open()
        return await self._reader.submit(ops.get_many, keys)

    async def range(self, lo: bytes, hi: bytes | None, limit: int) -> tuple[list[KeyValue], bool, int]:
        entries, more, revision = await self._read(ops.scan, lo, hi, limit)
        return entries, more, self._saw(revision)

    async def current_revision(self) -> int:
        return self._saw(await self._read(ops.read_revision))

    # --- writes ---------------------------------------------------------------

    async def put(self, key: bytes, value: bytes, lease: int) -> int:
        return await self._write(ops.put, key, value, lease)

    async def delete(self, key: bytes) -> bool:
        return bool(await self._write(ops.delete_key, key))

    async def delete_range(self, lo: bytes, hi: bytes | None) -> int:
        return await self._write(ops.delete_range, lo, hi)

    async def compare_and_swap(self, key: bytes, expected: bytes | None, new: bytes) -> CasResult:
        ok, kv, revision = await self._write(ops.compare_and_swap, key, expected, new)
        return CasResult(succeeded=ok, actual=kv, revision=revision)

    async def compare_and_delete(self, key: bytes, expected: bytes) -> CasResult:
        ok, kv, revision = await self._write(ops.compare_and_swap, key, expected, None)
        return CasResult(succeeded=ok, actual=kv, revision=revision)

    async def batch_write(self, ops_: Sequence[CheckedOp]) -> int:
        return await self._write(ops.batch, list(ops_))

    async def transaction(
        self, compares: Sequence[Compare], on_success: Sequence[CheckedOp], on_failure: Sequence[CheckedOp]
    ) -> TxnResult:
        return await self._write(ops.transaction, list(compares), list(on_success), list(on_failure))

    async def compact(self, revision: int) -> None:
        await self._write(ops.compact, revision)

    # --- leases ---------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int) -> LeaseInfo:
        return await self._write(ops.lease_grant, ttl, lease_id)

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        return await self._write(ops.lease_keepalive, lease_id)

    async def lease_revoke(self, lease_id: int) -> int:
        return await self._write(ops.lease_revoke, lease_id)

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo:
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

    async def _poll_other_writers(self) -> None:
        """Wake the watchers when the file moved past what this process wrote."""
        while not self._closed:
            await asyncio.sleep(self._poll)
            if not self._watch_wakeups:
                continue
            try:
                revision = await self._read(ops.read_revision)
            except AspenError as exc:
                if exc.code == ErrorCode.STORE_CLOSED:
                    return
                log.warning("watch poll failed: %s", exc)
                continue
            if revision > max(self._polled, self._revision_committed):
                for wake in self._watch_wakeups:
                    wake.set()
            self._polled = revision

    def watch(self, lo: bytes, hi: bytes | None, start_revision: int | None) -> AsyncIterator[WatchEvent]:
        """``COMPACTED`` comes from the first ``anext``. ``None`` starts after
        the newest revision this process has written or read, fixed when
        ``watch`` is called, so a write awaited before the call is never
        delivered and one made after it always is."""
        self._check_open()
        start = self._revision_seen + 1 if start_revision is None else start_revision
        return self._watch(lo, hi, start)

    async def _watch(self, lo: bytes, hi: bytes | None, start: int) -> AsyncIterator[WatchEvent]:
        wake = asyncio.Event()
        self._watch_wakeups.add(wake)
        try:
            cursor: int | None = None
            covered = start - 1
            while True:
                wake.clear()
                cursor, covered, events = await self._read(
                    ops.read_events, cursor, covered, start, lo, hi, _WATCH_BATCH
                )
                for event in events:
                    yield event
                if len(events) < _WATCH_BATCH:
                    await wake.wait()  # a commit here, the poller, or close()
        finally:
            self._watch_wakeups.discard(wake)

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        """Finish queued operations, stop the threads; watchers then fail with STORE_CLOSED."""
        if self._closed:
            return
        self._closed = True
        for task in (self._expiry, self._poller):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._writer.stop)
        await asyncio.to_thread(self._reader.stop)
        for wake in self._watch_wakeups:
            wake.set()


class SqliteKeyValueStore(KvFrontDoor[SqliteKvBackend]):
    """:class:`aspen.storage.protocol.KeyValueStore` on one SQLite file."""

    @classmethod
    async def open(cls, path: str | os.PathLike[str], **options: Any) -> SqliteKeyValueStore:
        """Open the file behind the front door; ``options`` as for :meth:`SqliteKvBackend.open`."""
        return cls(await SqliteKvBackend.open(path, **options))
