"""The authorisation table: what every request type needs, in one place.

Each entry maps a request type to a rule ``rule(body) -> [Need, ...]``: the
operations and resources the caller's token must allow, *all* of them.
Batches and transactions name every key of every operation and compare, in
both branches; a scan or watch names its whole prefix. Anything under the
reserved key space also needs ``cluster:admin``. An empty list means "any
authenticated caller"; the handler then checks ownership (leases, watches,
jobs, tokens).

Request types a plugin registers need ``plugin:call`` on the plugin's name
unless its manifest marks them public (:func:`needs_for`); a native handler
from another distribution may declare its own rules in ``access``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple

from aspen.coordination.requests import KIND as COORD_KINDS
from aspen.errors import AspenError, ErrorCode
from aspen.storage.keyspace import is_secret, reserved_prefix_of

ANY = "*"


class Need(NamedTuple):
    operation: str
    resource: str
    prefix: bool = False  # the resource is a key (or key prefix): rights cover it by prefix


Rule = Callable[[Mapping[str, Any]], list[Need]]
ADMIN = Need("cluster:admin", ANY)


_WIRE_NAMES = {str: "str", int: "int", bool: "bool", float: "float", list: "array", dict: "object", type(None): "null"}


def _field(body: Mapping[str, Any], name: str, default: Any = ..., *, kind: type = str) -> Any:
    """One body field, refused in msgspec's words (the handler would say the same)."""
    value = body.get(name, default) if isinstance(body, Mapping) else default
    if value is None and default is None:
        return None
    if value is ...:
        raise AspenError(ErrorCode.VALIDATION_ERROR, f"Object missing required field `{name}`")
    if not isinstance(value, kind):
        got = _WIRE_NAMES.get(type(value), type(value).__name__)
        raise AspenError(ErrorCode.VALIDATION_ERROR, f"Expected `{_WIRE_NAMES[kind]}`, got `{got}` - at `$.{name}`")
    return value


def _list(body: Mapping[str, Any], name: str) -> list[Any]:
    return _field(body, name, [], kind=list)


def key_need(operation: str, key: str, *, is_prefix: bool = False) -> Iterator[Need]:
    if not isinstance(key, str):
        raise AspenError(ErrorCode.VALIDATION_ERROR, "keys and prefixes are strings")
    if is_secret(key):  # a prefix that merely covers the secrets is fine: results leave them out
        raise AspenError(ErrorCode.RESERVED_KEY, f"{key!r} holds the cluster's secrets: no request touches it", key=key)
    yield Need(operation, key, True)
    if reserved_prefix_of(key, as_prefix=is_prefix) is not None:
        yield ADMIN


def _op_needs(op: Any) -> Iterator[Need]:
    """One batch or transaction operation (the tagged ``{"type": ...}`` dicts)."""
    if not isinstance(op, Mapping):
        raise AspenError(ErrorCode.VALIDATION_ERROR, "each operation is an object with a 'type'")
    kind = op.get("type")
    if kind == "put":
        yield from key_need("kv:write", _field(op, "key"))
    elif kind == "delete":
        is_prefix = bool(op.get("prefix", False))
        yield from key_need("kv:delete", _field(op, "key"), is_prefix=is_prefix)
    elif kind == "get":
        yield from key_need("kv:read", _field(op, "key"))
    elif kind == "range":
        yield from key_need("kv:read", _field(op, "prefix"), is_prefix=True)
    else:
        raise AspenError(ErrorCode.VALIDATION_ERROR, f"unknown operation type {kind!r}")


def _unique(needs: Iterable[Need]) -> list[Need]:
    return list(dict.fromkeys(needs))


def _key(operation: str, name: str = "key") -> Rule:
    return lambda b: list(key_need(operation, _field(b, name)))


def _prefix(operation: str) -> Rule:
    return lambda b: list(key_need(operation, _field(b, "prefix", ""), is_prefix=True))


def _fixed(*needs: Need) -> Rule:
    found = list(needs)
    return lambda b: found


def _named(operation: str, name: str = "name") -> Rule:
    """``operation`` on the body's ``name`` (``*`` when the request names none)."""
    return lambda b: [Need(operation, _field(b, name, None) or ANY)]


def _batch_read(b: Mapping[str, Any]) -> list[Need]:
    return _unique(n for k in _list(b, "keys") for n in key_need("kv:read", k))


def _batch_write(b: Mapping[str, Any]) -> list[Need]:
    return _unique(n for op in _list(b, "operations") for n in _op_needs(op))


def _transaction(b: Mapping[str, Any]) -> list[Need]:
    compares = (
        n
        for c in _list(b, "conditions")
        for n in key_need("kv:read", _field(c if isinstance(c, Mapping) else {}, "key"))
    )
    ops = (n for field in ("operations", "else_operations") for op in _list(b, field) for n in _op_needs(op))
    return _unique([*compares, *ops])


def _blob_write(b: Mapping[str, Any]) -> list[Need]:
    needs = [Need("blob:write", ANY)]
    if _field(b, "tag", None) is not None:
        needs.append(Need("blob:admin", ANY))  # a tag pins the blob: consuming space for good
    return needs


def _job_submit(b: Mapping[str, Any]) -> list[Need]:
    needs = [Need("job:submit", _field(b, "type"))]
    payload = b.get("payload")
    if b.get("type") == "wasm" and isinstance(payload, Mapping) and isinstance(payload.get("plugin"), str):
        needs.append(Need("plugin:call", payload["plugin"]))
    return needs


def _coord(kind: str) -> Rule:
    """A coordination primitive, by name: ``coord`` on ``{kind}/{name}``
    (rights cover names by prefix, like keys: ``coord lock/orders-``)."""
    return lambda b: [Need("coord", f"{kind}/{_field(b, 'name')}", True)]


_AUTHENTICATED = _fixed()
_PLUGIN_ADMIN_ANY = _fixed(Need("plugin:admin", ANY))
_BLOB_ADMIN = _fixed(Need("blob:admin", ANY))
_LEASE = _fixed(Need("lease", ANY))


def _plugin_manifest(b: Mapping[str, Any]) -> list[Need]:
    manifest = _field(b, "manifest", kind=dict)
    return [Need("plugin:admin", _field(manifest, "name"))]


ACCESS: dict[str, Rule] = {
    # node
    "Ping": _AUTHENTICATED,
    "GetHealth": _AUTHENTICATED,
    "GetNodeInfo": _AUTHENTICATED,
    # kv
    "ReadKey": _key("kv:read"),
    "WriteKey": _key("kv:write"),
    "WriteKeyWithLease": _key("kv:write"),
    "DeleteKey": _key("kv:delete"),
    "ScanKeys": _prefix("kv:read"),
    "CompareAndSwapKey": _key("kv:write"),
    "CompareAndDeleteKey": _key("kv:delete"),
    "BatchRead": _batch_read,
    "BatchWrite": _batch_write,
    "ConditionalBatchWrite": _transaction,
    # watches (ids belong to the caller: cancel checks ownership)
    "WatchCreate": _prefix("kv:watch"),
    "WatchCancel": _AUTHENTICATED,
    # leases (each belongs to the caller that granted it)
    "LeaseGrant": _LEASE,
    "LeaseRevoke": _LEASE,
    "LeaseKeepalive": _LEASE,
    "LeaseTimeToLive": _LEASE,
    "LeaseList": _LEASE,
    # blobs
    "AddBlob": _blob_write,
    "GetBlob": lambda b: [Need("blob:read", _field(b, "hash"))],
    "HasBlob": lambda b: [Need("blob:read", _field(b, "hash"))],
    "ListBlobs": _fixed(Need("blob:read", ANY)),
    "DeleteBlob": _BLOB_ADMIN,
    "ProtectBlob": _BLOB_ADMIN,
    "UnprotectBlob": _BLOB_ADMIN,
    # plugins
    "PluginReload": _named("plugin:admin"),
    "PluginInstall": _plugin_manifest,
    "PluginUpgrade": _plugin_manifest,
    "PluginRollback": _named("plugin:admin"),
    "PluginEnable": _named("plugin:admin"),
    "PluginDisable": _named("plugin:admin"),
    "PluginRemove": _named("plugin:admin"),
    "PluginList": _PLUGIN_ADMIN_ANY,
    "PluginInfo": _named("plugin:admin"),
    "PluginDeps": _named("plugin:admin"),
    "PluginCheck": _PLUGIN_ADMIN_ANY,
    "PluginTrustAdd": _PLUGIN_ADMIN_ANY,
    "PluginTrustRemove": _PLUGIN_ADMIN_ANY,
    "PluginTrustList": _PLUGIN_ADMIN_ANY,
    # jobs (records and logs: the submitter's, or job:admin — checked by the handler)
    "JobSubmit": _job_submit,
    "JobStatus": _fixed(Need("job:read", ANY)),
    "JobList": _fixed(Need("job:read", ANY)),
    "JobLogs": _fixed(Need("job:read", ANY)),
    "JobCancel": _fixed(Need("job:read", ANY)),
    "JobRetry": _fixed(Need("job:read", ANY)),
    "JobStats": _fixed(Need("job:read", ANY)),
    "JobWorkers": _fixed(Need("job:admin", ANY)),
    # hooks app (aspen/hookapp/): each hook is its owner's; the handler checks the prefix and the action
    "HookAdd": _named("hook"),
    "HookList": _named("hook"),
    "HookRemove": _named("hook"),
    "HookMetrics": _named("hook"),
    "HookTrigger": _named("hook"),
    # cluster
    "ClusterStatus": _fixed(ADMIN),
    # tokens
    "TokenCreate": _fixed(Need("token:delegate", ANY)),
    "TokenRevoke": _AUTHENTICATED,  # your own tokens and those made from them, or cluster:admin
    "TokenVerify": _AUTHENTICATED,
    # federation (aspen/federation/)
    "ClusterIdentity": _AUTHENTICATED,  # public anyway: other clusters fetch it to verify signatures
    "AppList": _AUTHENTICATED,  # what the cluster announces to its peers anyway
    "FederationPeers": _fixed(ADMIN),
    "FederationRefresh": _fixed(ADMIN),
    "TrustCluster": _fixed(ADMIN),
    "UntrustCluster": _fixed(ADMIN),
    "BlockCluster": _fixed(ADMIN),
    "FederationRequests": _fixed(ADMIN),
    "AcceptTrust": _fixed(ADMIN),
    "RejectTrust": _fixed(ADMIN),
    "RequestTrust": _fixed(ADMIN),
    "ResourcePublish": _fixed(ADMIN),
    "ResourceList": _fixed(ADMIN),
    "FederationSync": _fixed(ADMIN),
    # coordination primitives (locks, semaphores, elections: the holder is the caller)
    **{t: _coord(kind) for t, kind in COORD_KINDS.items()},
}

# The HTTP routes outside /v1/rpc, by the same rules. The federation routes
# between clusters (aspen/federation/routes.py) take no token: they are
# authenticated by the cluster key's signature.
WATCH_STREAM = "WatchStream"  # GET /v1/watch?prefix= and the WebSocket's WatchCreate
ROUTES: dict[str, Rule] = {
    WATCH_STREAM: _prefix("kv:watch"),
    "BlobUpload": _fixed(Need("blob:write", ANY)),  # PUT /v1/blobs
    "BlobDownload": lambda b: [Need("blob:read", _field(b, "hash"))],  # GET /v1/blobs/{hash}
}


def needs_for(request_type: str, body: Mapping[str, Any], handler: Any | None) -> list[Need]:
    """What ``request_type`` needs: the table, else the handler's own rules,
    else ``plugin:call`` on the handler (a plugin), else nothing beyond
    authentication (no handler: the answer only says it is not here)."""
    rule = ACCESS.get(request_type)
    if rule is not None:
        return rule(body)
    if handler is None:
        return []
    own = getattr(handler, "access", None)
    if own is not None and request_type in own:
        return own[request_type](body)
    if request_type in getattr(handler, "public_types", ()):
        return []
    return [Need("plugin:call", getattr(handler, "plugin_name", handler.name))]
