"""The S3 blob backend: BLAKE3-addressed blobs whose bytes live in an S3-compatible bucket
and whose records (size, segment table, tags, GC state) live in the KV store.

Aspen adds only what the object store lacks: content addressing (an add becomes visible
under its hash when the upload completed and its record committed, see
:mod:`aspen.storage.s3_upload`), verification of every byte read (each ranged GET is
widened to whole 256 KiB segments, checked against the segment table, itself checked
against the address, before a byte is handed out), protect tags and GC in KV
(:mod:`aspen.storage.s3_meta`), and a verified LRU cache of small blobs
(:mod:`aspen.storage.blob_cache`). A damaged or missing object marks its record corrupt:
``BLOB_CORRUPT`` once, then ``BLOB_NOT_FOUND`` until a good copy is added.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.storage import s3_meta as meta
from aspen.storage.blob_args import (
    DEFAULT_MAX_BLOB_SIZE,
    DEFAULT_MAX_TOTAL_BYTES,
    IO_CHUNK,
    MAX_CHUNK_SIZE,
    MAX_LIST_LIMIT,
    check_grace,
    check_hash,
    check_limits,
    check_list,
    check_read,
    check_tag,
    too_large,
)
from aspen.storage.blob_cache import BlobCache
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import BlobAddResult, BlobInfo, BlobPage, PutOp
from aspen.storage.s3_client import S3Objects
from aspen.storage.s3_gc import collect_with_lock
from aspen.storage.s3_reads import corrupt, rehash, verified
from aspen.storage.s3_running import RunningUploads
from aspen.storage.s3_settings import S3Settings
from aspen.storage.s3_upload import Upload
from aspen.storage.segments import EMPTY_HASH, SEGMENT_SIZE, segment_span


class S3BlobStore:
    """:class:`aspen.storage.protocol.BlobStore` on an S3 bucket plus a KV store (not owned).

    ``max_total_bytes`` caps the bytes of all blobs of the cluster (the usage counter in KV
    moves in the transaction that adds or removes a record): a new blob that would pass it
    is ``QUOTA_EXCEEDED`` and its object removed; a stream is refused as soon as it cannot
    fit; a re-add takes no room."""

    def __init__(
        self, objects: S3Objects, kv: KeyValueStore, *, max_blob_size: int, max_total_bytes: int, owner: str
    ) -> None:
        self.objects = objects
        self.kv = kv
        self.max_blob_size = max_blob_size
        self.max_total_bytes = max_total_bytes
        self.owner = owner
        self.cache = BlobCache(objects.settings.cache_bytes)
        self.running = RunningUploads(kv)
        self._closed = False

    @classmethod
    async def open(
        cls,
        settings: S3Settings,
        kv: KeyValueStore,
        *,
        max_blob_size: int = DEFAULT_MAX_BLOB_SIZE,
        max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES,
        owner: str = "aspen",
    ) -> S3BlobStore:
        """Connect and make sure the bucket exists (``STORAGE_UNAVAILABLE`` when unreachable)."""
        check_limits(max_blob_size=max_blob_size, max_total_bytes=max_total_bytes)
        objects = await S3Objects.open(settings)
        try:
            await objects.ensure_bucket()
        except BaseException:
            await objects.close()
            raise
        return cls(objects, kv, max_blob_size=max_blob_size, max_total_bytes=max_total_bytes, owner=owner)

    def _check_open(self) -> None:
        if self._closed:
            raise AspenError(ErrorCode.STORE_CLOSED, "blob store is closed")

    # --- add -------------------------------------------------------------------

    async def add_bytes(self, data: bytes) -> BlobAddResult:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"data must be bytes, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        if view.nbytes > self.max_blob_size:
            raise too_large(view.nbytes, self.max_blob_size)

        async def slices():
            for pos in range(0, len(view), IO_CHUNK):
                yield view[pos : pos + IO_CHUNK]

        return await self._add(slices())

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

        async def chunks():
            f = await asyncio.to_thread(open, p, "rb")
            try:
                while chunk := await asyncio.to_thread(f.read, IO_CHUNK):
                    yield chunk
            finally:
                f.close()

        return await self._add(chunks())

    async def add_stream(self, chunks: AsyncIterable[bytes], *, expected_hash: str | None = None) -> BlobAddResult:
        """``expected_hash``: refuse (``BLOB_CORRUPT``, nothing stored) when the content hashes differently."""
        expected = None if expected_hash is None else check_hash(expected_hash)
        if not hasattr(chunks, "__aiter__"):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, f"chunks must be an async iterable, got {type(chunks).__name__}"
            )
        self._check_open()
        return await self._add(chunks, expected, (await meta.load_usage(self.kv))[0])

    async def _add(
        self, chunks: AsyncIterable[bytes], expected: str | None = None, used: int | None = None
    ) -> BlobAddResult:
        """``used``: refuse the stream as soon as it cannot fit (its size is unknown up front;
        a known-size add may still be a free re-add, decided at commit)."""
        self._check_open()
        up = Upload(self.objects, self.max_blob_size, self.running)
        try:
            async for chunk in chunks:
                if not isinstance(chunk, (bytes, bytearray, memoryview)):
                    raise AspenError(
                        ErrorCode.INVALID_ARGUMENT, f"stream chunk must be bytes, got {type(chunk).__name__}"
                    )
                if used is not None and used + up.size + len(chunk) > self.max_total_bytes:
                    raise quota_exceeded("max_total_bytes", self.max_total_bytes, used)
                await up.feed(chunk)
            h, table = await up.finish()
            if expected is not None and h != expected:
                raise AspenError(
                    ErrorCode.BLOB_CORRUPT, f"content hashes to {h}, expected {expected}", expected=expected, actual=h
                )
            return await self._commit(up, h, table)
        except BaseException:
            await asyncio.shield(up.abort())
            raise
        finally:
            await asyncio.shield(up.release())

    async def _commit(self, up: Upload, h: str, table: bytes) -> BlobAddResult:
        """Record the object under its hash; an existing good copy wins and ours is dropped
        (the caller aborts it when this raises). If the KV write fails the object stays
        unreferenced and GC's cleanup removes it."""
        now = now_ms()
        while True:
            cur = await meta.load(self.kv, h)
            if cur.live:
                touched = msgspec.structs.replace(cur.meta, touched_at_ms=now)
                if await meta.guarded(self.kv, [cur.guard()], [meta.put_meta(h, touched)]):
                    await up.abort()
                    return BlobAddResult(hash=h, size=up.size, was_new=False)
                continue
            record = meta.BlobMeta(up.size, up.name, now, now, tags=cur.meta.tags if cur.meta else [])
            ops = [meta.put_meta(h, record), PutOp(key=meta.SEG + h, value=table)]
            grow = up.size - (cur.meta.size if cur.meta else 0)
            if await meta.sized(self.kv, [cur.guard()], ops, grow, self.max_total_bytes):
                if cur.meta is not None:  # the damaged object this one replaces
                    with contextlib.suppress(AspenError):
                        await self.objects.delete(self.objects.key(cur.meta.object))
                return BlobAddResult(hash=h, size=up.size, was_new=True)

    # --- read ------------------------------------------------------------------

    async def _live(self, h: str) -> meta.Loaded:
        self._check_open()
        cur = await meta.load(self.kv, h)
        if not cur.live:
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
        return cur

    async def _live_with_table(self, h: str) -> tuple[meta.Loaded, bytes]:
        self._check_open()
        cur, table = await meta.load_with_table(self.kv, h)
        if not cur.live:
            raise AspenError(ErrorCode.BLOB_NOT_FOUND, f"blob {h} not found", hash=h)
        return cur, table

    async def get_bytes(self, hash: str, *, offset: int = 0, length: int | None = None) -> bytes:
        out = bytearray()
        async for chunk in self.get_stream(hash, offset=offset, length=length, chunk_size=MAX_CHUNK_SIZE):
            out += chunk
        return bytes(out)

    async def get_stream(
        self, hash: str, *, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Yields only bytes whose segments verified against a table checked against the
        address (so against the root hash). Small blobs are fetched whole once and served from the cache."""
        h = check_hash(hash)
        check_read(offset, length, chunk_size)
        cur, table = await self._live_with_table(h)
        size = cur.meta.size
        end = size if length is None else offset + length
        if offset > size or end > size:
            raise AspenError(
                ErrorCode.INVALID_RANGE, f"range {offset}..{end} is outside blob of {size} bytes",
                offset=offset, length=length, size=size,
            )  # fmt: skip
        if size == 0:
            if EMPTY_HASH != h:
                await corrupt(self, cur, "content does not match its hash")
            return
        data = self.cache.get(h)
        if data is None and self.cache.fits(size):
            data = b"".join(
                [piece async for _, block in verified(self, cur, table, 0, size, SEGMENT_SIZE * 4) for piece in block]
            )
            self.cache.put(h, data)
        if data is not None:
            for i in range(offset, end, chunk_size):
                yield data[i : min(i + chunk_size, end)]
            return
        if offset == end:
            return  # an empty range touches no segment
        start, stop = segment_span(offset, end, size)
        step = max(SEGMENT_SIZE, chunk_size - chunk_size % SEGMENT_SIZE)
        async for at, block in verified(self, cur, table, start, stop, step):
            for piece in block:  # body chunks as received: cut to the range and chunk_size, never joined
                lo, hi = max(offset - at, 0), min(end - at, len(piece))
                for i in range(lo, hi, chunk_size):
                    yield piece[i : min(i + chunk_size, hi)]
                at += len(piece)

    # --- metadata ----------------------------------------------------------

    async def has(self, hash: str) -> bool:
        h = check_hash(hash)
        self._check_open()
        return (await meta.load(self.kv, h)).live

    async def size(self, hash: str) -> int:
        return (await self._live(check_hash(hash))).meta.size

    async def list(self, *, limit: int = MAX_LIST_LIMIT, continuation: str | None = None) -> BlobPage:
        """Blobs in hash order; the token is the last hash of the previous page."""
        after = check_list(limit, continuation)
        self._check_open()
        found: list[BlobInfo] = []
        while len(found) <= limit:
            records, more = await meta.scan_records(self.kv, after, limit + 1)
            found += [BlobInfo(h, m.size, m.created_at_ms, sorted(m.tags)) for h, m, _ in records if not m.corrupt]
            if not more:
                break
            after = records[-1][0]
        page = found[:limit]
        truncated = len(found) > limit
        return BlobPage(blobs=page, is_truncated=truncated, continuation_token=page[-1].hash if truncated else None)

    # --- delete, tags, gc ------------------------------------------------------

    async def delete(self, hash: str, *, force: bool = False) -> bool:
        h = check_hash(hash)
        self._check_open()
        while True:
            cur = await meta.load(self.kv, h)
            if cur.meta is None:
                return False
            tags = cur.meta.tags
            if tags and not force:
                if cur.meta.corrupt:
                    return False  # nothing to serve; the tags wait for a good copy
                raise AspenError(
                    ErrorCode.BLOB_PROTECTED, f"blob {h} is protected by tags {sorted(tags)}", hash=h, tags=sorted(tags)
                )
            if await meta.sized(self.kv, [cur.guard()], meta.drop_blob(h, tags if force else []), -cur.meta.size):
                self.cache.drop(h)
                await self.objects.delete(self.objects.key(cur.meta.object))
                return not cur.meta.corrupt

    async def protect(self, hash: str, tag: str) -> None:
        """Point the named ``tag`` at a stored blob (moving it if it pointed elsewhere)."""
        h, t = check_hash(hash), check_tag(tag)
        self._check_open()
        await meta.protect(self.kv, h, t)

    async def unprotect(self, tag: str) -> None:
        """Remove a tag; removing an unknown tag is a no-op."""
        t = check_tag(tag)
        self._check_open()
        await meta.unprotect(self.kv, t)

    async def gc(self, *, grace_seconds: float = 300.0) -> list[str]:
        """On one node at a time (``GC_IN_PROGRESS`` elsewhere): remove untagged blobs not
        added within ``grace_seconds``, then objects no record references and unfinished
        multipart uploads older than ``cleanup_seconds``."""
        grace = check_grace(grace_seconds)
        self._check_open()
        return await collect_with_lock(self, grace)

    async def verify(self, hash: str) -> bool:
        """Re-hash the stored object: False (and marked corrupt) when it does not match;
        a damaged segment table is rebuilt."""
        cur = await self._live(check_hash(hash))
        ok, table = await rehash(self, cur)
        if not ok:
            self.cache.drop(cur.hash)
            await meta.mark_corrupt(self.kv, cur.hash, cur.meta.object)
            return False
        if table != await meta.load_table(self.kv, cur.hash):
            await self.kv.put(meta.SEG + cur.hash, table)
        return True

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self.running.close()
            await self.objects.close()
