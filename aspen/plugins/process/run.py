"""One run of a plugin process: the subprocess protocol that feeds its stdout to
the JSON-RPC :class:`~aspen.plugins.process.connection.Peer` and its stderr to the
node's log, and records how the run ended (exit, fault, pipes drained) for the
supervisor that restarts it."""

from __future__ import annotations

import asyncio
import collections
import logging

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.process.connection import Peer, PeerLimits, Serve
from aspen.plugins.process.protocol import FloodMeter

log = logging.getLogger("aspen.plugins.process")
MAX_STDERR_LINE = 1000  # characters kept of one stderr line


class StderrTail:
    """The plugin's log: each line to the node's log, the last few kept."""

    def __init__(self, name: str, lines: int) -> None:
        self.name = name
        self.lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = b""

    def feed(self, data: bytes) -> None:
        *done, self._partial = (self._partial + data).split(b"\n")
        self._partial = self._partial[-MAX_STDERR_LINE:]
        for line in done:
            text = line[:MAX_STDERR_LINE].decode(errors="replace").rstrip()
            if text:
                self.lines.append(text)
                log.info("[plugin %s] %s", self.name, text)


class ProcessRun(asyncio.SubprocessProtocol):
    """One process: its pipes, its peer, and how it ended."""

    def __init__(self, name: str, serve: Serve, limits: PeerLimits, stderr: StderrTail) -> None:
        loop = asyncio.get_running_loop()
        self.name, self.stderr = name, stderr
        self.transport: asyncio.SubprocessTransport | None = None
        self.exited: asyncio.Future[int] = loop.create_future()
        self.fault: asyncio.Future[str] = loop.create_future()
        self.drained: asyncio.Future[None] = loop.create_future()  # exited and every pipe at its end
        self.stderr_flood = FloodMeter(window=limits.flood_window, max_bytes=limits.flood_bytes)
        self.peer = Peer(self._write, serve, on_fault=self._fault, limits=limits, name=name)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.exited.done():
            self.transport.get_pipe_transport(0).write(data)  # type: ignore[union-attr]

    def _fault(self, reason: str) -> None:
        if not self.fault.done():
            self.fault.set_result(reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        if fd == 1:
            self.peer.feed(data)
        else:
            if self.stderr_flood.add_bytes(len(data)):
                self._fault(f"more than {self.stderr_flood.max_bytes} bytes of stderr in a window")
            self.stderr.feed(data)

    def process_exited(self) -> None:
        code = self.transport.get_returncode() if self.transport else None
        if not self.exited.done():
            self.exited.set_result(code if code is not None else -1)
        self._fault(f"the process exited with status {code}")
        self.peer.close(AspenError(ErrorCode.PLUGIN_TRAP, f"plugin '{self.name}': the process exited"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.drained.done():
            self.drained.set_result(None)

    @property
    def pid(self) -> int | None:
        return self.transport.get_pid() if self.transport else None
