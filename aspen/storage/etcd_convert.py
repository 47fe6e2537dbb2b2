"""Aspen's KV records as etcd v3 protobufs and back, for the etcd backend
(:mod:`aspen.storage.etcd`): compares, transaction ops and their results."""

from __future__ import annotations

from collections.abc import Sequence

from aetcd import rpc

from aspen.storage.backend import CheckedOp
from aspen.storage.records import (
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    PutOp,
    TxnOp,
    TxnOpResult,
)

ALL = b"\0"  # etcd: key "\0" with range_end "\0" means every key
_COMPARE_OPS = {"==": rpc.Compare.EQUAL, "!=": rpc.Compare.NOT_EQUAL, ">": rpc.Compare.GREATER, "<": rpc.Compare.LESS}
_RPC_TARGETS = {
    "version": rpc.Compare.VERSION,
    "create_revision": rpc.Compare.CREATE,
    "mod_revision": rpc.Compare.MOD,
}


def to_kv(m) -> KeyValue:
    return KeyValue(
        key=m.key.decode("utf-8", "surrogateescape"),
        value=bytes(m.value),
        version=m.version,
        create_revision=m.create_revision,
        mod_revision=m.mod_revision,
        lease=m.lease,
    )


def range_bounds(lo: bytes, hi: bytes | None) -> tuple[bytes, bytes]:
    """etcd spells "from the first key" and "to the last key" as "\\0"."""
    return lo or ALL, hi or ALL


def holds(c: Compare, kv: KeyValue | None) -> bool:
    """Aspen's compare semantics on a snapshot of the key (to name the
    compare that failed): as in etcd, a value compare on a missing key
    never holds; versions and revisions of a missing key are 0."""
    if c.target == "exists":
        actual: object = kv is not None
    elif c.target == "value":
        if kv is None:
            return False
        actual = kv.value
    else:
        actual = getattr(kv, c.target) if kv is not None else 0
    want = bytes(c.value) if c.target == "value" else c.value
    if c.op == "==":
        return actual == want
    if c.op == "!=":
        return actual != want
    if c.op == ">":
        return actual > want  # type: ignore[operator]
    return actual < want  # type: ignore[operator]


def native_compare(c: Compare) -> rpc.Compare:
    """The etcd compare with the same meaning."""
    key = c.key.encode()
    if c.target == "exists":  # exists <=> create_revision > 0
        present = c.value == (c.op == "==")
        return rpc.Compare(
            key=key,
            target=rpc.Compare.CREATE,
            result=rpc.Compare.GREATER if present else rpc.Compare.EQUAL,
            create_revision=0,
        )
    if c.target == "value":
        return rpc.Compare(key=key, target=rpc.Compare.VALUE, result=_COMPARE_OPS[c.op], value=bytes(c.value))
    # the proto field is named like the target
    return rpc.Compare(key=key, target=_RPC_TARGETS[c.target], result=_COMPARE_OPS[c.op], **{c.target: c.value})


def get_request(key: bytes) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=key))


def op_request(checked: CheckedOp) -> rpc.RequestOp:
    op, key, end, value = checked
    if isinstance(op, PutOp):
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=value, lease=op.lease))
    if isinstance(op, DeleteOp):
        if op.prefix:
            start, end = range_bounds(key, end)
            return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=start, range_end=end))
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
    if isinstance(op, GetOp):
        return get_request(key)
    start, end = range_bounds(key, end)
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=start, range_end=end, limit=op.limit))


def op_result(resp: rpc.ResponseOp, revision: int) -> TxnOpResult:
    kind = resp.WhichOneof("response")
    if kind == "response_put":
        return TxnOpResult(op="put", revision=revision)
    if kind == "response_delete_range":
        return TxnOpResult(op="delete", deleted=resp.response_delete_range.deleted)
    rr = resp.response_range
    return TxnOpResult(op="range", kvs=[to_kv(m) for m in rr.kvs], more=rr.more)


def op_results(ops: Sequence[TxnOp], responses, revision: int) -> list[TxnOpResult]:
    out = []
    for op, resp in zip(ops, responses):
        r = op_result(resp, revision)
        if isinstance(op, GetOp):
            kvs = r.kvs
            r = TxnOpResult(op="get", kv=kvs[0] if kvs else None)
        out.append(r)
    return out


def first_kv(resp: rpc.ResponseOp) -> KeyValue | None:
    kvs = resp.response_range.kvs
    return to_kv(kvs[0]) if kvs else None
