"""The two threads that own the SQLite connections of one store.

SQLite is blocking, so no statement ever runs on the event loop. All writes
go through :class:`GroupCommitWriter`, which drains every pending write,
applies them all inside ONE ``BEGIN IMMEDIATE`` transaction, commits once
(one fsync for the whole group) and only then resolves the callers' futures.
That is what makes throughput rise with concurrency while every acknowledged
write is on disk. A failing op fails alone: ops that may fail after writing
something (a batch, a transaction) run in their own SAVEPOINT.
``BEGIN IMMEDIATE`` takes SQLite's write lock before the revision counter is
read, so two processes sharing the file allocate revisions in turn.

Reads go through :class:`ReadThread`, which drains pending reads the same way
and runs each drained group in one read transaction on its own connection
(concurrent gets merged into one statement), waking each caller's loop once
per group; because futures of writes resolve only after COMMIT, a read issued
after an acknowledged write always sees it.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode

_STOP = object()
_Item = tuple[asyncio.AbstractEventLoop, asyncio.Future, Callable[..., Any], tuple]
_Outcome = tuple[asyncio.Future, Any, BaseException | None]


def connect(path: str, *, durable: bool, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection in WAL mode; ``durable`` means fsync on every commit."""
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    return conn


def _resolve(outcomes: list[_Outcome]) -> None:
    for fut, result, exc in outcomes:
        if fut.cancelled():
            continue
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)


def _internal(exc: Exception) -> AspenError:
    return AspenError(ErrorCode.INTERNAL, f"storage operation failed: {exc!r}")


class WriteTxn:
    """The state one group transaction threads through its ops.

    ``revision`` is the store revision so far; an op calls :meth:`op_revision`
    when it actually changes something, so an op that changes nothing (a
    delete of a missing key) does not bump the revision."""

    __slots__ = ("_op_rev", "conn", "events", "now_ms", "revision")

    def __init__(self, conn: sqlite3.Connection, revision: int, now_ms: int) -> None:
        self.conn = conn
        self.revision = revision
        self.now_ms = now_ms
        self.events: list[tuple] = []  # rows for the events table, written at the end of the group
        self._op_rev: int | None = None

    def new_op(self) -> None:
        self._op_rev = None

    def op_revision(self) -> int:
        if self._op_rev is None:
            self.revision += 1
            self._op_rev = self.revision
        return self._op_rev


class _ConnectionThread:
    def __init__(self, name: str, conn: sqlite3.Connection, max_group: int) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._max_group = max_group
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stopped = False
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._stopped:
            fut.set_exception(AspenError(ErrorCode.STORE_CLOSED, "the store is closed"))
            return fut
        self._queue.put((loop, fut, fn, args))
        return fut

    def stop(self) -> None:
        """Finish every queued item, then close the connection."""
        if not self._stopped:
            self._stopped = True
            self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            group: list[_Item] = [item]
            while len(group) < self._max_group:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                group.append(nxt)
            outcomes = self._run_group(group)
            by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
            first = group[0][0]
            if all(item[0] is first for item in group):  # the usual case: one loop
                by_loop[first] = outcomes
            else:
                for (loop, *_), outcome in zip(group, outcomes):
                    by_loop.setdefault(loop, []).append(outcome)
            for loop, outs in by_loop.items():
                try:
                    self._schedule(loop, outs)
                except RuntimeError:  # the loop is closed; nobody is waiting
                    pass
        self._conn.close()

    def _schedule(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        loop.call_soon_threadsafe(_resolve, outcomes)

    def _run_group(self, group: list[_Item]) -> list[_Outcome]:
        raise NotImplementedError


class ReadThread(_ConnectionThread):
    """Runs ``fn(conn, *args)`` for reads, a drained group per read transaction.

    A function marked ``fn.one_statement = True`` needs no transaction of its own.
    One marked ``fn.coalesce = many`` is merged with the other calls of ``fn`` in
    its group: ``many(conn, [args, ...])`` returns their results in order (so
    32 concurrent gets cost one IN query, not 32 statements)."""

    def _run_group(self, group: list[_Item]) -> list[_Outcome]:
        conn = self._conn
        outcomes: list[_Outcome | None] = [None] * len(group)
        merged: dict[Callable[..., list], list[int]] = {}
        # A lone one-statement read is its own snapshot; skipping BEGIN/COMMIT
        # saves two statements on the latency path of a single get.
        snapshot = len(group) > 1 or not getattr(group[0][2], "one_statement", False)
        try:
            if snapshot:
                conn.execute("BEGIN")
            for i, (_loop, fut, fn, args) in enumerate(group):
                many = getattr(fn, "coalesce", None) if snapshot else None
                if many is not None:
                    merged.setdefault(many, []).append(i)
                    continue
                outcomes[i] = _call(fut, fn, conn, args)
            for many, indices in merged.items():
                _, results, exc = _call(None, many, conn, ([group[i][3] for i in indices],))
                for n, i in enumerate(indices):
                    outcomes[i] = (group[i][1], None if exc else results[n], exc)
            if snapshot:
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            err = AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"SQLite read failed: {exc}")
            return [(fut, None, err) for _loop, fut, _fn, _args in group]
        return outcomes  # type: ignore[return-value]


def _call(fut: Any, fn: Callable[..., Any], conn: sqlite3.Connection, args: tuple) -> _Outcome:
    """One read; an AspenError or a bug fails that read only, an SQLite error the group."""
    try:
        return (fut, fn(conn, *args), None)
    except AspenError as exc:
        return (fut, None, exc)
    except sqlite3.Error:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure of a queued call is that call's answer, never the thread's end
        return (fut, None, _internal(exc))


class GroupCommitWriter(_ConnectionThread):
    """Runs ``fn(txn, *args)`` for writes; one commit per drained group.

    An op raising :class:`AspenError` fails alone. It must raise before it
    writes anything unless it is marked ``fn.may_fail_after_writing = True``,
    which buys it a SAVEPOINT. Any other exception fails the whole group.

    ``after_commit(revision, outcomes)`` is scheduled on each caller's
    loop instead of plain future resolution, so the store can advance its
    revision and wake watchers *before* any caller sees its result."""

    def __init__(
        self,
        name: str,
        conn: sqlite3.Connection,
        max_group: int,
        *,
        read_revision: Callable[[sqlite3.Connection], int],
        finish_group: Callable[[WriteTxn], None],
        after_commit: Callable[[int, list[_Outcome]], None],
    ) -> None:
        self._read_revision = read_revision
        self._finish_group = finish_group
        self._after_commit = after_commit
        self._last_revision = 0
        super().__init__(name, conn, max_group)

    def _schedule(self, loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome]) -> None:
        loop.call_soon_threadsafe(self._after_commit, self._last_revision, outcomes)

    def _run_group(self, group: list[_Item]) -> list[_Outcome]:
        conn = self._conn
        single = len(group) == 1
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            start = self._read_revision(conn)
            txn = WriteTxn(conn, start, now_ms())
            for _loop, fut, fn, args in group:
                before, events_before = txn.revision, len(txn.events)
                txn.new_op()
                guarded = not single and getattr(fn, "may_fail_after_writing", False)
                if guarded:
                    conn.execute("SAVEPOINT op")
                try:
                    result = fn(txn, *args)
                except AspenError as exc:
                    txn.revision = before
                    del txn.events[events_before:]
                    if guarded:
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                    outcomes.append((fut, None, exc))
                else:
                    if guarded:
                        conn.execute("RELEASE op")
                    outcomes.append((fut, result, None))
            if txn.revision != start:
                self._finish_group(txn)
            if single and outcomes[0][2] is not None:
                conn.execute("ROLLBACK")
            else:
                conn.execute("COMMIT")
            self._last_revision = txn.revision
        except Exception as exc:  # noqa: BLE001 - nothing of the group is committed
            if conn.in_transaction:
                conn.rollback()
            if isinstance(exc, sqlite3.Error):
                err = AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"SQLite write failed: {exc}")
            else:
                err = _internal(exc)
            outcomes = [(fut, None, err) for _loop, fut, _fn, _args in group]
        return outcomes
