"""Request and response bodies of the federation RPCs, shared by the node's
handler, the client and the CLI."""

from __future__ import annotations

from aspen.federation.apps import AppView
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


# request type -> (request body, response type, response body)
FEDERATION_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    "ClusterIdentity": (ClusterIdentityRequest, "ClusterIdentityResult", ClusterIdentityResult),
    "AppList": (AppList, "AppListResult", AppListResult),
}
