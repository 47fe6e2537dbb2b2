"""The local blob store's files: a write streaming into ``tmp/`` while it is hashed, and a
blob opened for a verified read."""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blob_args import too_large
from aspen.storage.segments import SegmentHasher


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def unavailable(exc: BaseException) -> AspenError:
    return AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"blob storage failed: {exc}")


class BlobWriter:
    """A temp file plus the root and per-segment hashers, fed in order.

    A ``threading.Lock`` makes ``abort`` wait for a write still running in a
    worker thread (a cancelled ``to_thread`` keeps running)."""

    def __init__(self, tmp_dir: Path, max_size: int) -> None:
        try:
            fd, name = tempfile.mkstemp(dir=tmp_dir, suffix=".part")
        except OSError as exc:
            raise unavailable(exc) from exc
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._max = max_size
        self._hasher = SegmentHasher()
        self._lock = threading.Lock()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        with self._lock:
            view = memoryview(data).cast("B")
            if self.size + len(view) > self._max:
                raise too_large(self.size + len(view), self._max)
            try:
                self._file.write(view)
            except OSError as exc:  # disk full, I/O error
                raise unavailable(exc) from exc
            self._hasher.update(view)
            self.size += len(view)

    def finish(self) -> tuple[str, bytes]:
        """fsync and close; returns (hex hash, segment table)."""
        with self._lock:
            digests = self._hasher.finish()
            try:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
            except OSError as exc:
                raise unavailable(exc) from exc
            return digests

    def abort(self) -> None:
        with self._lock:
            self._file.close()
            self.path.unlink(missing_ok=True)


@dataclass
class OpenBlob:
    hash: str
    file: object  # a binary file object opened for reading
    size: int
    table: bytes  # the segment table, checked against ``hash`` when opened
