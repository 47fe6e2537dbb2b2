"""``POST /v1/rpc``: size check, envelope decode, dispatch, encode, metrics.

This is the hot path, written as a plain ASGI app (no Request/Response
objects): one pass over the headers, the body read with a running size
check, one decode, one dispatch, one encode, and cached metric children.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Route

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.catalog import CORE_REQUEST_TYPES
from aspen.rpc.envelope import (
    JSON,
    MAX_MESSAGE_BYTES,
    MSGPACK,
    check_size,
    decode_request,
    encode_response,
)
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import error_response

_JSON_HEADERS = [(b"content-type", JSON.encode())]
_MSGPACK_HEADERS = [(b"content-type", MSGPACK.encode())]


class ClientGone(Exception):
    """The client disconnected before sending its whole request."""


async def read_body(receive: Any, declared: int | None, limit: int = MAX_MESSAGE_BYTES) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading
    it all (Content-Length first, then a running count for chunked bodies)."""
    if declared is not None:
        check_size(declared)
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if not chunks and not message.get("more_body", False):
            return chunk
        total += len(chunk)
        if total > limit:
            check_size(total)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class RpcEndpoint:
    def __init__(self, services: Any) -> None:
        self.services = services
        self.registry = services.registry
        self.metrics = services.metrics
        self.max_seconds = services.config.max_request_seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        msgpack, declared = False, None
        for name, value in scope["headers"]:
            if name == b"content-type":
                msgpack = b"msgpack" in value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
        metrics = self.metrics
        label, outcome, status = "invalid", "ok", 200
        metrics.in_flight += 1
        try:
            try:
                if declared == -1:
                    raise AspenError(ErrorCode.BAD_REQUEST, "Content-Length is not a number")
                env = decode_request(await read_body(receive, declared), msgpack)
            except AspenError as exc:
                outcome = exc.code
                status = 413 if exc.code == ErrorCode.MESSAGE_TOO_LARGE else 400
                resp = error_response(exc)
            except ClientGone:
                outcome = "disconnected"
                return
            else:
                rtype = env.type
                registry = self.registry
                known = rtype in CORE_REQUEST_TYPES or rtype in registry.snapshot().by_type
                label = rtype if known else "other"
                timeout = self.max_seconds
                if env.timeout_ms is not None:
                    timeout = min(timeout, max(env.timeout_ms, 0) / 1000)
                ctx = RequestContext(
                    node=self.services, token=env.token, proxy_hops=env.proxy_hops, deadline=time.monotonic() + timeout
                )
                resp = await registry.dispatch(Request(rtype, env.body, env.app), ctx)
                if resp.type == "Error":
                    outcome = str(resp.body.get("code", ErrorCode.INTERNAL))
            payload = encode_response(resp, msgpack)
            headers = [*(_MSGPACK_HEADERS if msgpack else _JSON_HEADERS), (b"content-length", b"%d" % len(payload))]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            metrics.in_flight -= 1
            metrics.observe(label, outcome, time.perf_counter() - started)


def rpc_route(services: Any) -> Route:
    return Route("/v1/rpc", RpcEndpoint(services), methods=["POST"])
