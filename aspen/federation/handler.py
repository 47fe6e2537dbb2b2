"""The federation RPCs, as a core native handler.

Entry point (group ``aspen.handlers``)::

    federation = "aspen.federation.handler:create"

At node start it loads the cluster identity, starts publishing this node's
apps and exchanging announcements with the configured peers; it hangs on
``node.federation`` for the HTTP routes between clusters.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter

from aspen.federation.announcements import (
    AnnouncementCache,
    Announcer,
    DiscoveredCluster,
)
from aspen.federation.apps import AppPublisher, list_apps
from aspen.federation.config import federation_config
from aspen.federation.exchange import Exchange
from aspen.federation.identity import ClusterIdentity
from aspen.federation.requests import (
    FEDERATION_REQUESTS,
    AppListResult,
    ClusterIdentityResult,
    FederationPeersResult,
    FederationRefreshResult,
    PeerView,
)
from aspen.rpc.catalog import parse_body, to_body
from aspen.rpc.handler import Request, RequestContext, Response


class FederationHandler:
    name = "core.federation"
    priority = 45
    request_types = frozenset(FEDERATION_REQUESTS)

    def __init__(self, node: Any) -> None:
        self.node = node
        self.config = federation_config(node.config.sections)
        self.identity: ClusterIdentity | None = None
        self.apps = AppPublisher(node.kv, node.registry, node.node_id)
        self.announcements = Counter(
            "aspen_federation_announcements", "Announcements received, by outcome", ["outcome"],
            registry=node.metrics.registry,
        )  # fmt: skip
        self.exchange: Exchange | None = None
        self.cache: AnnouncementCache | None = None

    def count(self, outcome: str) -> None:
        self.announcements.labels(outcome).inc()

    def is_blocked(self, key: str) -> bool:
        return False

    def relay_to(self, entry: DiscoveredCluster) -> list[str]:
        return list(self.config.peers)

    async def start(self) -> None:
        from aspen.node.server import peer_verify

        node = self.node
        self.identity = await ClusterIdentity.load(
            node.data_dir, node.kv, shared=bool(node.config.etcd), name=self.config.name
        )
        self.cache = AnnouncementCache(self.identity.key_hex, self.is_blocked, self.count)
        announcer = Announcer(self.identity, int(self.config.announce_interval * 3000))
        self.exchange = Exchange(
            node, self.config, announcer, self.cache, relay_to=self.relay_to, count=self.count,
            verify=peer_verify(node.config),
        )  # fmt: skip
        await self.apps.start()
        node.federation = self
        await self.exchange.start()

    async def stop(self) -> None:
        if self.exchange is not None:
            await self.exchange.stop()
        await self.apps.stop()

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        body_type, result_type, _ = FEDERATION_REQUESTS[request.type]
        body = parse_body(request.body, body_type)
        result = await getattr(self, "_" + request.type)(body, ctx)
        return Response(result_type, to_body(result))

    async def _ClusterIdentity(self, body: Any, ctx: RequestContext) -> ClusterIdentityResult:
        assert self.identity is not None
        signed = self.identity.signed_identity()
        return ClusterIdentityResult(identity=signed, valid=signed.is_valid())

    async def _AppList(self, body: Any, ctx: RequestContext) -> AppListResult:
        return AppListResult(apps=await list_apps(self.node.kv))

    async def _FederationPeers(self, body: Any, ctx: RequestContext) -> FederationPeersResult:
        assert self.cache is not None
        peers = [
            PeerView(
                cluster_key=e.cluster_key,
                name=e.name,
                node_urls=list(e.node_urls),
                apps=list(e.apps),
                expires_at_ms=e.expires_at_ms,
                via=e.via,
            )
            for e in self.cache.live()
        ]
        return FederationPeersResult(peers=peers)

    async def _FederationRefresh(self, body: Any, ctx: RequestContext) -> FederationRefreshResult:
        assert self.exchange is not None
        got, errors = await self.exchange.pull_all()
        return FederationRefreshResult(pulled=[e.cluster_key for e in got], errors=errors)


def create(node: Any) -> FederationHandler:
    return FederationHandler(node)
