"""The HTTP routes between clusters. They take no token: announcements are
authenticated by the cluster key's signature (and proxied requests, later,
by a token rooted in the forwarding cluster's key)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aspen.auth.service import HTTP_STATUS
from aspen.errors import AspenError, ErrorCode
from aspen.federation.announcements import MAX_ANNOUNCEMENT_BYTES, check_size
from aspen.federation.exchange import (
    ANNOUNCE_PATH,
    ANNOUNCEMENT_PATH,
    HOPS_HEADER,
    TRUST_REQUEST_PATH,
)
from aspen.federation.identity import SignedIdentity, is_key_hex
from aspen.federation.proxy import CLUSTER_HEADER, PROXY_PATH
from aspen.rpc.envelope import (
    JSON,
    MAX_MESSAGE_BYTES,
    MSGPACK,
    decode_request,
    encode_response,
    is_msgpack,
)
from aspen.rpc.envelope import check_size as check_rpc_size
from aspen.rpc.registry import error_response


class _TrustRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    identity: SignedIdentity
    message: str = ""


_trust_request = msgspec.json.Decoder(_TrustRequest)

_STATUS = {
    **HTTP_STATUS,
    ErrorCode.KEY_NOT_FOUND: 404,
    ErrorCode.BLOB_NOT_FOUND: 404,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.MESSAGE_TOO_LARGE: 413,
    ErrorCode.FEDERATION_RATE_LIMITED: 429,
    ErrorCode.INVALID_SIGNATURE: 401,
    ErrorCode.FEDERATION_CLUSTER_BLOCKED: 403,
    ErrorCode.FEDERATION_ANNOUNCEMENT_STALE: 409,
    ErrorCode.FEDERATION_ANNOUNCEMENT_EXPIRED: 410,
    ErrorCode.SHUTTING_DOWN: 503,
}


_PROXY_STATUS = {**HTTP_STATUS, **_STATUS, ErrorCode.CAPABILITY_UNAVAILABLE: 200}


def error(exc: AspenError) -> JSONResponse:
    headers = {"retry-after": "1"} if exc.code == ErrorCode.FEDERATION_RATE_LIMITED else None
    return JSONResponse({"type": "Error", "body": exc.to_body()}, _STATUS.get(exc.code, 400), headers=headers)


async def bounded_body(request: Request, check: Any = check_size, limit: int = MAX_ANNOUNCEMENT_BYTES) -> bytes:
    """The body, refused by ``check`` past ``limit`` bytes before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise AspenError(ErrorCode.BAD_REQUEST, "Content-Length is not a number")
        check(int(declared))
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            check(total)
        chunks.append(chunk)
    return b"".join(chunks)


def federation_routes(services: Any) -> list[Route]:
    def exchange() -> Any:
        fed = services.federation
        if fed is None or services.stopping.is_set():
            raise AspenError(ErrorCode.SHUTTING_DOWN, "this node is not serving federation")
        return fed.exchange

    async def announce(request: Request) -> Response:
        try:
            ex = exchange()
            ex.admit(request.client.host if request.client else "?")
            try:
                raw = await bounded_body(request)
            except AspenError as exc:
                ex.count("oversized" if exc.code == ErrorCode.MESSAGE_TOO_LARGE else "invalid")
                raise
            hops = request.headers.get(HOPS_HEADER, "0")
            if not hops.isdigit() or int(hops) > 16:
                raise AspenError(ErrorCode.BAD_REQUEST, f"{HOPS_HEADER} must be 0-16")
            entry = ex.receive(raw, f"push:{request.client.host if request.client else '?'}", int(hops))
        except AspenError as exc:
            return error(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        return JSONResponse({"outcome": "accepted", "cluster_key": entry.cluster_key}, 202)

    async def announcement(request: Request) -> Response:
        try:
            ex = exchange()
            ex.admit(request.client.host if request.client else "?")
            return Response(await ex.own(), media_type="application/json")
        except AspenError as exc:
            return error(exc)

    async def trust_request(request: Request) -> Response:
        try:
            ex = exchange()
            ex.admit(request.client.host if request.client else "?")
            raw = await bounded_body(request)
            try:
                ask = _trust_request.decode(raw)
            except msgspec.DecodeError as exc:
                raise AspenError(ErrorCode.BAD_REQUEST, f"malformed trust request: {exc}") from None
            status = await services.federation.trust.add_request(ask.identity, ask.message)
        except AspenError as exc:
            return error(exc)
        except ClientDisconnect:
            return Response(status_code=400)
        return JSONResponse({"status": status}, 202 if status == "pending" else 200)

    async def proxy(request: Request) -> Response:
        msgpack = is_msgpack(request.headers.get("content-type"))
        try:
            exchange()
            origin = request.headers.get(CLUSTER_HEADER, "")
            if not is_key_hex(origin):
                raise AspenError(ErrorCode.UNAUTHENTICATED, f"{CLUSTER_HEADER} must name the sending cluster's key")
            raw = await bounded_body(request, check_rpc_size, MAX_MESSAGE_BYTES)
            resp = await services.federation.proxy.serve(origin, decode_request(raw, msgpack))
            status = 200
        except AspenError as exc:
            resp, status = error_response(exc), _PROXY_STATUS.get(exc.code, 400)
        except ClientDisconnect:
            return Response(status_code=400)
        return Response(encode_response(resp, msgpack), status, media_type=MSGPACK if msgpack else JSON)

    sync = services.federation.sync.routes(error) if services.federation is not None else []
    return [
        *sync,
        Route(PROXY_PATH, proxy, methods=["POST"]),
        Route(TRUST_REQUEST_PATH, trust_request, methods=["POST"]),
        Route(ANNOUNCE_PATH, announce, methods=["POST"]),
        Route(ANNOUNCEMENT_PATH, announcement, methods=["GET"]),
    ]
