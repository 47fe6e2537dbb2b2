"""The embedded blob store: BLAKE3-addressed files in one directory.

Layout under ``root``::

    objects/ab/cdef…      one file per blob, sharded by the first hash byte
    tmp/*.part            in-progress writes (hashed while written)
    quarantine/           blobs found corrupt, kept for inspection
    meta.sqlite3          rows for blobs (size, times, segment table) and tags

Writes are atomic: a blob is hashed while it streams into ``tmp/``, fsynced,
renamed into ``objects/`` and the shard directory fsynced; only then does its
row appear. The rename and the row change happen while holding SQLite's write
lock (``BEGIN IMMEDIATE``), so adds, deletes, quarantines and GC are serialised
across every process sharing the directory. A file without a row is an orphan
of a crash and is removed by :meth:`LocalBlobStore.gc`.

Verification: at add time each 256 KiB segment is hashed with BLAKE3 and the
digests stored with the row (32 bytes per segment, 128 KiB per GiB); every
read checks them (:mod:`aspen.storage.local_blob_reads`).

Hashing is single-threaded per blob: the ``blake3`` package releases the GIL
for large updates, so concurrent adds and reads hash in parallel in the
thread pool, and on this project's 2-core machines ``max_threads=AUTO``
measured ~3x slower than one thread for 1 MiB updates.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.storage.blob_args import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_TOTAL_BYTES,
    IO_CHUNK,
    MAX_LIST_LIMIT,
    check_grace,
    check_hash,
    check_limits,
    check_list,
    check_tag,
    too_large,
)
from aspen.storage.local_blob_files import BlobWriter, fsync_dir, unavailable
from aspen.storage.local_blob_reads import VerifiedReads
from aspen.storage.records import BlobAddResult, BlobInfo, BlobPage

STALE_TEMP_SECONDS = 3600.0  # a temp file idle this long belongs to a dead writer

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    hash TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    touched_at_ms INTEGER NOT NULL,
    segments BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    tag TEXT PRIMARY KEY,
    hash TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_by_hash ON tags(hash);
"""


class LocalBlobStore(VerifiedReads):
    """:class:`aspen.storage.protocol.BlobStore` on a local directory.

    Safe for several stores (threads or processes) on one directory. Every
    file and SQLite operation runs in a worker thread.

    ``max_total_bytes`` caps the bytes of all blobs: an add of a new blob
    that would pass it is refused (``QUOTA_EXCEEDED``), checked while holding
    the write lock; a re-add of a stored blob takes no room. A stream (an
    upload of unknown size) is also refused as soon as it cannot fit, so a
    refused upload is not written out first, even if it would have turned
    out to be a blob already stored."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
    ) -> None:
        check_limits(max_blob_size=max_blob_size, max_total_bytes=max_total_bytes)
        self.root = Path(root)
        self.max_blob_size = max_blob_size
        self.max_total_bytes = max_total_bytes
        self._objects = self.root / "objects"
        self._tmp = self.root / "tmp"
        self._quarantine = self.root / "quarantine"
        self._db_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            for d in (self._objects, self._tmp, self._quarantine):
                d.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.root / "meta.sqlite3", isolation_level=None, check_same_thread=False, timeout=60.0
            )
            self._db.execute("PRAGMA busy_timeout = 60000")
            self._set_wal()
            self._db.execute("PRAGMA synchronous = FULL")
        except (OSError, sqlite3.Error) as exc:
            if self._db is not None:
                self._db.close()
            raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot open blob store at {str(root)!r}: {exc}") from exc
        with self._write_txn() as db:
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                db.execute(stmt)

    def _set_wal(self) -> None:
        """Switching to WAL ignores the busy timeout when another process is
        opening the same database at that moment, so retry for a while."""
        deadline = time.monotonic() + 30.0
        while True:
            try:
                self._conn().execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"cannot open blob metadata: {exc}") from exc
                time.sleep(0.01)

    @classmethod
    async def open(cls, root: str | os.PathLike[str], **kwargs) -> LocalBlobStore:
        """Construct off the event loop (mkdir, SQLite open and schema)."""
        return await asyncio.to_thread(cls, root, **kwargs)

    # --- plumbing ------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise AspenError(ErrorCode.STORE_CLOSED, "blob store is closed")
        return self._db

    @contextmanager
    def _txn(self, immediate: bool) -> Iterator[sqlite3.Connection]:
        """``immediate`` takes SQLite's write lock up front: the cross-process
        mutex for namespace changes (rename + row, unlink + row)."""
        with self._db_lock:
            db = self._conn()
            try:
                db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
                try:
                    yield db
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise unavailable(exc) from exc

    def _write_txn(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._txn(True)

    def _read_txn(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._txn(False)

    def _path(self, h: str) -> Path:
        return self._objects / h[:2] / h[2:]

    # --- add -------------------------------------------------------------------

    async def add_bytes(self, data: bytes) -> BlobAddResult:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"data must be bytes, got {type(data).__name__}")
        size = memoryview(data).nbytes
        if size > self.max_blob_size:
            raise too_large(size, self.max_blob_size)
        return await self._add(self._feed_slices, data)

    async def add_file(self, path: str | os.PathLike[str]) -> BlobAddResult:
        try:
            p = Path(path)
            st = await asyncio.to_thread(p.stat)
        except (TypeError, OSError) as exc:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"cannot read file {path!r}: {exc}") from exc
        if not p.is_file():
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"not a regular file: {str(p)!r}")
        if st.st_size > self.max_blob_size:
            raise too_large(st.st_size, self.max_blob_size)
        return await self._add(self._feed_file, p)

    async def add_stream(self, chunks: AsyncIterable[bytes], *, expected_hash: str | None = None) -> BlobAddResult:
        """``expected_hash``: refuse (``BLOB_CORRUPT``, nothing stored) when the
        content hashes differently — for bytes fetched from an untrusted peer."""
        expected = None if expected_hash is None else check_hash(expected_hash)
        if not hasattr(chunks, "__aiter__"):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, f"chunks must be an async iterable, got {type(chunks).__name__}"
            )
        self._conn()
        used = await asyncio.to_thread(self._used)
        writer = await asyncio.to_thread(BlobWriter, self._tmp, self.max_blob_size)
        try:
            pending = bytearray()
            async for chunk in chunks:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise AspenError(
                        ErrorCode.INVALID_ARGUMENT, f"stream chunk must be bytes, got {type(chunk).__name__}"
                    )
                pending += chunk
                if writer.size + len(pending) > self.max_blob_size:
                    raise too_large(writer.size + len(pending), self.max_blob_size)
                if used + writer.size + len(pending) > self.max_total_bytes:
                    raise quota_exceeded("max_total_bytes", self.max_total_bytes, used)
                if len(pending) >= IO_CHUNK:
                    buf, pending = bytes(pending), bytearray()
                    await asyncio.to_thread(writer.write, buf)
            if pending:
                await asyncio.to_thread(writer.write, bytes(pending))
            return await asyncio.to_thread(self._commit, writer, expected)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(writer.abort))
            raise

    async def _add(self, feed, source) -> BlobAddResult:
        self._conn()
        writer = await asyncio.to_thread(BlobWriter, self._tmp, self.max_blob_size)
        try:
            await asyncio.to_thread(feed, writer, source)
            return await asyncio.to_thread(self._commit, writer)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(writer.abort))
            raise

    @staticmethod
    def _feed_slices(writer: BlobWriter, data: bytes) -> None:
        view = memoryview(data).cast("B")
        for pos in range(0, len(view), IO_CHUNK):
            writer.write(view[pos : pos + IO_CHUNK])

    @staticmethod
    def _feed_file(writer: BlobWriter, path: Path) -> None:
        with open(path, "rb") as f:
            while chunk := f.read(IO_CHUNK):
                writer.write(chunk)

    def _commit(self, writer: BlobWriter, expected: str | None = None) -> BlobAddResult:
        h, segments = writer.finish()
        if expected is not None and h != expected:
            raise AspenError(
                ErrorCode.BLOB_CORRUPT, f"content hashes to {h}, expected {expected}", expected=expected, actual=h
            )
        final = self._path(h)
        now = now_ms()
        with self._write_txn() as db:
            row = db.execute("SELECT size FROM blobs WHERE hash = ?", (h,)).fetchone()
            if row is not None and final.exists():
                db.execute("UPDATE blobs SET touched_at_ms = ? WHERE hash = ?", (now, h))
                writer.path.unlink(missing_ok=True)
                return BlobAddResult(hash=h, size=writer.size, was_new=False)
            used = self._used_in(db) - (row[0] if row is not None else 0)
            if used + writer.size > self.max_total_bytes:
                raise quota_exceeded("max_total_bytes", self.max_total_bytes, used)
            shard = final.parent
            if not shard.is_dir():
                shard.mkdir(exist_ok=True)
                fsync_dir(self._objects)
            os.replace(writer.path, final)
            fsync_dir(shard)
            db.execute(
                "INSERT OR REPLACE INTO blobs (hash, size, created_at_ms, touched_at_ms, segments)"
                " VALUES (?, ?, ?, ?, ?)",
                (h, writer.size, now, now, segments),
            )
        return BlobAddResult(hash=h, size=writer.size, was_new=True)

    def _used(self) -> int:
        with self._read_txn() as db:
            return self._used_in(db)

    @staticmethod
    def _used_in(db: sqlite3.Connection) -> int:
        return db.execute("SELECT COALESCE(SUM(size), 0) FROM blobs").fetchone()[0]

    # --- metadata (reads: :class:`VerifiedReads`) --------------------------------

    async def has(self, hash: str) -> bool:
        h = check_hash(hash)
        return await asyncio.to_thread(self._has, h)

    def _has(self, h: str) -> bool:
        with self._read_txn() as db:
            row = db.execute("SELECT 1 FROM blobs WHERE hash = ?", (h,)).fetchone()
        return row is not None and self._path(h).exists()

    async def size(self, hash: str) -> int:
        h = check_hash(hash)
        return await asyncio.to_thread(self._size, h)

    def _size(self, h: str) -> int:
        with self._read_txn() as db:
            row = db.execute("SELECT size FROM blobs WHERE hash = ?", (h,)).fetchone()
        if row is None or not self._path(h).exists():
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
        return row[0]

    async def list(self, *, limit: int = MAX_LIST_LIMIT, continuation: str | None = None) -> BlobPage:
        """Blobs in hash order; the token is the last hash of the previous page."""
        after = check_list(limit, continuation)
        return await asyncio.to_thread(self._list, limit, after)

    def _list(self, limit: int, after: str) -> BlobPage:
        with self._read_txn() as db:
            rows = db.execute(
                "SELECT hash, size, created_at_ms FROM blobs WHERE hash > ? ORDER BY hash LIMIT ?",
                (after, limit + 1),
            ).fetchall()
            more = len(rows) > limit
            rows = rows[:limit]
            tags: dict[str, list[str]] = {}
            if rows:
                for h, tag in db.execute(
                    "SELECT hash, tag FROM tags WHERE hash >= ? AND hash <= ? ORDER BY tag",
                    (rows[0][0], rows[-1][0]),
                ):
                    tags.setdefault(h, []).append(tag)
        blobs = [BlobInfo(hash=h, size=s, created_at_ms=c, tags=tags.get(h, [])) for h, s, c in rows]
        return BlobPage(blobs=blobs, is_truncated=more, continuation_token=rows[-1][0] if more else None)

    # --- delete, tags, gc ------------------------------------------------------

    async def delete(self, hash: str, *, force: bool = False) -> bool:
        h = check_hash(hash)
        return await asyncio.to_thread(self._delete, h, bool(force))

    def _delete(self, h: str, force: bool) -> bool:
        with self._write_txn() as db:
            tags = [t for (t,) in db.execute("SELECT tag FROM tags WHERE hash = ? ORDER BY tag", (h,))]
            exists = db.execute("SELECT 1 FROM blobs WHERE hash = ?", (h,)).fetchone() is not None
            if tags and exists and not force:
                raise AspenError(ErrorCode.BLOB_PROTECTED, f"blob {h} is protected by tags {tags}", hash=h, tags=tags)
            if force:
                db.execute("DELETE FROM tags WHERE hash = ?", (h,))
            db.execute("DELETE FROM blobs WHERE hash = ?", (h,))
            self._unlink(h)
        return exists

    def _unlink(self, h: str) -> None:
        path = self._path(h)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)

    async def protect(self, hash: str, tag: str) -> None:
        """Point the named ``tag`` at a stored blob (moving it if it pointed elsewhere)."""
        h, t = check_hash(hash), check_tag(tag)
        await asyncio.to_thread(self._protect, h, t)

    def _protect(self, h: str, tag: str) -> None:
        with self._write_txn() as db:
            if db.execute("SELECT 1 FROM blobs WHERE hash = ?", (h,)).fetchone() is None:
                raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
            db.execute("INSERT OR REPLACE INTO tags (tag, hash) VALUES (?, ?)", (tag, h))

    async def unprotect(self, tag: str) -> None:
        """Remove a tag; removing an unknown tag is a no-op."""
        t = check_tag(tag)
        await asyncio.to_thread(self._unprotect, t)

    def _unprotect(self, tag: str) -> None:
        with self._write_txn() as db:
            db.execute("DELETE FROM tags WHERE tag = ?", (tag,))

    async def gc(self, *, grace_seconds: float = 300.0) -> list[str]:
        """Remove untagged blobs not added within ``grace_seconds`` (a re-add
        restarts the grace period), crash orphans in ``objects/`` and stale
        temp files."""
        grace = check_grace(grace_seconds)
        return await asyncio.to_thread(self._gc, grace)

    def _gc(self, grace: float) -> list[str]:
        cutoff_s = time.time() - grace
        with self._write_txn() as db:
            doomed = [
                h
                for (h,) in db.execute(
                    "SELECT hash FROM blobs WHERE touched_at_ms < ? AND hash NOT IN (SELECT hash FROM tags)"
                    " ORDER BY hash",
                    (int(cutoff_s * 1000),),
                )
            ]
            for h in doomed:
                db.execute("DELETE FROM blobs WHERE hash = ?", (h,))
                self._unlink(h)
        orphans = [p for p in self._object_files() if p.stat().st_mtime < cutoff_s]
        if orphans:
            with self._write_txn() as db:
                for p in orphans:
                    h = p.parent.name + p.name
                    if db.execute("SELECT 1 FROM blobs WHERE hash = ?", (h,)).fetchone() is None:
                        p.unlink(missing_ok=True)
        stale = time.time() - max(grace, STALE_TEMP_SECONDS)
        for p in self._tmp.iterdir():
            try:
                if p.stat().st_mtime < stale:
                    p.unlink()
            except FileNotFoundError:
                pass
        return doomed

    def _object_files(self) -> Iterable[Path]:
        for shard in self._objects.iterdir():
            if shard.is_dir():
                yield from (p for p in shard.iterdir() if p.is_file())

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        with self._db_lock:
            if self._db is not None:
                self._db.close()
                self._db = None
