"""Limits and input checks of KV requests. The front door
(:mod:`aspen.storage.front_door`) runs them once for every backend, so all
backends reject the same bad input with the same code."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from aspen.errors import AspenError, ErrorCode
from aspen.storage.records import Compare, DeleteOp, PutOp

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20
MAX_OPERATIONS = 1000
DEFAULT_SCAN_LIMIT = 1000
MAX_SCAN_LIMIT = 10_000
MAX_LEASE_TTL = 10 * 365 * 24 * 3600


def check_key(key: object) -> bytes:
    """Validate a key; returns its UTF-8 bytes."""
    if not isinstance(key, str):
        raise AspenError(ErrorCode.INVALID_KEY, f"key must be a string, got {type(key).__name__}")
    if not key:
        raise AspenError(ErrorCode.INVALID_KEY, "key must not be empty")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise AspenError(ErrorCode.INVALID_KEY, "key is not valid UTF-8") from exc
    if len(raw) > MAX_KEY_BYTES:
        raise AspenError(
            ErrorCode.KEY_TOO_LARGE,
            f"key is {len(raw)} bytes, the limit is {MAX_KEY_BYTES}",
            size=len(raw),
            max=MAX_KEY_BYTES,
        )
    return raw


def check_prefix(prefix: object, *, allow_empty: bool = True) -> bytes:
    if not isinstance(prefix, str):
        raise AspenError(ErrorCode.INVALID_KEY, f"prefix must be a string, got {type(prefix).__name__}")
    if not prefix:
        if allow_empty:
            return b""
        raise AspenError(ErrorCode.INVALID_KEY, "prefix must not be empty")
    return check_key(prefix)


def check_value(value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"value must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise AspenError(
            ErrorCode.VALUE_TOO_LARGE,
            f"value is {len(value)} bytes, the limit is {MAX_VALUE_BYTES}",
            size=len(value),
            max=MAX_VALUE_BYTES,
        )
    return value


def check_operation_count(n: int, what: str = "operations") -> None:
    if n > MAX_OPERATIONS:
        raise AspenError(
            ErrorCode.TOO_MANY_OPERATIONS,
            f"{n} {what}, the limit is {MAX_OPERATIONS}",
            count=n,
            max=MAX_OPERATIONS,
        )


def check_limit(limit: object) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"limit must be a positive integer, got {limit!r}")
    if limit > MAX_SCAN_LIMIT:
        raise AspenError(
            ErrorCode.TOO_MANY_OPERATIONS,
            f"limit {limit} exceeds the maximum {MAX_SCAN_LIMIT}",
            count=limit,
            max=MAX_SCAN_LIMIT,
        )
    return limit


def check_ttl(ttl: object) -> int:
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_LEASE_TTL:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"lease TTL must be 1..{MAX_LEASE_TTL} seconds, got {ttl!r}")
    return ttl


# SQLite integers and etcd's revisions, versions and lease ids are int64: a
# bigger Python int would surface as OverflowError deep in a backend.
MAX_INT64 = (1 << 63) - 1
MIN_INT64 = -(1 << 63)
MAX_LEASE_ID = MAX_INT64


def check_lease_id(lease: object, *, allow_zero: bool = True) -> int:
    """A lease id is a positive int64; 0 means "no lease" (or "pick one" on grant)."""
    low = 0 if allow_zero else 1
    if not isinstance(lease, int) or isinstance(lease, bool) or not low <= lease <= MAX_LEASE_ID:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"lease id must be an integer {low}..2**63-1, got {lease!r:.40}")
    return lease


def check_revision(revision: object, name: str = "start_revision") -> int:
    """A revision to start from: a positive int64."""
    if not isinstance(revision, int) or isinstance(revision, bool) or not 1 <= revision <= MAX_INT64:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{name} must be an integer 1..2**63-1, got {revision!r:.40}")
    return revision


def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key with ``prefix`` (etcd's
    range_end); None when there is none (all 0xff, or the empty prefix)."""
    p = bytearray(prefix)
    while p:
        if p[-1] < 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def encode_continuation(last_key: bytes) -> str:
    return base64.urlsafe_b64encode(last_key).decode("ascii")


def decode_continuation(token: str) -> bytes:
    """The last key of the previous page; the next page starts after it."""
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise AspenError(ErrorCode.INVALID_CONTINUATION, "continuation token is malformed") from exc
    if not raw:
        raise AspenError(ErrorCode.INVALID_CONTINUATION, "continuation token is empty")
    return raw


def check_ops_count(*groups: Sequence[object]) -> None:
    check_operation_count(sum(len(g) for g in groups))


def check_distinct_writes(ops: Sequence[object]) -> None:
    """One batch (or one transaction branch) writes each key at most once:
    two puts of one key, or a put inside a key or prefix the same batch
    deletes, are refused, as etcd refuses them. Every backend checks this so
    a batch means the same thing everywhere. Deletes may overlap each other."""
    puts: set[str] = set()
    deleted_keys: set[str] = set()
    deleted_prefixes: list[str] = []
    for op in ops:
        if isinstance(op, PutOp):
            if op.key in puts:
                raise AspenError(
                    ErrorCode.INVALID_ARGUMENT, f"key {op.key!r} is written twice in one batch", key=op.key
                )
            puts.add(op.key)
        elif isinstance(op, DeleteOp):
            (deleted_prefixes.append if op.prefix else deleted_keys.add)(op.key)
    for key in puts:
        if key in deleted_keys or any(isinstance(p, str) and key.startswith(p) for p in deleted_prefixes):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, f"key {key!r} is both written and deleted in one batch", key=key
            )


COMPARE_TARGETS = ("value", "version", "create_revision", "mod_revision", "exists")
COMPARE_OPS = ("==", "!=", ">", "<")


def check_compare(cmp: object) -> Compare:
    """A transaction guard every backend can evaluate: a known target and
    op, and a value of the target's kind (bytes, int, or bool for ``exists``,
    which only takes == and !=)."""
    if not isinstance(cmp, Compare):
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"compares must be Compare records, got {type(cmp).__name__}")
    check_key(cmp.key)
    if cmp.target not in COMPARE_TARGETS:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"unknown compare target {cmp.target!r}")
    if cmp.op not in COMPARE_OPS:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"unknown compare op {cmp.op!r}")
    value = cmp.value
    if cmp.target == "value":
        ok = isinstance(value, bytes)
    elif cmp.target == "exists":
        ok = isinstance(value, bool) and cmp.op in ("==", "!=")
    else:
        ok = isinstance(value, int) and not isinstance(value, bool) and MIN_INT64 <= value <= MAX_INT64
    if not ok:
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT,
            f"compare on {cmp.target} with {cmp.op} cannot take {value!r:.40}",
            target=cmp.target,
        )
    return cmp


def scan_bounds(
    prefix: str | None, start: str | None, end: str | None, continuation: str | None
) -> tuple[bytes, bytes | None]:
    """[lo, hi) of a scan: prefix, start/end and the continuation all narrow
    the range; hi None means to the end of the key space."""
    lo, hi = b"", None
    if prefix is not None:
        lo = check_prefix(prefix)
        hi = prefix_end(lo)
    if start is not None:
        lo = max(lo, check_key(start))
    if end is not None:
        e = check_key(end)
        hi = e if hi is None else min(hi, e)
    if continuation is not None:
        if not isinstance(continuation, str):
            raise AspenError(ErrorCode.INVALID_CONTINUATION, "continuation token must be a string")
        lo = max(lo, decode_continuation(continuation) + b"\x00")
    return lo, hi
