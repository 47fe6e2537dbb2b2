"""Watch streams over HTTP.

- ``GET /v1/watch?prefix=P&start_revision=N``: server-sent events for an
  ad-hoc watch; resumes from ``Last-Event-ID`` (the last revision seen).
- ``GET /v1/watch/{id}``: SSE for a watch made with the ``WatchCreate`` RPC.
- ``/v1/watch/ws``: a WebSocket speaking the RPC envelope in JSON text
  frames: send ``WatchCreate``/``WatchCancel``, receive their results and
  ``WatchEvent`` messages (``{"watch_id", "event"}``).

Each SSE event has ``id: <revision>``, ``event: put|delete`` and the JSON
``WatchEventMessage`` as data; a failure ends the stream with ``event: error``
carrying the error body.

Every stream needs ``kv:watch`` on its prefix (and ``cluster:admin`` when
it reaches into reserved space). The SSE routes take the token from
``Authorization: Bearer``; a WebSocket from its handshake's header or from
each message's ``token``. A stream ends (``TOKEN_EXPIRED`` /
``TOKEN_REVOKED``) when its token does; watch ids belong to their caller,
and on a WebSocket to that connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from starlette.requests import Request as HttpRequest
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from aspen.auth.service import HTTP_STATUS, bearer
from aspen.auth.verifier import Principal
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.rpc.access import WATCH_STREAM
from aspen.rpc.catalog import (
    WatchCancel,
    WatchCancelResult,
    WatchCreate,
    WatchCreateResult,
    WatchEventMessage,
    parse_body,
)
from aspen.rpc.nesting import check_depth
from aspen.storage.limits import check_revision
from aspen.storage.records import WatchEvent

_enc = msgspec.json.Encoder()


def _sse(watch_id: int, event: WatchEvent) -> bytes:
    data = _enc.encode(WatchEventMessage(watch_id=watch_id, event=event))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.revision, event.type.encode(), data)


def _sse_error(exc: AspenError) -> bytes:
    return b"event: error\ndata: %s\n\n" % _enc.encode(exc.to_body())


async def _stream(watch_id: int, events: AsyncIterator[WatchEvent | None]) -> AsyncIterator[bytes]:
    yield b": watching\n\n"  # flush headers so the client knows the watch is live
    try:
        async for event in events:
            yield b": keepalive\n\n" if event is None else _sse(watch_id, event)
    except AspenError as exc:
        yield _sse_error(exc)


async def while_valid(auth: Any, principal: Principal, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``events`` while the caller's token holds: it ends with ``TOKEN_EXPIRED``
    at the token's expiry, and with ``TOKEN_REVOKED`` at the next event or
    keepalive after a revocation."""
    try:
        while True:
            remaining = principal.expires_epoch - time.time()
            try:
                async with asyncio.timeout(remaining if remaining != float("inf") else None):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise AspenError(ErrorCode.TOKEN_EXPIRED, "the watch's token expired") from None
            auth.authenticate(principal.text)
            yield event
    finally:
        await events.aclose()  # type: ignore[attr-defined]


def _int_param(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise AspenError(ErrorCode.VALIDATION_ERROR, f"{name} must be an integer, got {value!r}") from None


def _sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )


def watch_routes(services: Any, error_response) -> list:
    hub = services.watches
    auth = services.auth
    section = services.config.sections.get("quotas", {})
    per_connection = int(section.get("watches_per_connection", 64))

    def refusal(exc: AspenError, default: int):
        return error_response(exc, HTTP_STATUS.get(exc.code, 429 if exc.code == ErrorCode.QUOTA_EXCEEDED else default))

    async def adhoc(request: HttpRequest):
        try:
            prefix = request.query_params.get("prefix", "")
            principal = auth.check_route(bearer(request.headers), WATCH_STREAM, {"prefix": prefix})
            start = _int_param(request.query_params.get("start_revision"), "start_revision")
            last = _int_param(request.headers.get("last-event-id"), "Last-Event-ID")
            if last is not None:
                start = last + 1
            if start is None:
                start = await services.kv.current_revision() + 1
            check_revision(start)  # here, while a 400 can still be sent
            hub.check_node_quota()
            events = hub.events(prefix, start)
        except AspenError as exc:
            return refusal(exc, 400)
        return _sse_response(_stream(0, while_valid(auth, principal, events)))

    async def registered(request: HttpRequest):
        try:
            principal = auth.authenticate(bearer(request.headers))
            watch = hub.get(_int_param(request.path_params["watch_id"], "watch_id"), principal.subject)
        except AspenError as exc:
            return refusal(exc, 404)
        last = request.headers.get("last-event-id")
        if last and last.isdigit():
            watch.next_revision = max(watch.next_revision, int(last) + 1)
        return _sse_response(_stream(watch.id, while_valid(auth, principal, hub.follow(watch))))

    async def websocket(ws: WebSocket):
        await ws.accept()
        pumps: dict[int, asyncio.Task] = {}
        send_lock = asyncio.Lock()
        try:
            handshake_token = bearer(ws.headers)
        except AspenError as exc:
            await ws.send_text(_enc.encode({"type": "Error", "body": exc.to_body()}).decode())
            await ws.close(code=1008)
            return

        async def send(type_: str, body: Any) -> None:
            async with send_lock:
                await ws.send_text(_enc.encode({"type": type_, "body": body}).decode())

        async def pump(watch, principal: Principal) -> None:
            try:
                async for event in while_valid(auth, principal, hub.follow(watch)):
                    if event is not None:
                        await send("WatchEvent", WatchEventMessage(watch_id=watch.id, event=event))
            except AspenError as exc:
                hub.cancel(watch.id)
                await send("Error", {**exc.to_body(), "watch_id": watch.id})

        try:
            while True:
                raw = await ws.receive_text()
                try:
                    check_depth(raw)  # before the recursive decoder sees it
                    msg = msgspec.json.decode(raw)
                    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
                        raise AspenError(ErrorCode.BAD_REQUEST, 'expected {"type": ..., "body": {...}}')
                    body = msg.get("body") or {}
                    token = msg.get("token") if isinstance(msg.get("token"), str) else handshake_token
                    if msg["type"] == "WatchCreate":
                        principal = auth.check_route(token, WATCH_STREAM, body)
                        if len(pumps) >= per_connection:
                            raise quota_exceeded("watches_per_connection", per_connection, len(pumps))
                        req = parse_body(body, WatchCreate)
                        watch = await hub.create(req.prefix, req.start_revision, principal.subject)
                        pumps[watch.id] = asyncio.create_task(pump(watch, principal))
                        await send(
                            "WatchCreateResult",
                            WatchCreateResult(watch_id=watch.id, start_revision=watch.next_revision, stream_path=""),
                        )
                    elif msg["type"] == "WatchCancel":
                        auth.authenticate(token)
                        req = parse_body(body, WatchCancel)
                        task = pumps.pop(req.watch_id, None)  # only this connection's watches
                        cancelled = task is not None and hub.cancel(req.watch_id)
                        if task is not None:
                            await asyncio.wait([task], timeout=5)
                        await send(
                            "WatchCancelResult", WatchCancelResult(watch_id=req.watch_id, was_cancelled=cancelled)
                        )
                    else:
                        raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"{msg['type']!r} is not a watch request")
                except msgspec.DecodeError as exc:
                    await send(
                        "Error", AspenError(ErrorCode.BAD_REQUEST, f"message is not valid JSON: {exc}").to_body()
                    )
                except AspenError as exc:
                    await send("Error", exc.to_body())
        except WebSocketDisconnect:
            pass
        finally:
            for watch_id, task in pumps.items():
                hub.cancel(watch_id)
                task.cancel()
            for task in pumps.values():
                with contextlib.suppress(BaseException):
                    await task

    return [
        Route("/v1/watch", adhoc, methods=["GET"]),
        Route("/v1/watch/{watch_id}", registered, methods=["GET"]),
        WebSocketRoute("/v1/watch/ws", websocket),
    ]
