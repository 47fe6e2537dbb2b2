"""A loopback TCP proxy the tests can cut, to make an object store unreachable or drop a
request whose outcome the client then cannot know."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``target_port``. ``mode``: ``"forward"``; ``"refuse"``
    (close every connection at once); ``"swallow"`` (read the request, never answer, close).
    ``drop_next`` connections are closed at once even in forward mode. ``requests`` counts
    the request lines seen, e.g. ``b"PUT"``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "forward"
        self.drop_next = 0
        self.requests: list[bytes] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            if self.mode == "refuse" or self.drop_next > 0:
                self.drop_next = max(0, self.drop_next - 1)
                return
            first = await reader.read(65536)
            if first:
                self.requests.append(first.split(b" ", 1)[0])
            if self.mode == "swallow":
                while await reader.read(65536):
                    pass
                return
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
            up_w.write(first)
            await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.mode != "forward":
                    return
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def cut(self, mode: str = "refuse") -> None:
        """Switch mode and break every open connection."""
        self.mode = mode
        for t in list(self._tasks):
            t.cancel()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
