"""The host functions a WASM plugin can import (Extism module
``extism:host/user``, every name prefixed ``aspen_``).

Each takes one JSON object and returns one JSON object: ``{"ok": {...}}`` or
``{"error": {"code", "message"}}`` — a denial or a bad argument is an answer
the guest can branch on, never a trap. The argument's nesting depth is
checked before it is decoded (``BAD_REQUEST``), integers must fit 64 bits
(``INVALID_ARGUMENT``), and a host bug is logged through the plugin's
:class:`~aspen.plugins.log_throttle.LogThrottle`, not once per call.

The functions are defined once for the process; the plugin they act for
arrives per call as the Extism host context (a :class:`CallContext`), so one
compiled module serves every instance and no host function can act for the
wrong plugin.

They run on the plugin's worker thread. Async services (KV, blobs) are
reached with ``run_coroutine_threadsafe`` onto the node's event loop and
waited for at most until the call's deadline. That cannot deadlock: WASM
never runs on the loop thread (checked here), and the loop never blocks on
a WASM call — it awaits a future, or waits inline for at most 100 µs and
stops at once when a host function bumps ``LOOP_ATTENTION``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import concurrent.futures
import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import extism
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.handoff import (
    LOOP_ATTENTION,
    WORKER_SPIN_NS,
    EventCount,
    quiet_wakeups,
    wake,
)
from aspen.plugins.gate import PluginGate
from aspen.plugins.log_throttle import LogThrottle
from aspen.rpc.nesting import check_depth
from aspen.storage.limits import check_limit, check_ops_count
from aspen.storage.protocol import BlobStore, KeyValueStore
from aspen.storage.records import (
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    PutOp,
    RangeOp,
    TxnResult,
)

log = logging.getLogger("aspen.plugins")

USER_NAMESPACE = "extism:host/user"
HOST_API_VERSION = "1.0.0"
MAX_RANDOM_BYTES = 4096
MAX_LOG_CHARS = 4096
DEFAULT_SCAN_LIMIT = 100
MAX_ARG_DEPTH = 64  # the deepest real argument (a transaction) nests 3 levels
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


class HostEnv:
    """What the host functions may reach on behalf of one plugin."""

    def __init__(
        self,
        gate: PluginGate,
        *,
        kv: KeyValueStore | None,
        blobs: BlobStore | None,
        loop: asyncio.AbstractEventLoop,
        loop_thread: int,
        node_info: dict[str, Any],
        signing_key: Ed25519PrivateKey | None,
        max_reply_bytes: int,
    ) -> None:
        self.plugin = gate.plugin
        self.gate = gate
        self.kv = kv
        self.blobs = blobs
        self.loop = loop
        self.loop_thread = loop_thread
        self.node_info = node_info
        self.signing_key = signing_key
        self.max_reply_bytes = max_reply_bytes


class CallContext:
    """Per guest call: whose call it is and when it must be done."""

    __slots__ = ("deadline", "env")

    def __init__(self, env: HostEnv, deadline: float) -> None:
        self.env = env
        self.deadline = deadline


_host_waits = threading.local()  # per worker thread: an EventCount bumped when its host call is answered


def _wake_caller(done: EventCount, env: HostEnv) -> None:
    if threading.get_ident() == env.loop_thread:
        wake(done, env.loop)  # the loop bumps it once it lets go of the GIL
    else:  # the answer was there before the callback was added
        done.bump()


def run_on_loop(ctx: CallContext, coro: Coroutine[Any, Any, Any]) -> Any:
    env = ctx.env
    if threading.get_ident() == env.loop_thread:
        coro.close()
        raise AspenError(ErrorCode.INTERNAL, "host function called on the event-loop thread")
    remaining = ctx.deadline - time.monotonic()
    if remaining <= 0:
        coro.close()
        raise AspenError(ErrorCode.TIMEOUT, "the plugin call ran out of time")
    done = getattr(_host_waits, "done", None)
    if done is None:
        done = _host_waits.done = EventCount()
    seen = done.value()
    try:
        with quiet_wakeups():  # the loop is woken below, once this thread lets go of the GIL
            fut = asyncio.run_coroutine_threadsafe(coro, env.loop)
    except RuntimeError as exc:  # loop closed: the node is shutting down
        coro.close()
        raise AspenError(ErrorCode.UNAVAILABLE, "the node is shutting down") from exc
    fut.add_done_callback(lambda _: _wake_caller(done, env))
    # Bring the loop (it may be waiting inline for this very plugin call), then
    # wait for the answer without the GIL: spin, then park until the deadline.
    LOOP_ATTENTION.bump_and_wait(done, seen, WORKER_SPIN_NS, int(remaining * 1e9))
    try:
        return fut.result(timeout=max(0.0, ctx.deadline - time.monotonic()))
    except concurrent.futures.TimeoutError as exc:
        fut.cancel()
        raise AspenError(ErrorCode.TIMEOUT, "the plugin call ran out of time") from exc
    except concurrent.futures.CancelledError as exc:
        raise AspenError(ErrorCode.UNAVAILABLE, "the operation was cancelled") from exc


# --- argument and result encoding --------------------------------------------


def _bad(message: str) -> AspenError:
    return AspenError(ErrorCode.INVALID_ARGUMENT, message)


def bytes_arg(args: dict[str, Any], name: str, *, required: bool = True) -> bytes | None:
    """Bytes arrive as UTF-8 text in ``name`` or base64 in ``name_b64``."""
    text = args.get(name)
    if text is not None:
        if not isinstance(text, str):
            raise _bad(f"{name} must be a string (use {name}_b64 for binary)")
        return text.encode()
    b64 = args.get(name + "_b64")
    if b64 is not None:
        if not isinstance(b64, str):
            raise _bad(f"{name}_b64 must be a base64 string")
        try:
            return base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _bad(f"{name}_b64 is not valid base64") from exc
    if required:
        raise _bad(f"{name} (or {name}_b64) is required")
    return None


def _int_arg(args: dict[str, Any], name: str, default: int) -> int:
    value = args.get(name, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"{name} must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise _bad(f"{name} must fit a signed 64-bit integer")
    return value


def put_bytes(out: dict[str, Any], name: str, data: bytes) -> dict[str, Any]:
    """The mirror of :func:`bytes_arg`: text when it is UTF-8, else base64."""
    try:
        out[name] = data.decode()
    except UnicodeDecodeError:
        out[name + "_b64"] = base64.b64encode(data).decode()
    return out


def kv_json(kv: KeyValue | None) -> dict[str, Any] | None:
    if kv is None:
        return None
    out = {
        "key": kv.key,
        "version": kv.version,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "lease": kv.lease,
    }
    return put_bytes(out, "value", kv.value)


def _kv(env: HostEnv) -> KeyValueStore:
    if env.kv is None:
        raise AspenError(ErrorCode.UNAVAILABLE, "this node has no KV store for plugins")
    return env.kv


def _blobs(env: HostEnv) -> BlobStore:
    if env.blobs is None:
        raise AspenError(ErrorCode.UNAVAILABLE, "this node has no blob store for plugins")
    return env.blobs


# --- the functions --------------------------------------------------------------

Impl = Callable[[CallContext, dict[str, Any]], dict[str, Any]]
IMPLEMENTATIONS: dict[str, Impl] = {}


def host_function(name: str) -> Callable[[Impl], Impl]:
    def register(impl: Impl) -> Impl:
        IMPLEMENTATIONS[name] = impl
        return impl

    return register


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}


@host_function("aspen_log")
def _log(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    name = args.get("level", "info")
    level = _LOG_LEVELS.get(name) if isinstance(name, str) else None
    if level is None:
        raise _bad("level must be one of debug, info, warn, error")
    message = args.get("message", "")
    if not isinstance(message, str):
        raise _bad("message must be a string")
    log.log(level, "[plugin %s] %s", ctx.env.plugin, message[:MAX_LOG_CHARS])
    return {}


@host_function("aspen_now_ms")
def _now_ms(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"now_ms": now_ms()}


@host_function("aspen_host_api_version")
def _api_version(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    return {"version": HOST_API_VERSION}


@host_function("aspen_host_capabilities")
def _capabilities(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    gate = ctx.env.gate
    return {
        "functions": sorted(IMPLEMENTATIONS),
        "permissions": sorted(gate.permissions),
        "kv_prefixes": list(gate.prefixes),
    }


@host_function("aspen_kv_get")
def _kv_get(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_read")
    key = env.gate.check_key(args.get("key"), "read")
    return {"kv": kv_json(run_on_loop(ctx, _kv(env).get(key)))}


@host_function("aspen_kv_put")
def _kv_put(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_write")
    key = env.gate.check_key(args.get("key"), "write")
    value = bytes_arg(args, "value")
    return {"revision": run_on_loop(ctx, _kv(env).put(key, value))}


@host_function("aspen_kv_delete")
def _kv_delete(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_write")
    key = env.gate.check_key(args.get("key"), "delete")
    return {"deleted": run_on_loop(ctx, _kv(env).delete(key))}


@host_function("aspen_kv_scan")
def _kv_scan(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_read")
    continuation = args.get("continuation")
    prefix = env.gate.check_scan(args.get("prefix"), continuation)
    limit = check_limit(_int_arg(args, "limit", DEFAULT_SCAN_LIMIT))
    page = run_on_loop(ctx, _kv(env).scan(prefix, limit=limit, continuation=continuation))
    return {
        "entries": [kv_json(kv) for kv in page.entries],
        "is_truncated": page.is_truncated,
        "continuation": page.continuation_token,
        "revision": page.revision,
    }


@host_function("aspen_kv_cas")
def _kv_cas(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    # CAS reveals the current value on failure, so it needs read as well as write.
    env = ctx.env
    env.gate.require("kv_read")
    env.gate.require("kv_write")
    key = env.gate.check_key(args.get("key"), "cas")
    expected = bytes_arg(args, "expected", required=False)
    new = bytes_arg(args, "new")
    result = run_on_loop(ctx, _kv(env).compare_and_swap(key, expected, new))
    return {"succeeded": result.succeeded, "kv": kv_json(result.actual), "revision": result.revision}


def _op_list(args: dict[str, Any], name: str) -> list[dict[str, Any]]:
    ops = args.get(name, [])
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise _bad(f"{name} must be a list of objects")
    return ops


def _write_op(gate: PluginGate, o: dict[str, Any]) -> PutOp | DeleteOp:
    kind = o.get("op")
    if kind == "put":
        return PutOp(gate.check_key(o.get("key"), "write"), bytes_arg(o, "value"))
    if kind == "delete":
        if o.get("prefix", False):
            return DeleteOp(gate.check_scan(o.get("key"), op="delete"), prefix=True)
        return DeleteOp(gate.check_key(o.get("key"), "delete"))
    raise _bad(f"unknown write op {kind!r} (put, delete)")


@host_function("aspen_kv_batch")
def _kv_batch(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_write")
    raw = _op_list(args, "ops")
    check_ops_count(raw)
    ops = [_write_op(env.gate, o) for o in raw]  # every key checked before any write
    return {"revision": run_on_loop(ctx, _kv(env).batch_write(ops))}


_COMPARE_INT_TARGETS = ("version", "create_revision", "mod_revision")


def _compare(gate: PluginGate, c: dict[str, Any]) -> Compare:
    key = gate.check_key(c.get("key"), "compare")
    target = c.get("target", "value")
    op = c.get("op", "==")
    if op not in ("==", "!=", ">", "<"):
        raise _bad(f"compare op {op!r} is not one of ==, !=, >, <")
    if target == "value":
        value: bytes | int | bool | None = bytes_arg(c, "value", required=False)
    elif target in _COMPARE_INT_TARGETS:
        value = _int_arg(c, "value", 0)
    elif target == "exists":
        value = c.get("value", True)
        if not isinstance(value, bool):
            raise _bad("an exists compare takes a boolean value")
    else:
        raise _bad(f"compare target {target!r} is unknown")
    return Compare(key=key, target=target, op=op, value=value)


def _txn_op(gate: PluginGate, o: dict[str, Any]) -> PutOp | DeleteOp | GetOp | RangeOp:
    kind = o.get("op")
    if kind == "get":
        return GetOp(gate.check_key(o.get("key"), "read"))
    if kind == "range":
        prefix = gate.check_scan(o.get("prefix"), op="range")
        return RangeOp(prefix, check_limit(_int_arg(o, "limit", DEFAULT_SCAN_LIMIT)))
    return _write_op(gate, o)


def _txn_json(result: TxnResult) -> dict[str, Any]:
    return {
        "succeeded": result.succeeded,
        "failed_compare": result.failed_compare,
        "revision": result.revision,
        "results": [
            {
                "op": r.op,
                "revision": r.revision,
                "deleted": r.deleted,
                "kv": kv_json(r.kv),
                "kvs": [kv_json(kv) for kv in r.kvs],
                "more": r.more,
            }
            for r in result.results
        ],
    }


@host_function("aspen_kv_transaction")
def _kv_transaction(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    compares = _op_list(args, "compares")
    success = _op_list(args, "success")
    failure = _op_list(args, "failure")
    check_ops_count(compares, success, failure)
    kinds = {str(o.get("op")) for o in success + failure}  # an op that is not a string is refused below
    if compares or kinds & {"get", "range"}:
        env.gate.require("kv_read")
    if kinds & {"put", "delete"}:
        env.gate.require("kv_write")
    txn = (
        [_compare(env.gate, c) for c in compares],
        [_txn_op(env.gate, o) for o in success],
        [_txn_op(env.gate, o) for o in failure],
    )
    return _txn_json(run_on_loop(ctx, _kv(env).transaction(*txn)))


def _hash_arg(args: dict[str, Any]) -> str:
    h = args.get("hash")
    if not isinstance(h, str):
        raise AspenError(ErrorCode.INVALID_HASH, "hash must be a hex string")
    return h


@host_function("aspen_blob_has")
def _blob_has(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.env.gate.require("blob_read")
    return {"exists": run_on_loop(ctx, _blobs(ctx.env).has(_hash_arg(args)))}


@host_function("aspen_blob_get")
def _blob_get(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("blob_read")
    h = _hash_arg(args)
    offset = _int_arg(args, "offset", 0)
    store = _blobs(env)
    size = run_on_loop(ctx, store.size(h))
    length = args.get("length")
    want = max(0, size - offset) if length is None else _int_arg(args, "length", 0)
    if want * 4 // 3 + 64 > env.max_reply_bytes:
        raise AspenError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"blob range of {want} bytes exceeds what a host call may return; read it in ranges",
            size=size,
        )
    data = run_on_loop(ctx, store.get_bytes(h, offset=offset, length=None if length is None else want))
    return {"data_b64": base64.b64encode(data).decode(), "size": size}


@host_function("aspen_blob_put")
def _blob_put(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("blob_write")
    data = bytes_arg(args, "data")
    result = run_on_loop(ctx, _blobs(env).add_bytes(data))
    return {"hash": result.hash, "size": result.size, "was_new": result.was_new}


@host_function("aspen_random_bytes")
def _random_bytes(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.env.gate.require("randomness")
    n = _int_arg(args, "n", 32)
    if not 0 <= n <= MAX_RANDOM_BYTES:
        raise _bad(f"n must be 0..{MAX_RANDOM_BYTES}")
    return {"bytes_b64": base64.b64encode(secrets.token_bytes(n)).decode()}


@host_function("aspen_node_info")
def _node_info(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.env.gate.require("cluster_info")
    return dict(ctx.env.node_info)


def _public_hex(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@host_function("aspen_sign")
def _sign(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("signing")
    if env.signing_key is None:
        raise AspenError(ErrorCode.UNAVAILABLE, "this node has no signing key")
    data = bytes_arg(args, "data")
    return {"signature": env.signing_key.sign(data).hex(), "public_key": _public_hex(env.signing_key)}


@host_function("aspen_verify")
def _verify(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.env.gate.require("signing")
    data = bytes_arg(args, "data")
    try:
        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(args.get("public_key", "")))
        signature = bytes.fromhex(args.get("signature", ""))
    except (ValueError, TypeError) as exc:
        raise _bad("public_key must be 64 hex digits and signature hex") from exc
    try:
        public.verify(signature, data)
    except InvalidSignature:
        return {"valid": False}
    return {"valid": True}


# --- the Extism bridge ------------------------------------------------------------

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _reply(ctx: CallContext | None, name: str, impl: Impl, raw: bytes) -> bytes:
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
            out = _reply(ctx, name, impl, current.input_bytes(inputs[0]))
            current.return_bytes(outputs[0], out)
        except Exception:  # never let an exception unwind into the runtime
            _bridge_logger.log(name, logging.ERROR, "host function %s could not answer", name, exc_info=True)

    return bridge


HOST_FUNCTIONS: list[extism.Function] = [_bridge(name, impl) for name, impl in IMPLEMENTATIONS.items()]
