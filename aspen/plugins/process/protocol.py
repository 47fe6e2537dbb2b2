"""The process-plugin wire format (docs/plugin-process.md): one JSON-RPC 2.0
message per line, bounded, with Aspen's error object.

Both ends use this module — the node's :mod:`~aspen.plugins.process.connection`
and the plugin SDK — so there is one framing and one set of limits. Nothing
here does I/O: :class:`LineSplitter` turns bytes into lines and
:class:`FloodMeter` says when a peer sends more than any honest one would.

A message that cannot be decoded must still fail *its* call and only that
one, so the sender puts ``jsonrpc`` and ``id`` first (this module's encoders
do) and :func:`head_id` finds the id in the first bytes of a line that is
too long or malformed.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.nesting import check_depth

VERSION = "2.0"
MiB = 1 << 20
MAX_LINE_BYTES = 4 * MiB + 64 * 1024  # a 4 MiB result (the host-reply limit) and its envelope
MAX_DEPTH = 65  # a host-call argument may nest 64 levels, plus the envelope
HEAD_BYTES = 256  # where the id of an undecodable line is looked for
MAX_CODE_CHARS = 64
_CODE = re.compile(r"[A-Z][A-Z0-9_]*")
_HEAD_ID = re.compile(rb'^\s*\{\s*(?:"jsonrpc"\s*:\s*"[^"]*"\s*,\s*)?"id"\s*:\s*(-?\d{1,18})\s*[,}]')
_HEAD_REQUEST = re.compile(rb'^\s*\{[^{}\[\]]*"method"\s*:')


class Message(msgspec.Struct, omit_defaults=True):
    """Any incoming line: a request has ``method``, a response ``result`` or
    ``error``. Params and results stay raw until their owner decodes them."""

    jsonrpc: str
    id: int | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.Raw()  # empty when absent
    result: msgspec.Raw = msgspec.Raw()
    error: dict[str, Any] | None = None


class _Request(msgspec.Struct):
    jsonrpc: str
    id: int
    method: str
    params: msgspec.Raw


class _Result(msgspec.Struct):
    jsonrpc: str
    id: int
    result: msgspec.Raw


class _Error(msgspec.Struct):
    jsonrpc: str
    id: int | None
    error: dict[str, Any]


_encode = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(Message).decode
EMPTY = msgspec.Raw(b"{}")


def encode_request(id: int, method: str, params: msgspec.Raw) -> bytes:
    return _encode(_Request(VERSION, id, method, params)) + b"\n"


def encode_result(id: int, result: msgspec.Raw) -> bytes:
    return _encode(_Result(VERSION, id, result)) + b"\n"


def encode_error(id: int | None, error: AspenError) -> bytes:
    return _encode(_Error(VERSION, id, error.to_body())) + b"\n"


def raw(value: Any) -> msgspec.Raw:
    """A JSON value as the raw params or result of a message."""
    return msgspec.Raw(_encode(value))


class BadLine(AspenError):
    """A line that is not a message (:func:`head_id` may still say whose call it was)."""


def head_id(line: bytes) -> int | None:
    match = _HEAD_ID.match(line[:HEAD_BYTES])
    return int(match.group(1)) if match else None


def head_is_request(line: bytes) -> bool:
    return _HEAD_REQUEST.match(line[:HEAD_BYTES]) is not None


def decode_line(line: bytes) -> Message:
    """A message, or :class:`BadLine` (``BAD_REQUEST``)."""
    try:
        check_depth(line, max_depth=MAX_DEPTH, code=ErrorCode.BAD_REQUEST)
        msg = _decode_message(line)
    except AspenError as exc:
        raise BadLine(exc.code, exc.message) from None
    except msgspec.DecodeError as exc:
        raise BadLine(ErrorCode.BAD_REQUEST, f"not a JSON-RPC message: {exc}") from None
    if msg.jsonrpc != VERSION:
        raise BadLine(ErrorCode.BAD_REQUEST, f'"jsonrpc" must be "{VERSION}"')
    if msg.method is None and msg.id is None:
        raise BadLine(ErrorCode.BAD_REQUEST, "a message needs a method or an id")
    return msg


def error_from(body: dict[str, Any]) -> AspenError:
    """The peer's error object as an :class:`AspenError`; a malformed one is
    itself an error (``PLUGIN_BAD_OUTPUT``), never trusted."""
    code, message = body.get("code"), body.get("message", "")
    details = body.get("details") or {}
    if not (isinstance(code, str) and len(code) <= MAX_CODE_CHARS and _CODE.fullmatch(code)):
        return AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, f"error code {code!r} is not an upper-case name")
    if not isinstance(message, str) or not isinstance(details, dict):
        return AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, "error message must be a string and details an object")
    return AspenError(code, message, **details)


class Oversized:
    """A line over the limit: its first bytes (to find its id) and its size."""

    __slots__ = ("head", "size")

    def __init__(self, head: bytes, size: int) -> None:
        self.head = head
        self.size = size


class LineSplitter:
    """Bytes in, complete lines out; a line longer than ``max_line`` is
    skipped to its newline and reported as :class:`Oversized`, so memory stays
    bounded whatever the peer writes."""

    __slots__ = ("_buf", "_skip_head", "_skipped", "max_line")

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buf = bytearray()  # an incomplete line (never holds a newline)
        self._skipped = -1  # >= 0 while skipping an oversized line: bytes skipped so far
        self._skip_head = b""

    def _line(self, out: list[bytes | Oversized], line: bytes) -> None:
        if len(line) > self.max_line:
            out.append(Oversized(line[:HEAD_BYTES], len(line)))
        elif line:
            out.append(line)

    def _rest(self, rest: bytes | bytearray) -> None:
        if len(rest) > self.max_line:
            self._skipped, self._skip_head, self._buf = len(rest), bytes(rest[:HEAD_BYTES]), bytearray()

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        out: list[bytes | Oversized] = []
        start = 0
        if self._skipped >= 0 or self._buf:
            end = data.find(b"\n")
            if end < 0:
                if self._skipped >= 0:
                    self._skipped += len(data)
                else:
                    self._buf += data  # amortised: a long line arriving in chunks is copied once
                    self._rest(self._buf)
                return out
            if self._skipped >= 0:
                out.append(Oversized(self._skip_head, self._skipped + end))
                self._skipped, self._skip_head = -1, b""
            else:
                self._line(out, bytes(self._buf) + data[:end])
                self._buf = bytearray()
            start = end + 1
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            self._line(out, data[start:end])
            start = end + 1
        if start < len(data):
            self._buf = bytearray(data[start:])
            self._rest(self._buf)
        return out


class FloodMeter:
    """Bytes and bad lines per window; ``flooded`` once either passes its bound."""

    __slots__ = ("_bytes", "_faults", "_start", "max_bytes", "max_faults", "window")

    def __init__(self, *, window: float = 1.0, max_bytes: int = 64 * MiB, max_faults: int = 100) -> None:
        self.window = window
        self.max_bytes = max_bytes
        self.max_faults = max_faults
        self._start = time.monotonic()
        self._bytes = 0
        self._faults = 0

    def _roll(self) -> None:
        now = time.monotonic()
        if now - self._start >= self.window:
            self._start, self._bytes, self._faults = now, 0, 0

    def add_bytes(self, n: int) -> bool:
        self._roll()
        self._bytes += n
        return self._bytes > self.max_bytes

    def fault(self) -> bool:
        self._roll()
        self._faults += 1
        return self._faults > self.max_faults
