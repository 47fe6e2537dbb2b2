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

from aspen.clock import now_ms
from aspen.federation.announcements import (
    AnnouncementCache,
    Announcer,
    DiscoveredCluster,
)
from aspen.federation.apps import AppPublisher, list_apps
from aspen.federation.config import federation_config
from aspen.federation.exchange import Exchange
from aspen.federation.identity import ClusterIdentity
from aspen.federation.proxy import ProxyService
from aspen.federation.requests import (
    FEDERATION_REQUESTS,
    AppListResult,
    ClusterIdentityResult,
    FederationPeersResult,
    FederationRefreshResult,
    FederationRequestsResult,
    FederationSyncResult,
    PeerView,
    PendingView,
    RejectTrustResult,
    RequestTrustResult,
    ResourceListResult,
    ResourcePublishResult,
    ResourceView,
    TrustResult,
    UntrustResult,
)
from aspen.federation.sync import SyncService
from aspen.federation.trust import PENDING_TTL_MS, TrustEntry, TrustStore, check_key
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
        self.announcements: Counter | None = None  # registered at start: a factory has no side effects
        self.trust = TrustStore(node.kv)
        self.exchange: Exchange | None = None
        self.proxy: ProxyService | None = None
        self.sync: SyncService | None = None
        self.cache: AnnouncementCache | None = None

    def count(self, outcome: str) -> None:
        if self.announcements is not None:
            self.announcements.labels(outcome).inc()

    def is_blocked(self, key: str) -> bool:
        return self.trust.is_blocked(key)

    def trusted_urls(self) -> list[str]:
        """One URL of each trusted cluster that announced itself."""
        assert self.cache is not None
        return [
            e.node_urls[0] for e in self.cache.live() if e.node_urls and self.trust.level(e.cluster_key) == "trusted"
        ]

    def relay_to(self, entry: DiscoveredCluster) -> list[str]:
        """Gossip goes on to trusted clusters only, never back to its origin."""
        assert self.cache is not None
        return [
            e.node_urls[0]
            for e in self.cache.live()
            if e.node_urls and e.cluster_key != entry.cluster_key and self.trust.level(e.cluster_key) == "trusted"
        ]

    def push_to(self) -> list[str]:
        return list(dict.fromkeys([*self.config.peers, *self.trusted_urls()]))

    async def start(self) -> None:
        from aspen.node.server import peer_verify

        node = self.node
        self.announcements = Counter(
            "aspen_federation_announcements", "Announcements received, by outcome", ["outcome"],
            registry=node.metrics.registry,
        )  # fmt: skip
        self.verify = peer_verify(node.config)
        self.identity = await ClusterIdentity.load(
            node.data_dir, node.kv, shared=bool(node.config.etcd), name=self.config.name
        )
        self.cache = AnnouncementCache(self.identity.key_hex, self.is_blocked, self.count)
        announcer = Announcer(self.identity, int(self.config.announce_interval * 3000))
        self.exchange = Exchange(
            node, self.config, announcer, self.cache, relay_to=self.relay_to, push_to=self.push_to,
            count=self.count, verify=self.verify,
        )  # fmt: skip
        await self.trust.start()
        await self.apps.start()
        self.proxy = ProxyService(self)
        self.sync = SyncService(self)
        if self.config.proxy.enabled:
            node.registry.forwarder = self.proxy.forward
            node.registry.max_proxy_hops = self.config.proxy.max_hops
        node.federation = self
        await self.exchange.start()

    async def stop(self) -> None:
        if self.exchange is not None:
            await self.exchange.stop()
        await self.apps.stop()
        if self.proxy is not None:
            self.node.registry.forwarder = None
            await self.proxy.close()
            await self.sync.close()
        await self.trust.stop()

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
        peers = {
            e.cluster_key: PeerView(
                cluster_key=e.cluster_key,
                name=e.name,
                trust=self.trust.level(e.cluster_key),
                node_urls=e.node_urls,
                apps=e.apps,
                expires_at_ms=e.expires_at_ms,
                via=e.via,
            )
            for e in self.cache.live()
        }
        for t in self.trust.entries():
            peers.setdefault(t.cluster_key, PeerView(cluster_key=t.cluster_key, name=t.name, trust=t.level))
        return FederationPeersResult(peers=sorted(peers.values(), key=lambda p: (p.name, p.cluster_key)))

    async def _FederationRefresh(self, body: Any, ctx: RequestContext) -> FederationRefreshResult:
        assert self.exchange is not None
        got, errors = await self.exchange.pull_all()
        return FederationRefreshResult(pulled=[e.cluster_key for e in got], errors=errors)

    # --- trust ------------------------------------------------------------

    def _name_of(self, key: str, given: str | None) -> str:
        announced = self.cache.get(key) if self.cache is not None else None
        return given or (announced.name if announced else f"trusted-{key[:8]}")

    async def _TrustCluster(self, body: Any, ctx: RequestContext) -> TrustResult:
        key = check_key(body.cluster_key)
        entry = TrustEntry(
            cluster_key=key, level="trusted", name=self._name_of(key, body.name), since_ms=now_ms(),
            notes=body.notes, apps=tuple(body.apps), callers=tuple(body.callers),
        )  # fmt: skip
        return TrustResult(entry=await self.trust.set(entry))

    async def _UntrustCluster(self, body: Any, ctx: RequestContext) -> UntrustResult:
        return UntrustResult(removed=await self.trust.remove(body.cluster_key))

    async def _BlockCluster(self, body: Any, ctx: RequestContext) -> TrustResult:
        key = check_key(body.cluster_key)
        entry = TrustEntry(
            cluster_key=key, level="blocked", name=self._name_of(key, None), since_ms=now_ms(), notes=body.notes
        )
        entry = await self.trust.set(entry)
        assert self.cache is not None
        self.cache.forget(key)  # never used again, whatever it announced
        return TrustResult(entry=entry)

    async def _FederationRequests(self, body: Any, ctx: RequestContext) -> FederationRequestsResult:
        views = [
            PendingView(
                cluster_key=r.identity.document.cluster_key,
                name=r.identity.document.name,
                received_at_ms=r.received_at_ms,
                expires_at_ms=r.received_at_ms + PENDING_TTL_MS,
                message=r.message,
            )
            for r in await self.trust.pending()
        ]
        return FederationRequestsResult(requests=views)

    async def _AcceptTrust(self, body: Any, ctx: RequestContext) -> TrustResult:
        record = await self.trust.take_request(body.cluster_key)
        doc = record.identity.document
        entry = TrustEntry(
            cluster_key=doc.cluster_key, level="trusted", name=doc.name, since_ms=now_ms(),
            notes=record.message, apps=tuple(body.apps), callers=tuple(body.callers),
        )  # fmt: skip
        return TrustResult(entry=await self.trust.set(entry))

    async def _RejectTrust(self, body: Any, ctx: RequestContext) -> RejectTrustResult:
        record = await self.trust.take_request(body.cluster_key)
        return RejectTrustResult(rejected=record.identity.document.cluster_key)

    async def _RequestTrust(self, body: Any, ctx: RequestContext) -> RequestTrustResult:
        assert self.exchange is not None and self.identity is not None
        status = await self.exchange.request_trust(body.url, self.identity.signed_identity(), body.message)
        return RequestTrustResult(status=status)

    # --- resources and sync ---------------------------------------------------

    async def _ResourcePublish(self, body: Any, ctx: RequestContext) -> ResourcePublishResult:
        store = self.sync.store
        await store.ensure(body.name, "", public=body.public)
        hashes = tuple([await store.add_object(body.name, data) for data in body.objects])
        await store.set_heads(body.name, body.heads)
        return ResourcePublishResult(hashes=hashes)

    async def _ResourceList(self, body: Any, ctx: RequestContext) -> ResourceListResult:
        store = self.sync.store
        views = [
            ResourceView(
                name=m.name,
                origin=m.origin,
                public=m.public,
                heads=await store.heads(m.name),
                objects=tuple(await store.objects(m.name)),
            )
            for m in await store.names()
        ]
        return ResourceListResult(resources=tuple(views))

    async def _FederationSync(self, body: Any, ctx: RequestContext) -> FederationSyncResult:
        return FederationSyncResult(**await self.sync.pull(body.resource, body.from_cluster))


def create(node: Any) -> FederationHandler:
    return FederationHandler(node)
