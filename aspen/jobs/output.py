"""A job's output, bounded: at most ``limit`` bytes reach its log, the rest
is counted and dropped, and a marker at the end says how much.

Executors that run a process stream its output through :class:`OutputLog`
(so a job printing forever never fills the node's disk); the pool cuts any
log still over the limit (a worker writing the file itself) before keeping it.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Self

DEFAULT_OUTPUT_LIMIT = 16 << 20
MARKER = "\n[aspen: output limit of {limit} bytes reached; {dropped} more bytes dropped]\n"
MARKER_ROOM = 128  # a marked log may be this much longer than the limit
CHUNK = 64 * 1024


def marker(limit: int, dropped: int) -> bytes:
    return MARKER.format(limit=limit, dropped=dropped).encode()


class OutputLog:
    """Appends to the log file up to ``limit`` bytes in all."""

    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        self.limit = limit
        self._file = open(path, "ab")  # noqa: SIM115 (closed by close())
        self.written = self._file.tell()
        self.dropped = 0

    def write(self, data: bytes) -> None:
        room = max(0, self.limit - self.written)
        if room:
            self._file.write(data[:room])
            self.written += min(room, len(data))
        self.dropped += max(0, len(data) - room)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if self.dropped:
            self._file.write(marker(self.limit, self.dropped))
        self._file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def pump(reader: asyncio.StreamReader, log: OutputLog) -> None:
    """Copy a child's output into the log until EOF (flushed per chunk, so
    the live tail shows it)."""
    while chunk := await reader.read(CHUNK):
        log.write(chunk)
        log.flush()


def cap_file(path: Path, limit: int) -> int:
    """Cut a log file over the limit (plus the marker's room) down to
    ``limit`` bytes and mark it; returns the bytes dropped."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return 0
    if size <= limit + MARKER_ROOM:
        return 0
    with open(path, "r+b") as f:
        f.truncate(limit)
        f.seek(limit)
        f.write(marker(limit, size - limit))
    return size - limit
