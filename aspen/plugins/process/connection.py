"""One JSON-RPC peer over a pair of byte streams, calls in flight both ways.

The node holds one per plugin process (the plugin SDK holds the other end):
``call`` sends a request and waits for the answer with the same id until a
deadline; requests from the other side go to the injected ``serve``
callable, several at a time. Bytes arrive through :meth:`Peer.feed` and
leave through the ``write`` callable, so the peer knows nothing of pipes or
processes — the supervisor does.

What a misbehaving peer can do is bounded here, and costs only the call it
concerns: a line over the size limit or not valid JSON fails the call whose
id its first bytes carry; a peer that sends more bytes or bad lines than
:class:`~aspen.plugins.process.protocol.FloodMeter` allows, or leaves a call
unanswered ``deadline_grace`` seconds past its deadline, is reported once
through ``on_fault`` — for the node, the signal to restart the process.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.process.protocol import (
    EMPTY,
    MAX_LINE_BYTES,
    BadLine,
    FloodMeter,
    LineSplitter,
    Message,
    Oversized,
    decode_line,
    encode_error,
    encode_request,
    encode_result,
    error_from,
    head_id,
    head_is_request,
)

log = logging.getLogger("aspen.plugins.process")

Serve = Callable[[str, msgspec.Raw], msgspec.Raw | Awaitable[msgspec.Raw]]


class PeerLimits(msgspec.Struct, frozen=True):
    max_line: int = MAX_LINE_BYTES
    max_serving: int = 64  # calls from the other side handled at once; more are PLUGIN_OVERLOADED
    deadline_grace: float = 1.0  # seconds past a deadline before an unanswered call counts as ignored
    flood_window: float = 1.0
    flood_bytes: int = 64 << 20  # bytes per window
    flood_faults: int = 100  # oversized, malformed or unsolicited lines per window


class Peer:
    """``timeout_code``: what a call that passes its deadline fails with
    (``PLUGIN_TIMEOUT`` for the node's calls into a plugin)."""

    def __init__(
        self,
        write: Callable[[bytes], object],
        serve: Serve,
        *,
        on_fault: Callable[[str], object],
        limits: PeerLimits | None = None,
        timeout_code: str = ErrorCode.PLUGIN_TIMEOUT,
        name: str = "peer",
    ) -> None:
        self.write = write
        self.serve = serve
        self.on_fault = on_fault
        self.limits = limits = limits or PeerLimits()
        self.timeout_code = timeout_code
        self.name = name
        self.fault: str | None = None
        self.closed: AspenError | None = None
        self._lines = LineSplitter(limits.max_line)
        self._flood = FloodMeter(
            window=limits.flood_window, max_bytes=limits.flood_bytes, max_faults=limits.flood_faults
        )
        self._next_id = 1  # of this side's next call
        self._pending: dict[int, asyncio.Future[msgspec.Raw]] = {}
        self._overdue: dict[int, asyncio.TimerHandle] = {}
        self._serving: set[asyncio.Future[None]] = set()
        self._out: list[bytes] | None = None  # lines held until the end of this feed or turn of the loop
        self._feeding = False

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # --- calls to the other side ------------------------------------------------

    async def call(self, method: str, params: msgspec.Raw = EMPTY, timeout: float = 30.0) -> msgspec.Raw:
        """The raw result, or the peer's error as :class:`AspenError`."""
        if self.closed is not None:
            raise self.closed
        id = self._next_id
        self._next_id = id + 1
        line = encode_request(id, method, params)
        if len(line) > self.limits.max_line:  # the other side would refuse it anyway
            raise AspenError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"{method}: a {len(line)}-byte message; the limit is {self.limits.max_line}",
            )
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[msgspec.Raw] = loop.create_future()
        self._pending[id] = fut
        timer = loop.call_later(timeout, self._expire, id, method, timeout)
        try:
            self._send(line)
            return await fut
        finally:
            timer.cancel()
            self._pending.pop(id, None)

    def _expire(self, id: int, method: str, timeout: float) -> None:
        fut = self._pending.pop(id, None)
        if fut is None or fut.done():
            return
        fut.set_exception(AspenError(self.timeout_code, f"{self.name}: {method} did not answer within {timeout:g}s"))
        loop = asyncio.get_running_loop()
        self._overdue[id] = loop.call_later(self.limits.deadline_grace, self._ignored, id, method)

    def _ignored(self, id: int, method: str) -> None:
        self._overdue.pop(id, None)
        self._report(f"{method} (id {id}) was still unanswered {self.limits.deadline_grace:g}s past its deadline")

    def _send(self, line: bytes) -> None:
        """Few pipe writes (each may wake the reader): answers to the lines of
        one :meth:`feed` go together when it ends, and so do the lines of one
        turn of the loop while other calls are in flight; a lone call goes at once."""
        if self._out is not None:
            self._out.append(line)
        elif self._feeding:
            self._out = [line]
        elif len(self._pending) + len(self._serving) <= 1:  # the call or answer being sent is the only one
            self.write(line)
        else:
            self._out = [line]
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.closed is None:
            self.write(b"".join(out))

    # --- bytes from the other side ----------------------------------------------

    def feed(self, data: bytes) -> None:
        if self.closed is not None:
            return
        if self._flood.add_bytes(len(data)):
            self._report(f"more than {self.limits.flood_bytes} bytes in {self.limits.flood_window:g}s")
        self._feeding = True
        try:
            self._lines_in(data)
        finally:
            self._feeding = False
            self._flush()

    def _lines_in(self, data: bytes) -> None:
        for line in self._lines.feed(data):
            if isinstance(line, Oversized):
                self._bad_line(
                    line.head,
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"a line of {line.size} bytes; the limit is {self.limits.max_line}",
                )
                continue
            try:
                msg = decode_line(line)
            except BadLine as exc:
                self._bad_line(line, exc.code, exc.message)
                continue
            if msg.method is not None:
                self._request(msg)
            else:
                self._response(msg)

    def _bad_line(self, head: bytes, code: str, message: str) -> None:
        """Fail the call the line belongs to, if its head says which."""
        self._bad()
        id = head_id(head)
        is_request = head_is_request(head)
        if id is None:
            log.warning("%s: a bad line nobody's call can be told from (%s: %s)", self.name, code, message)
        elif is_request:
            self._send(encode_error(id, AspenError(code, message)))
        else:
            self._settle(id, None, AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, f"{self.name}: {message}"))

    def _response(self, msg: Message) -> None:
        id = msg.id
        assert id is not None
        if msg.error is not None:
            self._settle(id, None, error_from(msg.error))
        elif msg.result:
            self._settle(id, msg.result, None)
        else:
            self._settle(id, None, AspenError(ErrorCode.PLUGIN_BAD_OUTPUT, f"{self.name}: a response needs a result"))

    def _settle(self, id: int, result: msgspec.Raw | None, error: AspenError | None) -> None:
        fut = self._pending.pop(id, None)
        if fut is not None:
            if not fut.done():
                if error is None:
                    fut.set_result(result)  # type: ignore[arg-type]
                else:
                    fut.set_exception(error)
            return
        late = self._overdue.pop(id, None)
        if late is not None:
            late.cancel()  # answered after its deadline, but answered
        elif not 0 < id < self._next_id:  # an id never sent (one below it: a caller gave up)
            self._bad()

    # --- calls from the other side ----------------------------------------------

    def _request(self, msg: Message) -> None:
        id = msg.id
        if id is None:  # the protocol has no notifications
            self._bad()
            return
        if len(self._serving) >= self.limits.max_serving:
            self._send(encode_error(id, AspenError(
                ErrorCode.PLUGIN_OVERLOADED, f"more than {self.limits.max_serving} calls in flight; retry later",
            )))  # fmt: skip
            return
        try:
            result = self.serve(msg.method or "", msg.params or EMPTY)
        except Exception as exc:  # noqa: BLE001 — every failure is an answer, never a lost call
            self._send(encode_error(id, _as_error(self.name, msg.method, exc)))
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._finish(id, msg.method or "", result))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)
        else:
            self._send(encode_result(id, result))

    async def _finish(self, id: int, method: str, result: Awaitable[msgspec.Raw]) -> None:
        try:
            out = encode_result(id, await result)
        except Exception as exc:  # noqa: BLE001
            out = encode_error(id, _as_error(self.name, method, exc))
        if self.closed is None:
            self._send(out)

    # --- the end --------------------------------------------------------------

    def _bad(self) -> None:
        if self._flood.fault():
            self._report(f"more than {self.limits.flood_faults} bad lines in {self.limits.flood_window:g}s")

    def _report(self, reason: str) -> None:
        if self.fault is None and self.closed is None:
            self.fault = reason
            log.warning("%s: %s", self.name, reason)
            self.on_fault(reason)

    def close(self, error: AspenError) -> None:
        """Fail every call in flight with ``error`` and stop serving."""
        if self.closed is not None:
            return
        self.closed = error
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(error)
        self._pending.clear()
        for timer in self._overdue.values():
            timer.cancel()
        self._overdue.clear()
        for task in list(self._serving):
            task.cancel()


def _as_error(name: str, method: str | None, exc: Exception) -> AspenError:
    if isinstance(exc, AspenError):
        return exc
    log.error("%s: serving %s failed", name, method, exc_info=exc)
    return AspenError(ErrorCode.INTERNAL, f"{method} failed")
