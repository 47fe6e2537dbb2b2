"""Core handler for leases. A lease belongs to the caller that granted it:
the owner is recorded under ``__auth:leases:{owner}:{id}``, a key attached
to the lease itself so it goes when the lease goes. List, time-to-live,
keep-alive, revoke — and attaching a key to a lease — see only the caller's
own leases; the node's own (registrations, job claims) never. Another
caller's lease answers ``LEASE_NOT_FOUND``, exactly as a missing one.

Quotas (``[quotas]``): ``leases_per_caller`` (default 1 000) and
``max_lease_ttl_seconds`` (default one day).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.rpc import catalog as c
from aspen.rpc.handler import RequestContext
from aspen.rpc.typed_handler import TypedHandler
from aspen.storage.limits import check_lease_id
from aspen.storage.pages import scan_all
from aspen.storage.records import LeaseInfo

OWNERS_PREFIX = "__auth:leases:"
DEFAULT_LEASES_PER_CALLER = 1000
DEFAULT_MAX_LEASE_TTL = 86400


def owner_prefix(caller: str) -> str:
    return f"{OWNERS_PREFIX}{quote(caller, safe='')}:"


def owner_key(caller: str, lease_id: int) -> str:
    return f"{owner_prefix(caller)}{lease_id}"


def not_found(lease_id: int) -> AspenError:
    return AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} not found", lease_id=lease_id)


async def check_owned(kv: Any, ctx: RequestContext, lease_ids: Iterable[int]) -> None:
    """Every lease in ``lease_ids`` (0 = none) is the caller's; in-process calls pass."""
    if ctx.caller is None:
        return
    wanted = sorted({check_lease_id(i) for i in lease_ids} - {0})
    if not wanted:
        return
    found = await kv.batch_read([owner_key(ctx.caller, i) for i in wanted])
    for lease_id, entry in zip(wanted, found, strict=True):
        if entry is None:
            raise not_found(lease_id)


class LeaseHandler(TypedHandler):
    name = "core.lease"
    priority = 30
    handles = ("LeaseGrant", "LeaseRevoke", "LeaseKeepalive", "LeaseTimeToLive", "LeaseList")

    def _quota(self, name: str, default: int) -> int:
        return int(self.node.config.sections.get("quotas", {}).get(name, default))

    async def _owned_ids(self, caller: str) -> list[int]:
        return [int(e.key.rsplit(":", 1)[1]) async for e in scan_all(self.node.kv, owner_prefix(caller))]

    async def lease_grant(self, body: c.LeaseGrant, ctx: RequestContext) -> c.LeaseGrantResult:
        kv = self.node.kv
        if ctx.caller is None:
            info = await kv.lease_grant(body.ttl_seconds, body.lease_id)
            return c.LeaseGrantResult(lease_id=info.id, ttl_seconds=info.granted_ttl)
        max_ttl = self._quota("max_lease_ttl_seconds", DEFAULT_MAX_LEASE_TTL)
        if isinstance(body.ttl_seconds, int) and body.ttl_seconds > max_ttl:
            raise quota_exceeded("max_lease_ttl_seconds", max_ttl, body.ttl_seconds)
        per_caller = self._quota("leases_per_caller", DEFAULT_LEASES_PER_CALLER)
        used = len(await self._owned_ids(ctx.caller))
        if used >= per_caller:
            raise quota_exceeded("leases_per_caller", per_caller, used)
        info = await kv.lease_grant(body.ttl_seconds, body.lease_id)
        try:
            await kv.put(owner_key(ctx.caller, info.id), b"", lease=info.id)
        except BaseException:
            await kv.lease_revoke(info.id)
            raise
        return c.LeaseGrantResult(lease_id=info.id, ttl_seconds=info.granted_ttl)

    async def lease_revoke(self, body: c.LeaseRevoke, ctx: RequestContext) -> c.LeaseRevokeResult:
        await check_owned(self.node.kv, ctx, [body.lease_id])
        deleted = await self.node.kv.lease_revoke(body.lease_id)
        own_record = 0 if ctx.caller is None else 1
        return c.LeaseRevokeResult(lease_id=body.lease_id, keys_deleted=max(0, deleted - own_record))

    async def lease_keepalive(self, body: c.LeaseKeepalive, ctx: RequestContext) -> c.LeaseKeepaliveResult:
        await check_owned(self.node.kv, ctx, [body.lease_id])
        info = await self.node.kv.lease_keepalive(body.lease_id)
        return c.LeaseKeepaliveResult(lease_id=info.id, ttl_seconds=info.remaining_ttl)

    async def lease_time_to_live(self, body: c.LeaseTimeToLive, ctx: RequestContext) -> c.LeaseTimeToLiveResult:
        await check_owned(self.node.kv, ctx, [body.lease_id])
        info = await self.node.kv.lease_time_to_live(body.lease_id)
        keys = [k for k in info.keys if not k.startswith(OWNERS_PREFIX)] if body.include_keys else []
        return c.LeaseTimeToLiveResult(lease=LeaseInfo(info.id, info.granted_ttl, info.remaining_ttl, keys))

    async def lease_list(self, body: c.LeaseList, ctx: RequestContext) -> c.LeaseListResult:
        leases = await self.node.kv.lease_list()
        if ctx.caller is not None:
            mine = set(await self._owned_ids(ctx.caller))
            leases = [lease for lease in leases if lease.id in mine]
        return c.LeaseListResult(leases=leases)
