"""The two HTTP routes that move blobs between nodes (and large blobs to clients).

``PUT /v1/blobs`` streams the raw request body into the store and answers
``{"hash", "size", "was_new"}`` (201 when new, 200 when already there).
``GET /v1/blobs/{hash}`` streams the raw bytes with ``Content-Length``, and
honours a single ``Range: bytes=…`` (206 with ``Content-Range``). Errors are
``{"type": "Error", "body": {"code", "message", "details"?}}`` with a matching
HTTP status, decided before the first byte is sent. A blob found corrupt
mid-stream aborts the connection, so the short body never passes as complete.

A request carrying ``X-Aspen-Peer: 1`` comes from another node: it must carry
the node credential (``cluster:peer``), is served from the node's local copy
only and a pushed replica is not pushed on again (no cascades, no fetch loops
between nodes). Any other request needs ``blob:write`` / ``blob:read`` on the
hash; the token comes as ``Authorization: Bearer``. The node mounts the very same
list: ``Starlette(routes=[*blob_http_routes(store, auth), …])``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aspen.auth.service import HTTP_STATUS, bearer
from aspen.errors import AspenError, ErrorCode
from aspen.storage.blob_args import check_hash

PEER_HEADER = "x-aspen-peer"

_STATUS = {
    ErrorCode.BLOB_NOT_FOUND: 404,
    ErrorCode.INVALID_HASH: 400,
    ErrorCode.INVALID_ARGUMENT: 400,
    ErrorCode.INVALID_RANGE: 416,
    ErrorCode.BLOB_TOO_LARGE: 413,
    ErrorCode.QUOTA_EXCEEDED: 413,
    ErrorCode.BLOB_PROTECTED: 409,
    ErrorCode.BLOB_CORRUPT: 502,
    ErrorCode.PEER_UNAVAILABLE: 503,
    ErrorCode.STORE_CLOSED: 503,
    ErrorCode.STORAGE_UNAVAILABLE: 503,
    **HTTP_STATUS,
}


def error_response(exc: AspenError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "Error", "body": exc.to_body()}, status_code=_STATUS.get(exc.code, 500), headers=headers
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range → (offset, length); None when absent. Multiple
    ranges, other units and unsatisfiable ranges raise ``INVALID_RANGE``."""
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if unit.strip().lower() != "bytes" or "," in spec or not dash or not (first or last):
        raise AspenError(ErrorCode.INVALID_RANGE, f"unsupported Range header {header!r:.100}", size=size)
    if not (first.isdigit() or not first) or not (last.isdigit() or not last):
        raise AspenError(ErrorCode.INVALID_RANGE, f"malformed Range header {header!r:.100}", size=size)
    if not first:  # suffix: the last N bytes
        n = min(int(last), size)
        if n == 0:
            raise AspenError(ErrorCode.INVALID_RANGE, "empty suffix range", size=size)
        return size - n, n
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or end < start:
        raise AspenError(ErrorCode.INVALID_RANGE, f"range {header!r:.100} is outside {size} bytes", size=size)
    return start, end - start + 1


def blob_http_routes(store: Any, auth: Any) -> list[Route]:
    """``PUT /v1/blobs`` and ``GET /v1/blobs/{hash}`` backed by a BlobStore;
    ``auth`` is the node's :class:`~aspen.auth.service.AuthService`."""

    def authorise(request: Request, route: str, body: dict[str, Any]) -> bool:
        """True for a peer; raises the refusal for anyone not allowed."""
        token = bearer(request.headers)
        if request.headers.get(PEER_HEADER) == "1":
            auth.check_peer(token)
            return True
        auth.check_route(token, route, body)
        return False

    async def put_blob(request: Request) -> Response:
        try:
            peer = authorise(request, "BlobUpload", {})
        except AspenError as exc:
            return error_response(exc)
        add = store.add_stream
        if peer:
            add = getattr(store, "accept_replica_stream", add)
        try:
            result = await add(request.stream())
        except AspenError as exc:
            return error_response(exc)
        except ClientDisconnect:  # the store already removed its temp file
            return Response(status_code=400)
        return JSONResponse(
            {"hash": result.hash, "size": result.size, "was_new": result.was_new},
            status_code=201 if result.was_new else 200,
        )

    async def get_blob(request: Request) -> Response:
        source = store
        size = None
        try:
            if authorise(request, "BlobDownload", {"hash": request.path_params["hash"]}):
                source = getattr(store, "local", store)
            h = check_hash(request.path_params["hash"])
            size = await source.size(h)
            wanted = parse_range(request.headers.get("range"), size)
            offset, length = wanted if wanted else (0, size)
            chunks = source.get_stream(h, offset=offset, length=length)
            first = await anext(chunks, b"")  # errors surface here, before any header
        except AspenError as exc:
            extra = (
                {"content-range": f"bytes */{size}"}
                if exc.code == ErrorCode.INVALID_RANGE and size is not None
                else None
            )
            return error_response(exc, extra)

        async def body() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                await chunks.aclose()

        headers = {"content-length": str(length), "accept-ranges": "bytes"}
        if wanted:
            headers["content-range"] = f"bytes {offset}-{offset + length - 1}/{size}"
        return StreamingResponse(
            body(), status_code=206 if wanted else 200, headers=headers, media_type="application/octet-stream"
        )

    return [
        Route("/v1/blobs", put_blob, methods=["PUT"]),
        Route("/v1/blobs/{hash}", get_blob, methods=["GET"]),
    ]
