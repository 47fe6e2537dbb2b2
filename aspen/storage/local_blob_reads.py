"""The local blob store's verified reads: the segment table is checked against the
address when the blob is opened (its chaining values merge into the root hash), then
whole segments are read and checked against it before a byte is handed out, so every
byte handed out is verified against the root and a whole read hashes it once. A table
that fails, or a segment mismatch, triggers a full re-hash: a good file means only the
table was damaged (rebuilt; also how a table from before chaining values is replaced);
otherwise the file is quarantined and ``BLOB_CORRUPT`` raised. This catches a flipped
bit even when mtime and size are intact (bit rot)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blob_args import check_hash, check_read
from aspen.storage.local_blob_files import OpenBlob, fsync_dir
from aspen.storage.segments import (
    DIGEST_SIZE,
    SEGMENT_SIZE,
    SegmentHasher,
    bad_segment,
    segment_count,
    segment_span,
    table_matches,
)


class VerifiedReads:
    """The read half of :class:`aspen.storage.blobs.LocalBlobStore` (which provides
    ``_read_txn``, ``_write_txn``, ``_path`` and ``_quarantine``)."""

    async def get_bytes(self, hash: str, *, offset: int = 0, length: int | None = None) -> bytes:
        out = bytearray()
        async for chunk in self.get_stream(hash, offset=offset, length=length):
            out += chunk
        return bytes(out)

    async def get_stream(
        self, hash: str, *, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yields only bytes whose segments verified against the checked table."""
        h = check_hash(hash)
        check_read(offset, length, chunk_size)
        blob = await asyncio.to_thread(self._open, h, offset, length)
        try:
            end = blob.size if length is None else offset + length
            step = max(SEGMENT_SIZE, chunk_size - chunk_size % SEGMENT_SIZE)
            pos, limit = segment_span(offset, end, blob.size)
            while pos < end:
                data = await asyncio.to_thread(self._read_verified, blob, pos, min(pos + step, limit))
                lo, hi = max(offset - pos, 0), min(end - pos, len(data))
                for i in range(lo, hi, chunk_size):
                    yield data[i : min(i + chunk_size, hi)]
                pos += len(data)
        finally:
            await asyncio.to_thread(blob.file.close)

    def _open(self, h: str, offset: int, length: int | None, *, check_table: bool = True) -> OpenBlob:
        """The open file and its record; the table checked against the address (re-hashed
        or quarantined when it fails) unless the caller re-hashes the file anyway."""
        with self._read_txn() as db:
            row = db.execute("SELECT size, segments FROM blobs WHERE hash = ?", (h,)).fetchone()
            if row is None:
                raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
        size, table = row[0], bytes(row[1] or b"")
        end = size if length is None else offset + length
        if offset > size or end > size:
            raise AspenError(
                ErrorCode.INVALID_RANGE,
                f"range {offset}..{end} is outside blob of {size} bytes",
                offset=offset,
                length=length,
                size=size,
            )
        try:
            f = open(self._path(h), "rb")  # noqa: SIM115 (closed by get_stream)
        except FileNotFoundError as exc:
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h) from exc
        blob = OpenBlob(h, f, size, table)
        try:
            if os.fstat(f.fileno()).st_size != size:
                self._corrupt(blob, "file size differs from the recorded size")
            if check_table and not table_matches(table, h, size):
                self._recheck(blob)
        except BaseException:
            f.close()
            raise
        return blob

    def _read_verified(self, blob: OpenBlob, start: int, stop: int) -> bytes:
        """Read [start, stop) (segment aligned, or to the end) and check it."""
        blob.file.seek(start)
        data = blob.file.read(stop - start)
        if len(data) != stop - start:
            self._corrupt(blob, "file is shorter than recorded")
        first = start // SEGMENT_SIZE
        span = slice(first * DIGEST_SIZE, (first + segment_count(len(data))) * DIGEST_SIZE)
        if bad_segment(data, first, blob.table[span], blob.size) is not None:
            self._recheck(blob)  # raises when the file is corrupt
            if bad_segment(data, first, blob.table[span], blob.size) is not None:
                self._corrupt(blob, "file changed while being read")
        return data

    def _recheck(self, blob: OpenBlob) -> None:
        """Re-hash the whole file. A good file means the table was damaged: rebuild it
        and refresh ``blob``. Else quarantine."""
        h, table = self._hash_file(blob.file)
        if h != blob.hash:
            self._corrupt(blob, "content does not match its hash")
        if table == blob.table:
            return
        with self._write_txn() as db:
            db.execute("UPDATE blobs SET segments = ? WHERE hash = ?", (table, blob.hash))
        blob.table = table

    @staticmethod
    def _hash_file(f) -> tuple[str, bytes]:
        hasher = SegmentHasher()
        f.seek(0)
        while chunk := f.read(1 << 20):
            hasher.update(chunk)
        return hasher.finish()

    def _corrupt(self, blob: OpenBlob, why: str) -> None:
        self._quarantine_file(blob.hash, os.fstat(blob.file.fileno()).st_ino)
        raise AspenError(ErrorCode.BLOB_CORRUPT, f"blob {blob.hash} is corrupt: {why}", hash=blob.hash)

    def _quarantine_file(self, h: str, inode: int) -> None:
        """Move the corrupt file aside and drop its row (tags stay, so a good
        copy added later is protected again). Skipped when the path already
        holds another file, i.e. a good copy replaced it meanwhile."""
        path = self._path(h)
        with self._write_txn() as db:
            try:
                if path.stat().st_ino != inode:
                    return
            except FileNotFoundError:
                return
            os.replace(path, self._quarantine / f"{h}.{time.time_ns()}")
            fsync_dir(path.parent)
            db.execute("DELETE FROM blobs WHERE hash = ?", (h,))

    # --- metadata ----------------------------------------------------------

    async def verify(self, hash: str) -> bool:
        """Re-hash a stored blob: False (and quarantined) when corrupt; a
        damaged segment table is rebuilt."""
        h = check_hash(hash)
        return await asyncio.to_thread(self._verify, h)

    def _verify(self, h: str) -> bool:
        try:
            blob = self._open(h, 0, None, check_table=False)
            try:
                self._recheck(blob)  # one pass: it rebuilds a table that fails, too
            finally:
                blob.file.close()
        except AspenError as exc:
            if exc.code == ErrorCode.BLOB_CORRUPT:
                return False
            raise
        return True
