"""The etcd backend of :class:`~aspen.storage.protocol.KeyValueStore`.

Everything maps onto etcd v3's own machinery, so Aspen adds no consensus:
revisions, versions and create/mod revisions are etcd's; a batch or a
transaction is one etcd ``Txn`` (one revision); leases are etcd leases;
watches are etcd watches resumed from the last seen revision when a member
dies. Inputs are checked by the front door (:mod:`aspen.storage.front_door`)
before they reach :class:`EtcdKvBackend`, so etcd rejects exactly what SQLite
rejects, with the same codes.

etcd does not say *which* compare of a failed transaction failed, so the
failure branch first reads the compared keys (in the same ``Txn``, at the
revision the compares saw) and the index is computed from them.

A batch or transaction branch that writes the same key twice (or puts a key
that a delete in it covers) is refused with ``INVALID_ARGUMENT`` before it is
sent, by the front door.

The etcd cluster needs ``--max-txn-ops`` ≥ 2 000 (1 000 ops plus the reads
added above) and a ``--max-request-bytes`` large enough for the batches you
send (etcd's default of 1.5 MiB fits one 1 MiB value).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from aetcd import rpc

from aspen.errors import AspenError, ErrorCode
from aspen.storage.backend import CheckedOp
from aspen.storage.etcd_convert import (
    ALL,
    first_kv,
    get_request,
    holds,
    native_compare,
    op_request,
    op_results,
    range_bounds,
    to_kv,
)
from aspen.storage.etcd_endpoints import EndpointPool, Stubs, map_rpc_error, transient
from aspen.storage.etcd_security import EtcdSecurity
from aspen.storage.front_door import KvFrontDoor
from aspen.storage.records import (
    CasResult,
    Compare,
    KeyValue,
    LeaseInfo,
    TxnResult,
    WatchEvent,
)


class EtcdKvBackend:
    """The raw operations (:class:`aspen.storage.backend.KvBackend`) on an
    etcd v3 cluster. Open with :meth:`open`."""

    def __init__(self, pool: EndpointPool) -> None:
        self._pool = pool
        self._closed = False
        self._revision_seen = 0  # highest revision any response showed: "now" for a new watch

    @classmethod
    async def open(
        cls,
        endpoints: str | Sequence[str],
        *,
        request_timeout: float = 5.0,
        failover_timeout: float = 20.0,
        connect_timeout: float = 3.0,
        security: EtcdSecurity | None = None,
    ) -> EtcdKvBackend:
        """Connect to the first member that answers; ``ETCD_UNREACHABLE``
        within ``connect_timeout`` when none does, ``ETCD_AUTH_FAILED`` when
        ``security``'s user is refused."""
        pool = EndpointPool(
            endpoints,
            request_timeout=request_timeout,
            failover_timeout=failover_timeout,
            connect_timeout=connect_timeout,
            security=security,
        )
        try:
            revision = await pool.connect()
        except BaseException:
            await pool.close()
            raise
        store = cls(pool)
        store._revision_seen = revision
        return store

    @property
    def endpoints(self) -> list[str]:
        return self._pool.names()

    @property
    def pool(self) -> EndpointPool:
        return self._pool

    def _check_open(self) -> None:
        if self._closed:
            raise AspenError(ErrorCode.STORE_CLOSED, "the etcd store is closed")

    async def _kv(self, method: str, request, *, idempotent: bool = True):
        self._check_open()

        async def call(s: Stubs, timeout: float):
            return await getattr(s.kv, method)(request, timeout=timeout)

        resp = await self._pool.call(call, idempotent=idempotent)
        self._revision_seen = max(self._revision_seen, resp.header.revision)
        return resp

    async def _lease(self, method: str, request, *, idempotent: bool = True):
        self._check_open()

        async def call(s: Stubs, timeout: float):
            return await getattr(s.lease, method)(request, timeout=timeout)

        resp = await self._pool.call(call, idempotent=idempotent)
        self._revision_seen = max(self._revision_seen, resp.header.revision)
        return resp

    # --- single keys ----------------------------------------------------------

    async def get(self, key: bytes) -> KeyValue | None:
        resp = await self._kv("Range", rpc.RangeRequest(key=key))
        return to_kv(resp.kvs[0]) if resp.kvs else None

    async def put(self, key: bytes, value: bytes, lease: int) -> int:
        # a put applied twice leaves the same value: safe to retry elsewhere
        resp = await self._kv("Put", rpc.PutRequest(key=key, value=value, lease=lease))
        return resp.header.revision

    async def delete(self, key: bytes) -> bool:
        resp = await self._kv("DeleteRange", rpc.DeleteRangeRequest(key=key))
        return resp.deleted > 0

    async def delete_range(self, lo: bytes, hi: bytes | None) -> int:
        start, end = range_bounds(lo, hi)
        resp = await self._kv("DeleteRange", rpc.DeleteRangeRequest(key=start, range_end=end))
        return resp.deleted

    # --- ranges ------------------------------------------------------------------

    async def range(self, lo: bytes, hi: bytes | None, limit: int) -> tuple[list[KeyValue], bool, int]:
        start, end = range_bounds(lo, hi)
        resp = await self._kv("Range", rpc.RangeRequest(key=start, range_end=end, limit=limit))
        return [to_kv(m) for m in resp.kvs], bool(resp.more), resp.header.revision

    async def get_many(self, keys: list[bytes]) -> list[KeyValue | None]:
        if not keys:
            return []
        resp = await self._kv("Txn", rpc.TxnRequest(success=[get_request(k) for k in keys]))
        return [first_kv(r) for r in resp.responses]

    async def current_revision(self) -> int:
        resp = await self._kv("Range", rpc.RangeRequest(key=ALL, limit=1, count_only=True))
        return resp.header.revision

    # --- writes with conditions ------------------------------------------------

    async def compare_and_swap(self, key: bytes, expected: bytes | None, new: bytes) -> CasResult:
        if expected is None:
            cmp = rpc.Compare(key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0)
        else:
            cmp = rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=expected)
        req = rpc.TxnRequest(
            compare=[cmp],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=key, value=new)), get_request(key)],
            failure=[get_request(key)],
        )
        resp = await self._kv("Txn", req, idempotent=False)
        return CasResult(succeeded=resp.succeeded, actual=first_kv(resp.responses[-1]), revision=resp.header.revision)

    async def compare_and_delete(self, key: bytes, expected: bytes) -> CasResult:
        cmp = rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=expected)
        req = rpc.TxnRequest(
            compare=[cmp],
            success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))],
            failure=[get_request(key)],
        )
        resp = await self._kv("Txn", req, idempotent=False)
        actual = None if resp.succeeded else first_kv(resp.responses[0])
        return CasResult(succeeded=resp.succeeded, actual=actual, revision=resp.header.revision)

    async def batch_write(self, ops: Sequence[CheckedOp]) -> int:
        requests = [op_request(op) for op in ops]
        if not requests:
            return await self.current_revision()
        # puts and deletes only: applying the batch twice leaves the same state
        resp = await self._kv("Txn", rpc.TxnRequest(success=requests))
        return resp.header.revision

    async def transaction(
        self, compares: Sequence[Compare], on_success: Sequence[CheckedOp], on_failure: Sequence[CheckedOp]
    ) -> TxnResult:
        success = [op_request(op) for op in on_success]
        failure = [op_request(op) for op in on_failure]
        native = [native_compare(c) for c in compares]
        # the failure branch first reads the compared keys, at the revision
        # the compares saw, to tell which compare failed
        probe_keys = list(dict.fromkeys(c.key for c in compares))
        probes = [get_request(k.encode()) for k in probe_keys]
        read_only = not any(
            op.HasField("request_put") or op.HasField("request_delete_range") for op in success + failure
        )
        resp = await self._kv(
            "Txn", rpc.TxnRequest(compare=native, success=success, failure=probes + failure), idempotent=read_only
        )
        rev = resp.header.revision
        if resp.succeeded:
            results = op_results([c.op for c in on_success], resp.responses, rev)
            return TxnResult(succeeded=True, failed_compare=None, results=results, revision=rev)
        seen = {k: first_kv(r) for k, r in zip(probe_keys, resp.responses)}
        failed = next((i for i, c in enumerate(compares) if not holds(c, seen[c.key])), None)
        results = op_results([c.op for c in on_failure], resp.responses[len(probes) :], rev)
        return TxnResult(succeeded=False, failed_compare=failed, results=results, revision=rev)

    async def compact(self, revision: int) -> None:
        """Compacting to a revision that is already compacted is a no-op, as
        in the SQLite backend."""
        try:
            await self._kv("Compact", rpc.CompactionRequest(revision=revision, physical=True))
        except AspenError as exc:
            if exc.code != ErrorCode.COMPACTED:
                raise

    # --- watch ------------------------------------------------------------------

    def watch(self, lo: bytes, hi: bytes | None, start_revision: int | None) -> AsyncIterator[WatchEvent]:
        self._check_open()
        # "only new events" = after the newest revision this store has seen,
        # so a write acknowledged before watch() returned is never reported
        start = self._revision_seen + 1 if start_revision is None else start_revision
        return self._watch(*range_bounds(lo, hi), start)

    async def _watch(self, lo: bytes, hi: bytes, next_rev: int) -> AsyncIterator[WatchEvent]:
        while True:
            index = self._pool.current
            stubs = self._pool.stubs(index)
            stop = asyncio.Event()

            async def requests(next_rev=next_rev, stop=stop):
                yield rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(key=lo, range_end=hi, start_revision=next_rev)
                )
                await stop.wait()

            call = stubs.watch.Watch(requests())
            try:
                async for resp in call:
                    if resp.compact_revision:
                        raise AspenError(
                            ErrorCode.COMPACTED,
                            f"revision {next_rev} has been compacted; the oldest retained revision is {resp.compact_revision}",
                            revision=next_rev,
                            compact_revision=resp.compact_revision,
                        )
                    if resp.canceled:
                        raise AspenError(
                            ErrorCode.STORAGE_UNAVAILABLE, f"etcd cancelled the watch: {resp.cancel_reason}"
                        )
                    for ev in resp.events:
                        kv = to_kv(ev.kv)
                        kind = "delete" if ev.type == rpc.Event.DELETE else "put"
                        next_rev = kv.mod_revision + 1
                        yield WatchEvent(type=kind, kv=kv, revision=kv.mod_revision)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not self._closed or (task is not None and task.cancelling()):
                    raise
                # close() cancelled the stream under us, not our caller
                raise AspenError(ErrorCode.STORE_CLOSED, "the etcd store is closed") from None
            except grpc.aio.AioRpcError as exc:
                if self._closed:
                    raise AspenError(ErrorCode.STORE_CLOSED, "the etcd store is closed") from exc
                if not transient(exc):
                    raise map_rpc_error(exc) from exc
            finally:
                stop.set()
                call.cancel()
            if self._closed:
                raise AspenError(ErrorCode.STORE_CLOSED, "the etcd store is closed")
            # the member went away: resume on the next one from the next revision
            self._pool.rotate(index)
            await asyncio.sleep(0.05)

    # --- leases -----------------------------------------------------------------

    async def lease_grant(self, ttl: int, lease_id: int) -> LeaseInfo:
        # an auto-id grant repeated after a lost reply only leaves an unused
        # lease that expires on its own; an explicit id must not be retried
        resp = await self._lease("LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl, ID=lease_id), idempotent=lease_id == 0)
        if resp.error:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"etcd: {resp.error}")
        return LeaseInfo(id=resp.ID, granted_ttl=resp.TTL, remaining_ttl=resp.TTL, keys=[])

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo:
        self._check_open()

        async def call(s: Stubs, timeout: float):
            stream = s.lease.LeaseKeepAlive(iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]), timeout=timeout)
            try:
                async for reply in stream:
                    return reply
            finally:
                stream.cancel()
            return None

        reply = await self._pool.call(call, idempotent=True)
        if reply is None or reply.TTL <= 0:
            raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)
        # a keep-alive renews to the granted TTL, which it reports
        return LeaseInfo(id=lease_id, granted_ttl=reply.TTL, remaining_ttl=reply.TTL)

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo:
        resp = await self._lease("LeaseTimeToLive", rpc.LeaseTimeToLiveRequest(ID=lease_id, keys=True))
        if resp.TTL < 0:
            raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)
        keys = sorted(k.decode("utf-8", "surrogateescape") for k in resp.keys)
        return LeaseInfo(id=lease_id, granted_ttl=resp.grantedTTL, remaining_ttl=resp.TTL, keys=keys)

    async def lease_revoke(self, lease_id: int) -> int:
        info = await self.lease_time_to_live(lease_id)
        try:
            await self._lease("LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))
        except AspenError as exc:
            if exc.code != ErrorCode.LEASE_NOT_FOUND:
                raise
            # a retried revoke whose first attempt landed: the keys are gone
        return len(info.keys)

    async def lease_list(self) -> list[LeaseInfo]:
        resp = await self._lease("LeaseLeases", rpc.LeaseLeasesRequest())
        out = []
        for status in resp.leases:
            try:
                out.append(await self.lease_time_to_live(status.ID))
            except AspenError as exc:
                if exc.code != ErrorCode.LEASE_NOT_FOUND:  # expired meanwhile
                    raise
        return sorted(out, key=lambda i: i.id)

    # --- lifecycle --------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()


class EtcdKeyValueStore(KvFrontDoor[EtcdKvBackend]):
    """:class:`aspen.storage.protocol.KeyValueStore` on an etcd v3 cluster."""

    @classmethod
    async def open(cls, endpoints: str | Sequence[str], **options: Any) -> EtcdKeyValueStore:
        """Connect behind the front door; ``options`` as for :meth:`EtcdKvBackend.open`."""
        return cls(await EtcdKvBackend.open(endpoints, **options))

    @property
    def endpoints(self) -> list[str]:
        return self.backend.endpoints

    @property
    def pool(self) -> EndpointPool:
        return self.backend.pool
