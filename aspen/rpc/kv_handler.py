"""Core handlers for the key-value store: reads, writes, CAS, batches and
transactions (leases: :mod:`aspen.rpc.lease_handler`). Validation of keys,
values and limits is the store's front door (``aspen.storage.front_door``),
so every backend answers alike; who may touch which key is decided before the
handler runs (:mod:`aspen.rpc.access`). A key attached to a lease must be
attached to one of the caller's own."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.rpc import catalog as c
from aspen.rpc.handler import RequestContext
from aspen.rpc.lease_handler import LeaseHandler, check_owned
from aspen.rpc.typed_handler import TypedHandler
from aspen.storage.keyspace import is_secret, reserved_prefix_of
from aspen.storage.records import DeleteOp, PutOp


def refuse_reserved(ops: Iterable[Any]) -> None:
    """System state under the reserved prefixes is written only by the layer
    that owns it; a client write there (or a prefix delete reaching into it)
    is refused before any I/O. Reads stay allowed."""
    for op in ops:
        if isinstance(op, (PutOp, DeleteOp)) and isinstance(op.key, str):
            as_prefix = isinstance(op, DeleteOp) and op.prefix
            reserved = reserved_prefix_of(op.key, as_prefix=as_prefix)
            if reserved is not None:
                raise AspenError(
                    ErrorCode.RESERVED_KEY,
                    f"{op.key!r} reaches into the reserved prefix {reserved!r}; only Aspen itself writes there",
                    key=op.key,
                    reserved_prefix=reserved,
                )


def leases_of(ops: Iterable[Any]) -> list[int]:
    return [op.lease for op in ops if isinstance(op, PutOp) and op.lease]


class KvHandler(TypedHandler):
    name = "core.kv"
    priority = 20
    handles = (
        "ReadKey", "WriteKey", "WriteKeyWithLease", "DeleteKey", "ScanKeys",
        "CompareAndSwapKey", "CompareAndDeleteKey", "BatchRead", "BatchWrite",
        "ConditionalBatchWrite",
    )  # fmt: skip

    async def read_key(self, body: c.ReadKey, ctx: RequestContext) -> c.ReadResult:
        kv = await self.node.kv.get(body.key)
        if kv is None:
            return c.ReadResult(was_found=False)
        return c.ReadResult(was_found=True, value=kv.value, kv=kv)

    async def write_key(self, body: c.WriteKey, ctx: RequestContext) -> c.WriteResult:
        refuse_reserved([PutOp(body.key, body.value)])
        await check_owned(self.node.kv, ctx, [body.lease_id])
        revision = await self.node.kv.put(body.key, body.value, lease=body.lease_id)
        return c.WriteResult(is_success=True, revision=revision)

    write_key_with_lease = write_key

    async def delete_key(self, body: c.DeleteKey, ctx: RequestContext) -> c.DeleteResult:
        refuse_reserved([DeleteOp(body.key)])
        return c.DeleteResult(key=body.key, was_deleted=await self.node.kv.delete(body.key))

    async def scan_keys(self, body: c.ScanKeys, ctx: RequestContext) -> c.ScanResult:
        page = await self.node.kv.scan(body.prefix, limit=body.limit, continuation=body.continuation_token)
        entries = [e for e in page.entries if not is_secret(e.key)]
        return c.ScanResult(
            entries=entries,
            count=len(entries),
            is_truncated=page.is_truncated,
            continuation_token=page.continuation_token,
            revision=page.revision,
        )

    async def compare_and_swap_key(self, body: c.CompareAndSwapKey, ctx: RequestContext) -> c.CompareAndSwapResult:
        refuse_reserved([PutOp(body.key, body.new_value)])
        r = await self.node.kv.compare_and_swap(body.key, body.expected, body.new_value)
        return c.CompareAndSwapResult(is_success=r.succeeded, actual=r.actual, revision=r.revision)

    async def compare_and_delete_key(self, body: c.CompareAndDeleteKey, ctx: RequestContext) -> c.CompareAndSwapResult:
        refuse_reserved([DeleteOp(body.key)])
        r = await self.node.kv.compare_and_delete(body.key, body.expected)
        return c.CompareAndSwapResult(is_success=r.succeeded, actual=r.actual, revision=r.revision)

    async def batch_read(self, body: c.BatchRead, ctx: RequestContext) -> c.BatchReadResult:
        return c.BatchReadResult(entries=await self.node.kv.batch_read(body.keys))

    async def batch_write(self, body: c.BatchWrite, ctx: RequestContext) -> c.BatchWriteResult:
        refuse_reserved(body.operations)
        await check_owned(self.node.kv, ctx, leases_of(body.operations))
        revision = await self.node.kv.batch_write(body.operations)
        return c.BatchWriteResult(is_success=True, operations_applied=len(body.operations), revision=revision)

    async def conditional_batch_write(
        self, body: c.ConditionalBatchWrite, ctx: RequestContext
    ) -> c.ConditionalBatchWriteResult:
        refuse_reserved([*body.operations, *body.else_operations])
        await check_owned(self.node.kv, ctx, leases_of([*body.operations, *body.else_operations]))
        r = await self.node.kv.transaction(body.conditions, body.operations, body.else_operations)
        results = [
            msgspec.structs.replace(x, kvs=[e for e in x.kvs if not is_secret(e.key)]) if x.op == "range" else x
            for x in r.results
        ]
        return c.ConditionalBatchWriteResult(
            is_success=r.succeeded, failed_condition_index=r.failed_compare, results=results, revision=r.revision
        )


def create(node: Any) -> list[TypedHandler]:
    return [KvHandler(node), LeaseHandler(node)]
