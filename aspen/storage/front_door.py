"""The KV front door: every request is validated here, once, before any
backend sees it (etcd's ``v3rpc`` validates before ``mvcc`` the same way).

A backend (:class:`aspen.storage.backend.KvBackend`) implements only the raw
operations on checked, encoded input, so "every backend rejects the same
inputs with the same codes" holds by construction, not by each backend
repeating the checks of :mod:`aspen.storage.limits`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Generic, TypeVar

from aspen.errors import AspenError, ErrorCode
from aspen.storage import limits
from aspen.storage.backend import CheckedOp, KvBackend
from aspen.storage.records import (
    CasResult,
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    LeaseInfo,
    PutOp,
    RangeOp,
    ScanPage,
    TxnOp,
    TxnResult,
    WatchEvent,
    WriteOp,
)

B = TypeVar("B", bound=KvBackend)


def _check_write(op: object) -> CheckedOp:
    if isinstance(op, PutOp):
        key = limits.check_key(op.key)
        value = limits.check_value(op.value)
        limits.check_lease_id(op.lease)
        return CheckedOp(op, key, None, value)
    if isinstance(op, DeleteOp):
        if op.prefix:
            lo = limits.check_prefix(op.key, allow_empty=False)
            return CheckedOp(op, lo, limits.prefix_end(lo))
        return CheckedOp(op, limits.check_key(op.key))
    raise AspenError(ErrorCode.INVALID_ARGUMENT, f"batch_write takes PutOp or DeleteOp, got {type(op).__name__}")


def _check_txn_op(op: object) -> CheckedOp:
    if isinstance(op, GetOp):
        return CheckedOp(op, limits.check_key(op.key))
    if isinstance(op, RangeOp):
        limits.check_limit(op.limit)
        lo = limits.check_prefix(op.prefix)
        return CheckedOp(op, lo, limits.prefix_end(lo))
    if isinstance(op, (PutOp, DeleteOp)):
        return _check_write(op)
    raise AspenError(ErrorCode.INVALID_ARGUMENT, f"unknown transaction op {type(op).__name__}")


class KvFrontDoor(Generic[B]):
    """:class:`aspen.storage.protocol.KeyValueStore` over a raw backend.

    ``backend`` is public for what only that backend offers (diagnostics,
    its connections); calling it directly skips validation."""

    def __init__(self, backend: B) -> None:
        self.backend = backend
        self._get = backend.get  # bound once: get is the hot path

    # --- reads ----------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        return await self._get(limits.check_key(key))

    async def batch_read(self, keys: Sequence[str]) -> list[KeyValue | None]:
        keys = list(keys)
        limits.check_operation_count(len(keys), "keys")
        checked = [limits.check_key(k) for k in keys]
        return await self.backend.get_many(checked)

    async def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int = limits.DEFAULT_SCAN_LIMIT,
        continuation: str | None = None,
    ) -> ScanPage:
        limit = limits.check_limit(limit)
        lo, hi = limits.scan_bounds(prefix, start, end, continuation)
        if hi is not None and lo >= hi:
            revision = await self.backend.current_revision()
            return ScanPage(entries=[], is_truncated=False, continuation_token=None, revision=revision)
        entries, more, revision = await self.backend.range(lo, hi, limit)
        more = more and bool(entries)
        token = limits.encode_continuation(entries[-1].key.encode("utf-8", "surrogateescape")) if more else None
        return ScanPage(entries=entries, is_truncated=more, continuation_token=token, revision=revision)

    async def current_revision(self) -> int:
        return await self.backend.current_revision()

    # --- writes ---------------------------------------------------------------

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        checked = limits.check_key(key), limits.check_value(value), limits.check_lease_id(lease)
        return await self.backend.put(*checked)

    async def delete(self, key: str) -> bool:
        checked = limits.check_key(key)
        return await self.backend.delete(checked)

    async def delete_prefix(self, prefix: str) -> int:
        lo = limits.check_prefix(prefix, allow_empty=False)
        return await self.backend.delete_range(lo, limits.prefix_end(lo))

    async def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> CasResult:
        key_b = limits.check_key(key)
        expected_b = None if expected is None else limits.check_value(expected)
        new_b = limits.check_value(new)
        return await self.backend.compare_and_swap(key_b, expected_b, new_b)

    async def compare_and_delete(self, key: str, expected: bytes) -> CasResult:
        key_b, expected_b = limits.check_key(key), limits.check_value(expected)
        return await self.backend.compare_and_delete(key_b, expected_b)

    async def batch_write(self, ops: Sequence[WriteOp]) -> int:
        items = list(ops)
        limits.check_operation_count(len(items))
        limits.check_distinct_writes(items)
        checked = [_check_write(op) for op in items]
        return await self.backend.batch_write(checked)

    async def transaction(
        self,
        compares: Sequence[Compare],
        on_success: Sequence[TxnOp] = (),
        on_failure: Sequence[TxnOp] = (),
    ) -> TxnResult:
        compares, on_success, on_failure = list(compares), list(on_success), list(on_failure)
        limits.check_ops_count(compares, on_success, on_failure)
        limits.check_distinct_writes(on_success)
        limits.check_distinct_writes(on_failure)
        checked = [limits.check_compare(c) for c in compares]
        success = [_check_txn_op(op) for op in on_success]
        failure = [_check_txn_op(op) for op in on_failure]
        return await self.backend.transaction(checked, success, failure)

    async def compact(self, revision: int) -> None:
        """Forget watch history before ``revision``; watching from an older
        revision then raises ``COMPACTED``."""
        revision = limits.check_revision(revision, "revision")
        await self.backend.compact(revision)

    # --- watch ----------------------------------------------------------------

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Arguments are checked at once, not at the first ``anext``."""
        lo = limits.check_prefix(prefix)
        if start_revision is not None:
            limits.check_revision(start_revision)
        return self.backend.watch(lo, limits.prefix_end(lo), start_revision)

    # --- leases ---------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> LeaseInfo:
        ttl, lease_id = limits.check_ttl(ttl), limits.check_lease_id(lease_id)
        return await self.backend.lease_grant(ttl, lease_id)

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        lease_id = limits.check_lease_id(lease_id, allow_zero=False)
        return await self.backend.lease_keepalive(lease_id)

    async def lease_revoke(self, lease_id: int) -> int:
        lease_id = limits.check_lease_id(lease_id, allow_zero=False)
        return await self.backend.lease_revoke(lease_id)

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo:
        lease_id = limits.check_lease_id(lease_id, allow_zero=False)
        return await self.backend.lease_time_to_live(lease_id)

    async def lease_list(self) -> list[LeaseInfo]:
        return await self.backend.lease_list()

    # --- lifecycle ------------------------------------------------------------

    async def close(self) -> None:
        await self.backend.close()

    async def __aenter__(self) -> KvFrontDoor[B]:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
