"""Writing a process plugin in Python (docs/plugin-process.md).

    plugin = Plugin("echo-process", "0.1.0", handles=["Echo"])

    @plugin.handler("Echo")
    def echo(req: Request) -> dict:
        return reply("Echo", req.body)

    plugin.run()

A handler takes the :class:`Request` and returns :func:`reply` (a dict
``{"type", "body"}``); raising :class:`~aspen.errors.AspenError` answers with
that code. ``async def`` handlers run concurrently and may call the node
through ``req.host`` (:class:`~aspen.plugin_sdk.host.Host`); plain ones run
one at a time on the loop. Only the standard library and msgspec are needed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugin_sdk.host import Host, value_bytes
from aspen.plugins.process.connection import Peer
from aspen.plugins.process.protocol import raw

__all__ = ["AspenError", "ErrorCode", "Host", "Plugin", "Request", "reply", "value_bytes"]

log = logging.getLogger("aspen.plugin")
_decode = msgspec.json.Decoder().decode


class Request(msgspec.Struct):
    type: str
    body: dict[str, Any] = {}
    app: str | None = None
    caller: str | None = None
    deadline_ms: int | None = None
    host: Any = None  # set by the SDK, never sent

    @property
    def timeout(self) -> float | None:
        return None if self.deadline_ms is None else self.deadline_ms / 1000


_decode_request = msgspec.json.Decoder(Request).decode


def reply(type: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type, "body": body or {}}


Handler = Callable[[Request], dict[str, Any] | Awaitable[dict[str, Any]]]
Callback = Callable[[Host, dict[str, Any]], Any]


class Plugin:
    """What ``plugin_info`` answers, and the handlers per request type;
    ``on_init``, ``on_health``, ``on_timer``, ``on_hook_event`` and
    ``on_shutdown`` are optional ``callback(host, params)`` hooks."""

    def __init__(self, name: str, version: str, *, handles: list[str], description: str = "") -> None:
        self.info = {"name": name, "version": version, "handles": list(handles), "description": description}
        self.handlers: dict[str, Handler] = {}
        self.callbacks: dict[str, Callback] = {}
        self.host: Host | None = None
        self._done: asyncio.Event | None = None

    def handler(self, type: str) -> Callable[[Handler], Handler]:
        def register(fn: Handler) -> Handler:
            self.handlers[type] = fn
            return fn

        return register

    def on(self, event: str) -> Callable[[Callback], Callback]:
        """``@plugin.on("timer")`` etc.: init, health, timer, hook_event, shutdown."""

        def register(fn: Callback) -> Callback:
            self.callbacks[event] = fn
            return fn

        return register

    # --- serving the node's calls -------------------------------------------------

    def serve(self, method: str, params: msgspec.Raw) -> msgspec.Raw | Awaitable[msgspec.Raw]:
        if method == "handle_request":
            try:
                req = _decode_request(params)
            except msgspec.DecodeError as exc:
                raise AspenError(ErrorCode.BAD_REQUEST, f"handle_request: {exc}") from None
            req.host = self.host
            fn = self.handlers.get(req.type)
            if fn is None:
                raise AspenError("UNHANDLED", req.type)
            return _answer(fn(req))
        if method == "plugin_info":
            return raw(self.info)
        event = _EVENTS.get(method)
        if event is None:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"unknown method {method!r}")
        if method == "shutdown" and self._done is not None:
            asyncio.get_running_loop().call_soon(self._done.set)  # after the answer is written
        fn = self.callbacks.get(event)
        if fn is None:
            return raw({"ok": True} if method in ("init", "health") else {})
        return _answer(fn(self.host, _decode(params) if params else {}), default={"ok": True})  # type: ignore[arg-type]

    # --- the run loop ---------------------------------------------------------------

    def run(self) -> None:
        """Serve on stdin/stdout until ``shutdown`` or end of input; logs go to stderr."""
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(levelname)s %(message)s")
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = asyncio.Event()
        out, _ = await loop.connect_write_pipe(asyncio.Protocol, sys.stdout.buffer)
        peer = Peer(out.write, self.serve, on_fault=lambda why: log.error("node: %s", why),
                    timeout_code=ErrorCode.TIMEOUT, name="node")  # fmt: skip
        self.host = Host(peer)
        reader = _Input(peer, self._done)
        await loop.connect_read_pipe(lambda: reader, sys.stdin.buffer)
        await self._done.wait()
        peer.close(AspenError(ErrorCode.SHUTTING_DOWN, "the plugin is stopping"))
        out.close()


_EVENTS = {"init": "init", "health": "health", "on_timer": "timer", "on_hook_event": "hook_event",
           "shutdown": "shutdown"}  # fmt: skip


def _answer(result: Any, default: dict[str, Any] | None = None) -> msgspec.Raw | Awaitable[msgspec.Raw]:
    if inspect.isawaitable(result):

        async def finish() -> msgspec.Raw:
            out = await result
            return raw(default if out is None else out)

        return finish()
    return raw(default if result is None else result)


class _Input(asyncio.Protocol):
    def __init__(self, peer: Peer, done: asyncio.Event) -> None:
        self.peer = peer
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.peer.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.done.set()  # the node closed our stdin: it is gone or wants us gone
