"""One blob streaming into the object store while it is hashed.

The bytes go to a fresh object name (``objects/{random}``): the hash is only known at
the end, and S3 fixes a key when an upload starts. Blobs under :data:`PART_SIZE` are one
PutObject; larger ones a multipart upload, part after part (one part in flight keeps memory to
about two parts: botocore copies each body once), which S3 never shows as an object until it completes. Either way the object is not a blob
until :mod:`aspen.storage.s3_meta` records it under its hash; an upload that dies first
leaves an unreferenced object or an unfinished multipart upload, which GC removes after
``cleanup_seconds`` — unless it is still running: a multipart upload is registered in
:mod:`aspen.storage.s3_running` from its start until its record committed or it aborted.
:meth:`Upload.abort` removes the leftovers at once when the process lives.
"""

from __future__ import annotations

import asyncio
import secrets

from aspen.errors import AspenError
from aspen.storage.blob_args import too_large
from aspen.storage.s3_client import PART_SIZE, S3Objects
from aspen.storage.s3_running import RunningUploads
from aspen.storage.segments import SegmentHasher

HASH_IN_THREAD = 1 << 20  # hash updates this large leave the event loop (blake3 releases the GIL)


class Upload:
    def __init__(self, objects: S3Objects, max_size: int, running: RunningUploads) -> None:
        self.objects = objects
        self.running = running
        self._registered = False
        self.name = f"objects/{secrets.token_hex(16)}"
        self.max_size = max_size
        self.hasher = SegmentHasher()
        self._buffer: bytearray | None = None
        self._fill = 0
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._stored = False  # a complete object exists under ``name``

    @property
    def size(self) -> int:
        return self.hasher.size

    async def feed(self, data: bytes | bytearray | memoryview) -> None:
        n = memoryview(data).nbytes
        if self.size + n > self.max_size:
            raise too_large(self.size + n, self.max_size)
        if n >= HASH_IN_THREAD:
            await asyncio.to_thread(self.hasher.update, data)
        else:
            self.hasher.update(data)
        view, pos = memoryview(data).cast("B"), 0
        while pos < n:  # fill a preallocated part: no reallocation, no second copy
            if self._buffer is None:
                self._buffer, self._fill = bytearray(PART_SIZE), 0
            take = min(PART_SIZE - self._fill, n - pos)
            self._buffer[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == PART_SIZE:
                part, self._buffer = bytes(self._buffer), None  # botocore copies a bytearray body more
                await self._send(part)

    async def _send(self, part: bytes | bytearray) -> None:
        if self._upload_id is None:
            await self.running.add(self.name)
            self._registered = True
            self._upload_id = await self.objects.start_multipart(self.name)
        self._parts.append(await self.objects.put_part(self.name, self._upload_id, len(self._parts) + 1, part))

    async def finish(self) -> tuple[str, bytes]:
        """Store the rest and close the object; returns (hash, segment table)."""
        h, table = self.hasher.finish()
        rest = b"" if self._buffer is None else bytes(memoryview(self._buffer)[: self._fill])
        self._buffer = None
        if self._upload_id is None:
            await self.objects.put(self.name, rest)
        else:
            if rest:
                await self._send(rest)
            await self.objects.complete_multipart(self.name, self._upload_id, self._parts)
        self._stored = True
        return h, table

    async def release(self) -> None:
        """The upload is over (committed or aborted): GC may judge its leftovers by age."""
        if self._registered:
            self._registered = False
            await self.running.remove(self.name)

    async def abort(self) -> None:
        """Best effort: whatever fails here is left for GC's cleanup."""
        try:
            if self._stored:
                await self.objects.delete(self.objects.key(self.name))
            elif self._upload_id is not None:
                await self.objects.abort_multipart(self.objects.key(self.name), self._upload_id)
        except AspenError:
            pass
