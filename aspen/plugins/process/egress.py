"""The node side of a process plugin's network: an HTTP proxy on a Unix
socket that connects only where the manifest's ``allowed_hosts`` allows.

The plugin's sandbox has its own network namespace with nothing but a
loopback; :mod:`~aspen.plugins.process.egress_forwarder`, started inside it
before the plugin, relays ``127.0.0.1:EGRESS_PORT`` to this socket, which is
shown read-only in the sandbox. The proxy speaks ``CONNECT host:port`` (a
tunnel: HTTPS or any TCP protocol) and plain HTTP with an absolute URI
(``GET http://host/…``: the request is sent on with its origin-form target
and ``Connection: close``). It parses the request head with h11, judges the
target with :mod:`~aspen.plugins.process.egress_hosts`, resolves the name
itself and connects to an address it vetted, so nothing but the plugin's own
bytes reach the target. Refusals are HTTP answers with the error code in
``X-Aspen-Error`` and a JSON body ``{"code", "message"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import h11

from aspen.errors import ErrorCode
from aspen.plugins.process.egress_hosts import HostPattern, normal_host, parse_pattern, reachable, split_host_port

log = logging.getLogger("aspen.plugins.process.egress")
EGRESS_PORT = 3128  # inside the sandbox's namespace: the proxy's address there
FORWARDER = str(Path(__file__).resolve().with_name("egress_forwarder.py"))
_HOP_HEADERS = {b"connection", b"proxy-connection", b"proxy-authorization", b"keep-alive"}
_STATUS = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 502: "Bad Gateway", 504: "Gateway Timeout"}


def proxy_variables() -> dict[str, str]:
    """The environment that sends a plugin's HTTP clients through the forwarder
    (urllib, requests, httpx, curl, Node's undici with its flag, Go's net/http)."""
    url = f"http://127.0.0.1:{EGRESS_PORT}"
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    return {**dict.fromkeys(names, url), "NO_PROXY": "", "no_proxy": ""}


class EgressLimits(NamedTuple):
    max_connections: int = 16  # open at once per plugin; more: 429
    idle_seconds: float = 60.0  # a connection with no byte either way for this long is closed
    connect_seconds: float = 10.0  # to resolve and connect
    head_bytes: int = 16 << 10  # a request head longer than this: 400


class _Refused(Exception):
    def __init__(self, status: int, code: ErrorCode, message: str) -> None:
        self.status, self.code, self.message = status, code, message


def _answer(status: int, code: ErrorCode, message: str) -> bytes:
    body = json.dumps({"code": code.value, "message": message}).encode()
    return (
        f"HTTP/1.1 {status} {_STATUS[status]}\r\nContent-Type: application/json\r\nX-Aspen-Error: {code.value}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


class EgressProxy:
    """One plugin's proxy; ``socket_path`` exists between :meth:`start` and :meth:`stop`."""

    def __init__(self, name: str, allowed_hosts: tuple[str, ...], limits: EgressLimits | None = None) -> None:
        self.name = name
        self.patterns = tuple(parse_pattern(p) for p in allowed_hosts)
        self.limits = limits or EgressLimits()
        self.directory: Path | None = None  # made by start(): private, its name unguessable
        self.open = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def socket_path(self) -> str:
        assert self.directory is not None, "started"
        return str(self.directory / "proxy.sock")

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix=f"aspen-egress-{self.name}-"))
        self.directory.chmod(0o711)  # the sandbox's uid may pass, not list: the socket's name is not shown
        self._server = await asyncio.start_unix_server(self._accept, self.socket_path)
        os.chmod(self.socket_path, 0o666)

    async def behind(self, command: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...], dict[str, str]]:
        """``command`` started behind the in-sandbox forwarder: the argv, the
        paths the sandbox must show read-only, the proxy variables (starts the
        proxy the first time)."""
        if not self.running:
            await self.start()
        argv = ("python3", "-I", FORWARDER, self.socket_path, str(EGRESS_PORT), "--", *command)
        return argv, (str(self.directory), os.path.dirname(FORWARDER)), proxy_variables()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.directory is not None:
            await asyncio.to_thread(shutil.rmtree, self.directory, True)
            self.directory = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self.open >= self.limits.max_connections:
                writer.write(_answer(
                    429, ErrorCode.PLUGIN_EGRESS_TOO_MANY_CONNECTIONS,
                    f"plugin '{self.name}' has {self.open} connections open, at most {self.limits.max_connections}",
                ))  # fmt: skip
                return
            self.open += 1
            try:
                await self._serve(reader, writer)
            finally:
                self.open -= 1
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head, rest = await self._head(reader)
            event = _parse(head)
            host, port, pattern, first = self._judge(event)
            upstream = await self._connect(host, port, pattern)
        except _Refused as exc:
            log.debug("plugin %s: egress refused: %s", self.name, exc.message)  # the plugin has the message
            writer.write(_answer(exc.status, exc.code, exc.message))
            await writer.drain()
            return
        up_reader, up_writer = upstream
        try:
            if event.method == b"CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                up_writer.write(first)
            up_writer.write(rest)
            await self._splice(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _head(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        data = b""
        while b"\r\n\r\n" not in data:
            if len(data) > self.limits.head_bytes:
                raise _Refused(400, ErrorCode.BAD_REQUEST, f"a request head is at most {self.limits.head_bytes} bytes")
            try:
                chunk = await asyncio.wait_for(reader.read(4096), self.limits.idle_seconds)
            except TimeoutError:
                raise _Refused(400, ErrorCode.BAD_REQUEST, "no request head before the idle timeout") from None
            if not chunk:
                raise asyncio.IncompleteReadError(data, None)
            data += chunk
        end = data.index(b"\r\n\r\n") + 4
        return data[:end], data[end:]

    def _judge(self, event: h11.Request) -> tuple[str, int, HostPattern, bytes]:
        """The target, the pattern that allows it, and (plain HTTP) the head to send on."""
        target = event.target.decode("ascii", "replace")
        first = b""
        try:
            if event.method == b"CONNECT":
                host, port = split_host_port(target)
                if port is None:
                    raise ValueError("CONNECT names host:port")
            else:
                url = urlsplit(target)
                if url.scheme != "http" or not url.netloc or "@" in url.netloc:
                    raise ValueError("plain requests name an absolute http:// URI; use CONNECT for anything else")
                host, port = split_host_port(url.netloc)
                port = port or 80
                path = (url.path or "/") + (f"?{url.query}" if url.query else "")
                headers = b"".join(n + b": " + v + b"\r\n" for n, v in event.headers if n.lower() not in _HOP_HEADERS)
                first = event.method + b" " + path.encode() + b" HTTP/1.1\r\n" + headers + b"Connection: close\r\n\r\n"
            host = normal_host(host)
        except ValueError as exc:
            raise _Refused(400, ErrorCode.BAD_REQUEST, f"proxy target {target[:300]!r}: {exc}") from None
        for pattern in self.patterns:
            if pattern.matches(host, port):
                return host, port, pattern, first
        raise _Refused(
            403, ErrorCode.PLUGIN_EGRESS_DENIED, f"plugin '{self.name}': {host}:{port} is not in its allowed_hosts"
        )

    async def _connect(
        self, host: str, port: int, pattern: HostPattern
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + self.limits.connect_seconds
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), self.limits.connect_seconds
            )
        except (OSError, TimeoutError) as exc:
            raise _Refused(502, ErrorCode.PLUGIN_EGRESS_UNREACHABLE, f"{host}: cannot resolve: {exc}") from None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        allowed = [a for a in addresses if reachable(a, pattern)]
        if not allowed:
            raise _Refused(
                403, ErrorCode.PLUGIN_EGRESS_ADDRESS_REFUSED,
                f"{host} resolves to {', '.join(addresses[:4])}: not global addresses (allow an IP literal to reach one)",
            )  # fmt: skip
        error: Exception | None = None
        for address in allowed:
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(address, port), max(0.01, deadline - time.monotonic())
                )
            except (OSError, TimeoutError) as exc:
                error = exc
        raise _Refused(502, ErrorCode.PLUGIN_EGRESS_UNREACHABLE, f"{host}:{port}: cannot connect: {error}")

    async def _splice(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter,
    ) -> None:  # fmt: skip
        """Copy both ways until both ends are done or nothing moved for the idle timeout."""
        last = [time.monotonic()]

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while True:
                    try:
                        data = await asyncio.wait_for(src.read(65536), self.limits.idle_seconds)
                    except TimeoutError:
                        if time.monotonic() - last[0] >= self.limits.idle_seconds:
                            raise
                        continue
                    if not data:
                        if dst.can_write_eof():
                            dst.write_eof()
                        return
                    last[0] = time.monotonic()
                    dst.write(data)
                    await dst.drain()

        pumps = [asyncio.ensure_future(pump(reader, up_writer)), asyncio.ensure_future(pump(up_reader, writer))]
        try:
            await asyncio.gather(*pumps)
        except TimeoutError:
            pass
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


def _parse(head: bytes) -> h11.Request:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError as exc:
        raise _Refused(400, ErrorCode.BAD_REQUEST, f"not an HTTP/1.1 proxy request: {exc}") from None
    if not isinstance(event, h11.Request):
        raise _Refused(400, ErrorCode.BAD_REQUEST, "not an HTTP/1.1 proxy request")
    return event
