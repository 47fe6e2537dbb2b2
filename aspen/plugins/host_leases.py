"""The lease host functions (permission ``leases``): grant, keep alive and
revoke leases whose expiry deletes the keys a plugin attached to them
(``aspen_kv_put`` and batch/transaction puts take ``"lease"``).

A plugin only ever acts on leases it granted (:mod:`aspen.plugins.lease_owner`),
holds at most :data:`MAX_LEASES_PER_PLUGIN` live ones
(``PLUGIN_TOO_MANY_LEASES``) and asks for a TTL of
``MIN_TTL..MAX_TTL`` seconds (``PLUGIN_LEASE_TTL_OUT_OF_RANGE``). The quota
is counted before each grant, so grants racing on several instances or
nodes can pass it by the number in flight at once, never more.
"""

from __future__ import annotations

from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.host_functions import env_kv, host_function
from aspen.plugins.lease_owner import marker_key, marker_prefix, not_found, require_owned
from aspen.plugins.loop_bridge import CallContext, run_on_loop
from aspen.storage.limits import check_lease_id
from aspen.storage.protocol import KeyValueStore

MIN_TTL = 1
MAX_TTL = 86_400
MAX_LEASES_PER_PLUGIN = 1000


def _ttl(args: dict[str, Any]) -> int:
    ttl = args.get("ttl")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not MIN_TTL <= ttl <= MAX_TTL:
        raise AspenError(
            ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE,
            f"ttl must be an integer {MIN_TTL}..{MAX_TTL} (seconds), got {ttl!r:.40}",
            min=MIN_TTL,
            max=MAX_TTL,
        )
    return ttl


def _owned_id(ctx: CallContext, args: dict[str, Any]) -> int:
    ctx.env.gate.require("leases")
    lease_id = check_lease_id(args.get("lease_id"), allow_zero=False)
    require_owned(ctx, [lease_id])
    return lease_id


async def _grant(kv: KeyValueStore, plugin: str, ttl: int) -> dict[str, Any]:
    live = await kv.scan(marker_prefix(plugin), limit=MAX_LEASES_PER_PLUGIN)
    if len(live.entries) >= MAX_LEASES_PER_PLUGIN:
        raise AspenError(
            ErrorCode.PLUGIN_TOO_MANY_LEASES,
            f"plugin '{plugin}' holds {MAX_LEASES_PER_PLUGIN} live leases, the most it may",
            plugin=plugin,
            limit=MAX_LEASES_PER_PLUGIN,
        )
    lease = await kv.lease_grant(ttl)
    try:
        await kv.put(marker_key(plugin, lease.id), str(ttl).encode(), lease=lease.id)
    except BaseException:
        await kv.lease_revoke(lease.id)  # an unmarked lease would be nobody's
        raise
    return {"lease_id": lease.id, "ttl": lease.granted_ttl}


@host_function("aspen_lease_grant")
def _lease_grant(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    ctx.env.gate.require("leases")
    ttl = _ttl(args)
    return run_on_loop(ctx, _grant(env_kv(ctx.env), ctx.env.plugin, ttl))


@host_function("aspen_lease_keepalive")
def _lease_keepalive(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    lease_id = _owned_id(ctx, args)
    return {"ttl": run_on_loop(ctx, env_kv(ctx.env).lease_keepalive(lease_id)).granted_ttl}


@host_function("aspen_lease_revoke")
def _lease_revoke(ctx: CallContext, args: dict[str, Any]) -> dict[str, Any]:
    lease_id = _owned_id(ctx, args)
    try:
        run_on_loop(ctx, env_kv(ctx.env).lease_revoke(lease_id))
    except AspenError as exc:
        if exc.code == ErrorCode.LEASE_NOT_FOUND:
            raise not_found(lease_id) from None  # expired since the check: the same answer
        raise
    return {"revoked": True}
