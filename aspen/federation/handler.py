"""The federation RPCs, as a core native handler.

Entry point (group ``aspen.handlers``)::

    federation = "aspen.federation.handler:create"

At node start it loads the cluster identity; the service it builds hangs on
``node.federation`` for the HTTP routes between clusters.
"""

from __future__ import annotations

from typing import Any

from aspen.federation.apps import AppPublisher, list_apps
from aspen.federation.config import federation_config
from aspen.federation.identity import ClusterIdentity
from aspen.federation.requests import (
    FEDERATION_REQUESTS,
    AppListResult,
    ClusterIdentityResult,
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

    async def start(self) -> None:
        node = self.node
        self.identity = await ClusterIdentity.load(
            node.data_dir, node.kv, shared=bool(node.config.etcd), name=self.config.name
        )
        await self.apps.start()
        node.federation = self

    async def stop(self) -> None:
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


def create(node: Any) -> FederationHandler:
    return FederationHandler(node)
