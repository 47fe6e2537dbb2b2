"""Which plugin owns which lease.

Revoking a lease deletes every key attached to it, so a plugin must only
keep alive, revoke or attach leases it granted itself. Ownership is one
marker key per lease, ``__plugins:leases:{plugin}:{id}``, in the plugin
layer's reserved space (no plugin or client writes there) and attached to
that very lease, so it vanishes when the lease expires or is revoked: the
live markers under ``__plugins:leases:{plugin}:`` are the plugin's live
leases, which is also what its quota counts. A lease that is not the
plugin's is ``LEASE_NOT_FOUND`` whether it exists or not, so a plugin
learns nothing about other owners' leases.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.loop_bridge import CallContext, run_on_loop
from aspen.storage.limits import check_lease_id
from aspen.storage.records import PutOp

LEASE_MARKERS = "__plugins:leases:"


def marker_prefix(plugin: str) -> str:
    return f"{LEASE_MARKERS}{plugin}:"


def marker_key(plugin: str, lease_id: int) -> str:
    return f"{marker_prefix(plugin)}{lease_id}"


def lease_arg(args: dict[str, Any]) -> int:
    """The ``lease`` of a put: a positive int64; 0, null or absent: no lease."""
    value = args.get("lease")
    return 0 if value is None else check_lease_id(value)


def not_found(lease_id: int) -> AspenError:
    return AspenError(ErrorCode.LEASE_NOT_FOUND, f"lease {lease_id} does not exist", lease=lease_id)


def require_owned(ctx: CallContext, lease_ids: Iterable[int]) -> None:
    """Every non-zero lease in ``lease_ids`` is a live lease this plugin
    granted (its marker exists, attached to it), else ``LEASE_NOT_FOUND``;
    attaching any lease needs the ``leases`` permission."""
    wanted = sorted({i for i in lease_ids if i})
    if not wanted:
        return
    env = ctx.env
    env.gate.require("leases")
    if env.kv is None:
        raise AspenError(ErrorCode.UNAVAILABLE, "this node has no KV store for plugins")
    found = run_on_loop(ctx, env.kv.batch_read([marker_key(env.plugin, i) for i in wanted]))
    for lease_id, marker in zip(wanted, found, strict=True):
        if marker is None or marker.lease != lease_id:
            raise not_found(lease_id)


def leases_of(ops: Iterable[object]) -> list[int]:
    return [op.lease for op in ops if isinstance(op, PutOp)]
