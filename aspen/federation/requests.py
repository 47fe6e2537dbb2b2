"""Request and response bodies of the federation RPCs, shared by the node's
handler, the client and the CLI."""

from __future__ import annotations

from aspen.federation.apps import AppManifest, AppView
from aspen.federation.identity import SignedIdentity
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
    cluster_key: str
    name: str
    node_urls: list[str]
    apps: list[AppManifest]
    expires_at_ms: int
    via: str


class FederationPeers(Body):
    pass


class FederationPeersResult(Body):
    peers: list[PeerView]


class FederationRefresh(Body):
    """Pull every configured peer's announcement now."""


class FederationRefreshResult(Body):
    pulled: list[str]  # cluster keys
    errors: list[str]


# request type -> (request body, response type, response body)
FEDERATION_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    "ClusterIdentity": (ClusterIdentityRequest, "ClusterIdentityResult", ClusterIdentityResult),
    "AppList": (AppList, "AppListResult", AppListResult),
    "FederationPeers": (FederationPeers, "FederationPeersResult", FederationPeersResult),
    "FederationRefresh": (FederationRefresh, "FederationRefreshResult", FederationRefreshResult),
}
