"""The SQL of the embedded KV backend: schema and the synchronous operations
that run on the writer thread (``fn(txn, ...)``) or the read thread
(``fn(conn, ...)``) of :mod:`aspen.storage.sqlite_threads`.

Keys are stored as BLOBs of their UTF-8 bytes, so SQLite's memcmp order is
etcd's bytewise order. Every change also adds a row to ``events`` — the
watch history — in the same transaction (collected per group and inserted
at its end), so a watcher can never see a write
without its event or the other way round. ``events.seq`` grows in commit
order (writes are serialised by the write lock, even across processes),
which makes it a gap-free cursor for watchers.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Sequence
from itertools import starmap

from aspen.errors import AspenError, ErrorCode
from aspen.storage.backend import CheckedOp
from aspen.storage.records import (
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    LeaseInfo,
    PutOp,
    RangeOp,
    TxnOpResult,
    TxnResult,
    WatchEvent,
)
from aspen.storage.sqlite_threads import WriteTxn

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    lease INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_by_lease ON kv(lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0), ('compact_floor', 1);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    kind INTEGER NOT NULL,  -- 0 put, 1 delete
    key BLOB NOT NULL,
    value BLOB,
    version INTEGER,
    create_rev INTEGER,
    lease INTEGER
);
CREATE INDEX IF NOT EXISTS events_by_revision ON events(revision);
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl INTEGER NOT NULL, expires_ms INTEGER NOT NULL);
"""

# Keys come back as TEXT so the sqlite3 module decodes them in C, and rows
# map positionally onto KeyValue (built with starmap: no Python frame per row).
_COLS = "CAST(key AS TEXT), value, version, create_rev, mod_rev, lease"
_PUT = 0
_DELETE = 1
MAX_LEASE_ID = (1 << 63) - 1


def create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute("COMMIT")
    except BaseException:
        conn.rollback()
        raise


def _meta(conn: sqlite3.Connection, name: str) -> int:
    return conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0]


def read_revision(conn: sqlite3.Connection) -> int:
    return _meta(conn, "revision")


def _range_sql(hi: bytes | None, columns: str = _COLS) -> str:
    upper = " AND key < ?" if hi is not None else ""
    return f"SELECT {columns} FROM kv WHERE key >= ?{upper} ORDER BY key LIMIT ?"


def _range_args(lo: bytes, hi: bytes | None, limit: int) -> tuple:
    return (lo, hi, limit) if hi is not None else (lo, limit)


# --- reads (read thread, or inside a write transaction) -----------------------


def get(conn: sqlite3.Connection, key: bytes) -> KeyValue | None:
    row = conn.execute(f"SELECT {_COLS} FROM kv WHERE key = ?", (key,)).fetchone()
    return KeyValue(*row) if row else None


# An IN list is padded up to one of a few sizes (repeating its last key) so
# that only a handful of statement texts exist and all stay in sqlite3's
# statement cache; one statement for many keys costs ~1/3 of one per key.
_IN_SIZES = (8, 32, 128, 512)
_IN_SQL = {n: f"SELECT {_COLS} FROM kv WHERE key IN ({','.join('?' * n)})" for n in _IN_SIZES}


def get_many(conn: sqlite3.Connection, keys: Sequence[bytes]) -> list[KeyValue | None]:
    """The entries of ``keys`` in order (None where missing), one statement per 512 keys."""
    if len(keys) == 1:
        return [get(conn, keys[0])]
    found: dict[str, KeyValue] = {}
    top = _IN_SIZES[-1]
    for start in range(0, len(keys), top):
        chunk = list(keys[start : start + top])
        size = next(n for n in _IN_SIZES if n >= len(chunk))
        chunk += [chunk[-1]] * (size - len(chunk))
        found.update({kv.key: kv for kv in starmap(KeyValue, conn.execute(_IN_SQL[size], chunk))})
    return list(map(found.get, map(bytes.decode, keys)))  # keys are valid UTF-8: they came from str


def _get_each(conn: sqlite3.Connection, calls: Sequence[tuple[bytes]]) -> list[KeyValue | None]:
    return get_many(conn, [key for (key,) in calls])


get.one_statement = True  # type: ignore[attr-defined]
get.coalesce = _get_each  # type: ignore[attr-defined]  # concurrent gets become one IN query


def scan(conn: sqlite3.Connection, lo: bytes, hi: bytes | None, limit: int) -> tuple[list[KeyValue], bool, int]:
    """Up to ``limit`` entries in [lo, hi); also whether more follow and the revision."""
    # Records straight from the cursor: no intermediate list of row tuples.
    kvs = list(starmap(KeyValue, conn.execute(_range_sql(hi), _range_args(lo, hi, limit + 1))))
    more = len(kvs) > limit
    if more:
        kvs.pop()
    return kvs, more, read_revision(conn)


def lease_info(conn: sqlite3.Connection, lease_id: int, now_ms: int, *, with_keys: bool) -> LeaseInfo:
    row = conn.execute("SELECT ttl, expires_ms FROM leases WHERE id = ?", (lease_id,)).fetchone()
    if row is None:
        raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)
    return _lease_info(conn, lease_id, row[0], row[1], now_ms, with_keys)


def _lease_info(
    conn: sqlite3.Connection, lease_id: int, ttl: int, expires_ms: int, now_ms: int, with_keys: bool
) -> LeaseInfo:
    left_ms = expires_ms - now_ms
    remaining = -1 if left_ms <= 0 else (left_ms + 999) // 1000
    keys: list[str] = []
    if with_keys:
        keys = [
            r[0].decode("utf-8") for r in conn.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease_id,))
        ]
    return LeaseInfo(id=lease_id, granted_ttl=ttl, remaining_ttl=remaining, keys=keys)


def lease_list(conn: sqlite3.Connection, now_ms: int) -> list[LeaseInfo]:
    rows = conn.execute("SELECT id, ttl, expires_ms FROM leases ORDER BY id").fetchall()
    return [_lease_info(conn, i, t, e, now_ms, False) for i, t, e in rows]


def has_expired_lease(conn: sqlite3.Connection, now_ms: int) -> bool:
    return conn.execute("SELECT 1 FROM leases WHERE expires_ms <= ? LIMIT 1", (now_ms,)).fetchone() is not None


def read_events(
    conn: sqlite3.Connection,
    cursor: int | None,
    covered: int,
    start: int,
    lo: bytes,
    hi: bytes | None,
    limit: int,
) -> tuple[int, int, list[WatchEvent]]:
    """The next events for a watcher: those after ``cursor`` (an events.seq;
    None on the first call) at revision >= ``start`` with keys in [lo, hi).

    ``covered`` is the revision up to which the watcher has seen every event;
    if compaction removed anything after it, the watcher would have a gap, so
    that raises COMPACTED. Returns the new (cursor, covered, events)."""
    floor = _meta(conn, "compact_floor")
    if floor > covered + 1:
        raise AspenError(
            ErrorCode.COMPACTED,
            f"revision {covered + 1} has been compacted; the oldest retained revision is {floor}",
            revision=covered + 1,
            compact_revision=floor,
        )
    revision = read_revision(conn)
    if cursor is None:
        first = conn.execute("SELECT min(seq) FROM events WHERE revision >= ?", (start,)).fetchone()[0]
        cursor = first - 1 if first is not None else _max_seq(conn)
    where = "seq > ? AND revision >= ? AND key >= ?" + (" AND key < ?" if hi is not None else "")
    args: tuple = (cursor, start, lo) + ((hi,) if hi is not None else ()) + (limit,)
    rows = conn.execute(
        f"SELECT seq, revision, kind, key, value, version, create_rev, lease FROM events WHERE {where} ORDER BY seq LIMIT ?",
        args,
    ).fetchall()
    events = [_event(r) for r in rows]
    if len(rows) < limit:
        return max(cursor, _max_seq(conn)), max(covered, revision), events
    return rows[-1][0], max(covered, rows[-1][1] - 1), events


def _max_seq(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]


def _event(row: tuple) -> WatchEvent:
    _seq, revision, kind, key, value, version, create_rev, lease = row
    if kind == _PUT:
        kv = KeyValue(key.decode("utf-8"), value, version, create_rev, revision, lease)
        return WatchEvent(type="put", kv=kv, revision=revision)
    return WatchEvent(type="delete", kv=KeyValue(key.decode("utf-8"), b"", 0, 0, revision, 0), revision=revision)


# --- writes (writer thread) -----------------------------------------------------


class FinishGroup:
    """Run at the end of each write group that changed something: insert the
    group's events, store the new revision and drop watch history older than
    the last ``retention`` revisions. The history
    is trimmed in steps of ~1% of the retention so that most groups skip it."""

    def __init__(self, retention: int) -> None:
        self.retention = retention
        self.step = max(1, retention // 100)
        self.floor_seen = 0  # may lag another process's trimming; only costs a check

    def __call__(self, txn: WriteTxn) -> None:
        txn.conn.executemany(
            "INSERT INTO events (revision, kind, key, value, version, create_rev, lease) VALUES (?, ?, ?, ?, ?, ?, ?)",
            txn.events,
        )
        txn.conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (txn.revision,))
        target = txn.revision - self.retention + 1
        if target - self.floor_seen >= self.step:
            compact_history(txn, target)
            self.floor_seen = target


def compact_history(txn: WriteTxn, floor: int) -> None:
    """Forget events below revision ``floor`` (never moves the floor back)."""
    if floor > _meta(txn.conn, "compact_floor"):
        txn.conn.execute("DELETE FROM events WHERE revision < ?", (floor,))
        txn.conn.execute("UPDATE meta SET value = ? WHERE name = 'compact_floor'", (floor,))


def compact(txn: WriteTxn, revision: int) -> int:
    if revision > txn.revision:
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT,
            f"cannot compact to revision {revision}: the current revision is {txn.revision}",
        )
    compact_history(txn, revision)
    return _meta(txn.conn, "compact_floor")


def _require_lease(txn: WriteTxn, lease_id: int) -> None:
    row = txn.conn.execute("SELECT expires_ms FROM leases WHERE id = ?", (lease_id,)).fetchone()
    if row is None or row[0] <= txn.now_ms:
        raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)


def _write(txn: WriteTxn, key: bytes, value: bytes, lease: int) -> tuple[int, int, int]:
    """Upsert one key at this op's revision; returns (version, create_rev, rev)."""
    rev = txn.op_revision()
    version, create_rev = txn.conn.execute(
        "INSERT INTO kv VALUES (?, ?, 1, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
        "value = excluded.value, version = version + 1, mod_rev = excluded.mod_rev, lease = excluded.lease "
        "RETURNING version, create_rev",
        (key, value, rev, rev, lease),
    ).fetchone()
    txn.events.append((rev, _PUT, key, value, version, create_rev, lease))
    return version, create_rev, rev


def put(txn: WriteTxn, key: bytes, value: bytes, lease: int) -> int:
    if lease:
        _require_lease(txn, lease)
    return _write(txn, key, value, lease)[2]


def _deleted(txn: WriteTxn, keys: list[bytes]) -> int:
    if keys:
        rev = txn.op_revision()
        keys.sort()
        txn.events.extend((rev, _DELETE, k, None, None, None, None) for k in keys)
    return len(keys)


def delete_range(txn: WriteTxn, lo: bytes, hi: bytes | None) -> int:
    if hi is None:
        rows = txn.conn.execute("DELETE FROM kv WHERE key >= ? RETURNING key", (lo,))
    else:
        rows = txn.conn.execute("DELETE FROM kv WHERE key >= ? AND key < ? RETURNING key", (lo, hi))
    return _deleted(txn, [r[0] for r in rows.fetchall()])


def delete_key(txn: WriteTxn, key: bytes) -> int:
    rows = txn.conn.execute("DELETE FROM kv WHERE key = ? RETURNING key", (key,)).fetchall()
    return _deleted(txn, [r[0] for r in rows])


def compare_and_swap(
    txn: WriteTxn, key: bytes, expected: bytes | None, new: bytes | None
) -> tuple[bool, KeyValue | None, int]:
    """``new=None`` deletes. Returns (succeeded, entry after / current entry, revision)."""
    current = get(txn.conn, key)
    holds = current is None if expected is None else current is not None and current.value == expected
    if not holds:
        return False, current, txn.revision
    if new is None:
        delete_key(txn, key)
        return True, None, txn.revision
    version, create_rev, rev = _write(txn, key, new, 0)
    return True, KeyValue(key.decode("utf-8"), new, version, create_rev, rev, 0), rev


def batch(txn: WriteTxn, ops: Sequence[CheckedOp]) -> int:
    """Apply checked puts and deletes at one revision."""
    for op in ops:
        if op.value is not None:
            put(txn, op.key, op.value, op.op.lease)  # type: ignore[union-attr]
        elif op.op.prefix:  # type: ignore[union-attr]
            delete_range(txn, op.key, op.end)
        else:
            delete_key(txn, op.key)
    return txn.revision


batch.may_fail_after_writing = True  # type: ignore[attr-defined]


def _compare_holds(conn: sqlite3.Connection, cmp: Compare, key: bytes) -> bool:
    kv = get(conn, key)
    target, op, want = cmp.target, cmp.op, cmp.value
    if target == "value":
        if kv is None:  # as in etcd: a value compare on a missing key never holds
            return False
        have = kv.value
    elif target == "exists":
        have, want = kv is not None, bool(want)
    else:
        have = getattr(kv, target) if kv is not None else 0
    if op == "==":
        return have == want
    if op == "!=":
        return have != want
    if op == ">":
        return have > want  # type: ignore[operator]
    return have < want  # type: ignore[operator]


def transaction(
    txn: WriteTxn, compares: Sequence[Compare], on_success: Sequence[CheckedOp], on_failure: Sequence[CheckedOp]
) -> TxnResult:
    failed: int | None = None
    for i, cmp in enumerate(compares):
        if not _compare_holds(txn.conn, cmp, cmp.key.encode("utf-8")):
            failed = i
            break
    results: list[TxnOpResult] = []
    for op, lo, hi, value in on_success if failed is None else on_failure:
        if isinstance(op, PutOp):
            results.append(TxnOpResult(op="put", revision=put(txn, lo, value, op.lease)))
        elif isinstance(op, DeleteOp):
            n = delete_range(txn, lo, hi) if op.prefix else delete_key(txn, lo)
            results.append(TxnOpResult(op="delete", deleted=n))
        elif isinstance(op, GetOp):
            results.append(TxnOpResult(op="get", kv=get(txn.conn, lo)))
        else:
            assert isinstance(op, RangeOp)
            kvs, more, _rev = scan(txn.conn, lo, hi, op.limit)
            results.append(TxnOpResult(op="range", kvs=kvs, more=more))
    return TxnResult(succeeded=failed is None, failed_compare=failed, results=results, revision=txn.revision)


transaction.may_fail_after_writing = True  # type: ignore[attr-defined]


def lease_grant(txn: WriteTxn, ttl: int, lease_id: int) -> LeaseInfo:
    conn = txn.conn
    if lease_id == 0:
        while True:
            lease_id = random.randint(1, MAX_LEASE_ID)
            if conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone() is None:
                break
    elif conn.execute("SELECT 1 FROM leases WHERE id = ?", (lease_id,)).fetchone() is not None:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"lease {lease_id} already exists", lease=lease_id)
    conn.execute("INSERT INTO leases VALUES (?, ?, ?)", (lease_id, ttl, txn.now_ms + ttl * 1000))
    return LeaseInfo(id=lease_id, granted_ttl=ttl, remaining_ttl=ttl)


def lease_keepalive(txn: WriteTxn, lease_id: int) -> LeaseInfo:
    _require_lease(txn, lease_id)
    (ttl,) = txn.conn.execute(
        "UPDATE leases SET expires_ms = ? + ttl * 1000 WHERE id = ? RETURNING ttl", (txn.now_ms, lease_id)
    ).fetchone()
    return LeaseInfo(id=lease_id, granted_ttl=ttl, remaining_ttl=ttl)


def lease_revoke(txn: WriteTxn, lease_id: int) -> int:
    if txn.conn.execute("DELETE FROM leases WHERE id = ? RETURNING id", (lease_id,)).fetchone() is None:
        raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)
    rows = txn.conn.execute("DELETE FROM kv WHERE lease = ? RETURNING key", (lease_id,)).fetchall()
    return _deleted(txn, [r[0] for r in rows])


def expire_leases(txn: WriteTxn, max_leases: int) -> int:
    """Revoke up to ``max_leases`` expired leases, each at its own revision
    (as etcd does). Returns how many were revoked."""
    ids = [
        r[0]
        for r in txn.conn.execute(
            "SELECT id FROM leases WHERE expires_ms <= ? ORDER BY expires_ms LIMIT ?", (txn.now_ms, max_leases)
        )
    ]
    for lease_id in ids:
        txn.new_op()
        lease_revoke(txn, lease_id)
    return len(ids)
