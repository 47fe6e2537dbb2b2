"""``POST /v1/rpc``: size check, envelope decode, authentication and
authorisation, the caller's in-flight quota, dispatch, encode, metrics.

This is the hot path, written as a plain ASGI app (no Request/Response
objects): one pass over the headers, the body read with a running size
check, one decode, one dispatch, one encode, and cached metric children.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Route

from aspen.auth.service import HTTP_STATUS, bearer
from aspen.errors import AspenError, ErrorCode, quota_exceeded
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

DEFAULT_IN_FLIGHT_PER_CALLER = 256
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
        self.auth = services.auth
        self.metrics = services.metrics
        self.max_seconds = services.config.max_request_seconds
        quotas = services.config.sections.get("quotas", {})
        self.max_in_flight = int(quotas.get("requests_in_flight_per_caller", DEFAULT_IN_FLIGHT_PER_CALLER))
        self.in_flight: dict[str, int] = {}  # caller -> requests being handled

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        msgpack, declared, authorization = False, None, None
        for name, value in scope["headers"]:
            if name == b"content-type":
                msgpack = b"msgpack" in value
            elif name == b"content-length":
                declared = int(value) if value.isdigit() else -1
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        metrics = self.metrics
        label, outcome, status = "invalid", "ok", 200
        metrics.in_flight += 1
        try:
            try:
                if declared == -1:
                    raise AspenError(ErrorCode.BAD_REQUEST, "Content-Length is not a number")
                env = decode_request(await read_body(receive, declared), msgpack)
                rtype = env.type
                snapshot = self.registry.snapshot()
                handler = snapshot.handler_for(rtype)
                label = rtype if handler is not None or rtype in CORE_REQUEST_TYPES else "other"
                token = env.token or (bearer({"authorization": authorization}) if authorization else None)
                principal = self.auth.check(token, rtype, env.body, handler)
            except AspenError as exc:
                outcome = exc.code
                status = HTTP_STATUS.get(exc.code) or (413 if exc.code == ErrorCode.MESSAGE_TOO_LARGE else 400)
                resp = error_response(exc)
            except ClientGone:
                outcome = "disconnected"
                return
            else:
                caller = principal.subject
                busy = self.in_flight.get(caller, 0)
                if busy >= self.max_in_flight:
                    exc = quota_exceeded("requests_in_flight_per_caller", self.max_in_flight, busy)
                    outcome, status, resp = exc.code, 429, error_response(exc)
                else:
                    self.in_flight[caller] = busy + 1
                    try:
                        resp = await self._dispatch(env, rtype, principal, token)
                    finally:
                        if (left := self.in_flight[caller] - 1) > 0:
                            self.in_flight[caller] = left
                        else:
                            del self.in_flight[caller]
                    if resp.type == "Error":
                        outcome = str(resp.body.get("code", ErrorCode.INTERNAL))
                        status = HTTP_STATUS.get(outcome, 200)
            payload = encode_response(resp, msgpack)
            headers = [*(_MSGPACK_HEADERS if msgpack else _JSON_HEADERS), (b"content-length", b"%d" % len(payload))]
            if status == 429:
                headers.append((b"retry-after", b"1"))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
        finally:
            metrics.in_flight -= 1
            metrics.observe(label, outcome, time.perf_counter() - started)

    async def _dispatch(self, env: Any, rtype: str, principal: Any, token: str | None) -> Any:
        timeout = self.max_seconds
        if env.timeout_ms is not None:
            timeout = min(timeout, max(env.timeout_ms, 0) / 1000)
        ctx = RequestContext(
            node=self.services,
            caller=principal.subject,
            principal=principal,
            token=token,
            proxy_hops=env.proxy_hops,
            deadline=time.monotonic() + timeout,
        )
        return await self.registry.dispatch(Request(rtype, env.body, env.app), ctx)


def rpc_route(services: Any) -> Route:
    return Route("/v1/rpc", RpcEndpoint(services), methods=["POST"])
