"""The wire envelope of ``POST /v1/rpc`` and its two encodings.

Request: ``{"type": "ReadKey", "body": {...}, "app": null, "token": null,
"proxy_hops": 0, "timeout_ms": null}``. Response: ``{"type": "ReadResult",
"body": {...}}`` or ``{"type": "Error", "body": {"code", "message", "details"?}}``.
JSON by default, msgpack when the content type says so. Size is checked
before decoding, nesting depth before anything recurses over the message
(:mod:`aspen.rpc.nesting`).
"""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.handler import Response
from aspen.rpc.nesting import (
    MAX_DEPTH,
    check_depth,
    check_value_depth,
    msgpack_may_exceed,
    too_deep,
)
from aspen.storage.limits import MAX_INT64, MIN_INT64

MAX_MESSAGE_BYTES = 4 << 20
JSON = "application/json"
MSGPACK = "application/msgpack"


class Envelope(msgspec.Struct, frozen=True):
    type: str
    body: dict[str, Any] = {}
    app: str | None = None
    token: str | None = None
    proxy_hops: int = 0
    timeout_ms: int | None = None  # the caller's deadline, capped by the node


class WireResponse(msgspec.Struct, frozen=True):
    type: str
    body: dict[str, Any]


_json_env = msgspec.json.Decoder(Envelope)
_mp_env = msgspec.msgpack.Decoder(Envelope)
_json_resp = msgspec.json.Decoder(WireResponse)
_mp_resp = msgspec.msgpack.Decoder(WireResponse)
_json_enc = msgspec.json.Encoder()
_mp_enc = msgspec.msgpack.Encoder()


def is_msgpack(content_type: str | None) -> bool:
    return bool(content_type) and "msgpack" in content_type  # type: ignore[operator]


def check_size(n: int) -> None:
    if n > MAX_MESSAGE_BYTES:
        raise AspenError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"message is {n} bytes, the limit is {MAX_MESSAGE_BYTES}",
            size=n,
            max=MAX_MESSAGE_BYTES,
        )


def decode_request(data: bytes, msgpack: bool) -> Envelope:
    check_size(len(data))
    try:
        if not msgpack:
            check_depth(data, max_depth=MAX_DEPTH)
        env = (_mp_env if msgpack else _json_env).decode(data)
        if msgpack and msgpack_may_exceed(data, MAX_DEPTH):
            check_value_depth({"body": env.body}, max_depth=MAX_DEPTH)  # the envelope is one level
    except RecursionError:  # msgspec stops at Python's recursion limit, long before it overflows
        raise too_deep("message", MAX_DEPTH) from None
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.BAD_REQUEST, f"malformed envelope: {exc}") from None
    except msgspec.DecodeError as exc:
        kind = "msgpack" if msgpack else "JSON"
        raise AspenError(ErrorCode.BAD_REQUEST, f"request is not valid {kind}: {exc}") from None
    if env.proxy_hops < 0:
        raise AspenError(ErrorCode.BAD_REQUEST, "proxy_hops must not be negative")
    if env.proxy_hops > MAX_INT64 or (env.timeout_ms is not None and not MIN_INT64 <= env.timeout_ms <= MAX_INT64):
        raise AspenError(ErrorCode.BAD_REQUEST, "proxy_hops and timeout_ms must be 64-bit integers")
    return env


def encode_request(env: Envelope, msgpack: bool) -> bytes:
    return (_mp_enc if msgpack else _json_enc).encode(env)


def encode_response(resp: Response, msgpack: bool) -> bytes:
    return (_mp_enc if msgpack else _json_enc).encode(WireResponse(resp.type, resp.body))


def decode_response(data: bytes, msgpack: bool) -> WireResponse:
    try:
        return (_mp_resp if msgpack else _json_resp).decode(data)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise AspenError(ErrorCode.BAD_REQUEST, f"malformed response from node: {exc}") from None
