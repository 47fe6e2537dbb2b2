"""The host functions a WASM plugin can import (every name prefixed
``aspen_``), as plain Python: each takes the call's :class:`CallContext`
and one decoded JSON object and returns one JSON object, or raises an
:class:`AspenError` the bridge turns into ``{"error": {"code", "message"}}``
— a denial or a bad argument is an answer the guest can branch on, never a
trap. Integers must fit 64 bits (``INVALID_ARGUMENT``).

The functions are defined once for the process; the plugin they act for
arrives per call in the context, so no host function can act for the wrong
plugin. How they are exposed to Extism is :mod:`aspen.plugins.extism_bridge`;
how they reach the event loop is :mod:`aspen.plugins.loop_bridge`.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.gate import PluginGate
from aspen.plugins.lease_owner import lease_arg, leases_of, require_owned
from aspen.plugins.loop_bridge import CallContext, HostEnv, run_on_loop
from aspen.plugins.rules import HOST_API_VERSION
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

MAX_RANDOM_BYTES = 4096
MAX_LOG_CHARS = 4096
DEFAULT_SCAN_LIMIT = 100
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


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


def env_kv(env: HostEnv) -> KeyValueStore:
    """The store a host function acts on (``UNAVAILABLE`` on a node without one)."""
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
    return {"kv": kv_json(run_on_loop(ctx, env_kv(env).get(key)))}


@host_function("aspen_kv_put")
def _kv_put(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_write")
    key = env.gate.check_key(args.get("key"), "write")
    value = bytes_arg(args, "value")
    lease = lease_arg(args)
    require_owned(ctx, [lease])
    return {"revision": run_on_loop(ctx, env_kv(env).put(key, value, lease=lease))}


@host_function("aspen_kv_delete")
def _kv_delete(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_write")
    key = env.gate.check_key(args.get("key"), "delete")
    return {"deleted": run_on_loop(ctx, env_kv(env).delete(key))}


@host_function("aspen_kv_scan")
def _kv_scan(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    env = ctx.env
    env.gate.require("kv_read")
    continuation = args.get("continuation")
    prefix = env.gate.check_scan(args.get("prefix"), continuation)
    limit = check_limit(_int_arg(args, "limit", DEFAULT_SCAN_LIMIT))
    page = run_on_loop(ctx, env_kv(env).scan(prefix, limit=limit, continuation=continuation))
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
    result = run_on_loop(ctx, env_kv(env).compare_and_swap(key, expected, new))
    return {"succeeded": result.succeeded, "kv": kv_json(result.actual), "revision": result.revision}


def _op_list(args: dict[str, Any], name: str) -> list[dict[str, Any]]:
    ops = args.get(name, [])
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise _bad(f"{name} must be a list of objects")
    return ops


def _write_op(gate: PluginGate, o: dict[str, Any]) -> PutOp | DeleteOp:
    kind = o.get("op")
    if kind == "put":
        return PutOp(gate.check_key(o.get("key"), "write"), bytes_arg(o, "value"), lease=lease_arg(o))
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
    require_owned(ctx, leases_of(ops))
    return {"revision": run_on_loop(ctx, env_kv(env).batch_write(ops))}


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
    require_owned(ctx, leases_of(txn[1] + txn[2]))
    return _txn_json(run_on_loop(ctx, env_kv(env).transaction(*txn)))


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


# Functions kept in their own modules register into the same table on import.
from aspen.plugins import hook_functions, host_leases, timer_functions  # noqa: F401
