"""The Extism side of the host functions: each one of
:data:`aspen.plugins.host_functions.IMPLEMENTATIONS` becomes an import of
module ``extism:host/user`` taking and returning one JSON document.

The argument's nesting depth is checked before it is decoded
(``BAD_REQUEST``), the reply is capped at the plugin's ``max_reply_bytes``,
and a host bug is logged through the plugin's
:class:`~aspen.plugins.log_throttle.LogThrottle`, not once per call. The
plugin a call acts for arrives as the Extism host context (a
:class:`CallContext`), so one compiled module serves every instance.
"""

from __future__ import annotations

import logging
from typing import Any

import extism
import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import hook_functions  # noqa: F401 -- registers the aspen_hook_* host functions
from aspen.plugins.host_functions import IMPLEMENTATIONS, Impl
from aspen.plugins.log_throttle import LogThrottle
from aspen.plugins.loop_bridge import CallContext
from aspen.rpc.nesting import check_depth

log = logging.getLogger("aspen.plugins")

USER_NAMESPACE = "extism:host/user"
MAX_ARG_DEPTH = 64  # the deepest real argument (a transaction) nests 3 levels

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def host_reply(ctx: CallContext | None, name: str, impl: Impl, raw: bytes) -> bytes:
    """One host call, argument bytes in, reply bytes out (``{"ok": …}`` or
    ``{"error": …}``): the WASM bridge and the process tier both answer with it."""
    if not isinstance(ctx, CallContext):
        return _encode({"error": {"code": ErrorCode.INTERNAL, "message": "host function called outside an Aspen call"}})
    try:
        check_depth(raw, max_depth=MAX_ARG_DEPTH, code=ErrorCode.BAD_REQUEST)
        try:
            args = _decode(raw) if raw else {}
        except msgspec.DecodeError as exc:
            raise AspenError(ErrorCode.BAD_REQUEST, f"{name}: the argument is not JSON") from exc
        if not isinstance(args, dict):
            raise AspenError(ErrorCode.BAD_REQUEST, f"{name}: the argument must be a JSON object")
        out = _encode({"ok": impl(ctx, args)})
        if len(out) > ctx.env.max_reply_bytes:
            raise AspenError(
                ErrorCode.MESSAGE_TOO_LARGE,
                f"{name}: the reply is {len(out)} bytes, a host call may return {ctx.env.max_reply_bytes}",
            )
        return out
    except AspenError as exc:
        return _encode({"error": exc.to_body()})
    except Exception:  # a host bug must reach the guest as an error, never as a crash
        ctx.env.gate.log.log(
            ("host-error", name), logging.ERROR, "plugin %s: host function %s failed", ctx.env.plugin, name,
            exc_info=True,
        )  # fmt: skip
        return _encode({"error": {"code": ErrorCode.INTERNAL, "message": f"{name} failed on the host"}})


_bridge_logger = LogThrottle(log)  # the plugin is unknown here, so one throttle for the process


def _bridge(name: str, impl: Impl) -> extism.Function:
    @extism.host_fn(name=name, namespace=USER_NAMESPACE, signature=([extism.ValType.I64], [extism.ValType.I64]))
    def bridge(current: extism.CurrentPlugin, inputs: list, outputs: list, *_user_data: Any) -> None:
        try:
            ctx = current.host_context()
            out = host_reply(ctx, name, impl, current.input_bytes(inputs[0]))
            current.return_bytes(outputs[0], out)
        except Exception:  # never let an exception unwind into the runtime
            _bridge_logger.log(name, logging.ERROR, "host function %s could not answer", name, exc_info=True)

    return bridge


HOST_FUNCTIONS: list[extism.Function] = [_bridge(name, impl) for name, impl in IMPLEMENTATIONS.items()]
