"""Request and response bodies of the federation RPCs, shared by the node's
handler, the client and the CLI."""

from __future__ import annotations

import msgspec

from aspen.federation.apps import AppManifest, AppView
from aspen.federation.identity import SignedIdentity
from aspen.federation.trust import TrustEntry
from aspen.rpc.catalog import Body


class ClusterIdentityRequest(Body):
    pass


class ClusterIdentityResult(Body):
    identity: SignedIdentity
    valid: bool  # the signature checks out (always, unless the node is broken)


class AppList(Body):
    pass


class AppListResult(Body):
    apps: list[AppView]


class PeerView(Body):
    """A cluster this one knows: announced (apps, URLs) and/or in the trust list."""

    cluster_key: str
    name: str
    trust: str  # trusted, public or blocked
    node_urls: tuple[str, ...] = ()
    apps: tuple[AppManifest, ...] = ()
    expires_at_ms: int = 0  # 0: no live announcement
    via: str = ""


class FederationPeers(Body):
    pass


class FederationPeersResult(Body):
    peers: list[PeerView]


class FederationRefresh(Body):
    """Pull every configured peer's announcement now."""


class FederationRefreshResult(Body):
    pulled: list[str]  # cluster keys
    errors: list[str]


class TrustCluster(Body):
    cluster_key: str
    name: str | None = None  # None: the announced name, else "trusted-{first 8 hex}"
    apps: tuple[str, ...] = ("*",)  # the apps it may call here through the proxy
    callers: tuple[str, ...] = ("*",)  # the callers (subjects on its side) it may forward
    notes: str = ""


class TrustResult(Body):
    entry: TrustEntry


class UntrustCluster(Body):
    cluster_key: str


class UntrustResult(Body):
    removed: bool


class BlockCluster(Body):
    cluster_key: str
    notes: str = ""


class FederationRequests(Body):
    pass


class PendingView(Body):
    cluster_key: str
    name: str
    received_at_ms: int
    expires_at_ms: int
    message: str


class FederationRequestsResult(Body):
    requests: list[PendingView]


class AcceptTrust(Body):
    cluster_key: str
    apps: tuple[str, ...] = ("*",)
    callers: tuple[str, ...] = ("*",)


class RejectTrust(Body):
    cluster_key: str


class RejectTrustResult(Body):
    rejected: str


class RequestTrust(Body):
    """Ask the cluster at ``url`` to trust this one (it lands in its pending requests)."""

    url: str
    message: str = ""


class RequestTrustResult(Body):
    status: str  # "pending" or "trusted"


class ResourcePublish(Body):
    """Add objects to a resource of this cluster and point heads at them."""

    name: str
    objects: tuple[bytes, ...] = ()  # each ≤ 16 MiB (the RPC itself is ≤ 4 MiB)
    heads: dict[str, str] = msgspec.field(default_factory=dict)
    public: bool = False


class ResourcePublishResult(Body):
    hashes: tuple[str, ...]


class ResourceList(Body):
    pass


class ResourceView(Body):
    name: str
    origin: str
    public: bool
    heads: dict[str, str]
    objects: tuple[str, ...]  # the first 1 000


class ResourceListResult(Body):
    resources: tuple[ResourceView, ...]


class FederationSync(Body):
    resource: str
    from_cluster: str  # key or announced name of a trusted cluster


class FederationSyncResult(Body):
    fetched: int
    skipped: int
    heads: dict[str, str]
    seconds: float


# request type -> (request body, response type, response body)
FEDERATION_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    "ClusterIdentity": (ClusterIdentityRequest, "ClusterIdentityResult", ClusterIdentityResult),
    "AppList": (AppList, "AppListResult", AppListResult),
    "FederationPeers": (FederationPeers, "FederationPeersResult", FederationPeersResult),
    "FederationRefresh": (FederationRefresh, "FederationRefreshResult", FederationRefreshResult),
    "TrustCluster": (TrustCluster, "TrustResult", TrustResult),
    "UntrustCluster": (UntrustCluster, "UntrustResult", UntrustResult),
    "BlockCluster": (BlockCluster, "TrustResult", TrustResult),
    "FederationRequests": (FederationRequests, "FederationRequestsResult", FederationRequestsResult),
    "AcceptTrust": (AcceptTrust, "TrustResult", TrustResult),
    "RejectTrust": (RejectTrust, "RejectTrustResult", RejectTrustResult),
    "RequestTrust": (RequestTrust, "RequestTrustResult", RequestTrustResult),
    "ResourcePublish": (ResourcePublish, "ResourcePublishResult", ResourcePublishResult),
    "ResourceList": (ResourceList, "ResourceListResult", ResourceListResult),
    "FederationSync": (FederationSync, "FederationSyncResult", FederationSyncResult),
}
