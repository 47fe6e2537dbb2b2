"""Core handler for node status requests: Ping, GetHealth, GetNodeInfo."""

from __future__ import annotations

import time
from typing import Any

from aspen import __version__
from aspen.rpc import catalog as c
from aspen.rpc.handler import RequestContext
from aspen.rpc.typed_handler import TypedHandler


class NodeHandler(TypedHandler):
    name = "core.node"
    priority = 10
    handles = ("Ping", "GetHealth", "GetNodeInfo")

    async def ping(self, body: c.Ping, ctx: RequestContext) -> c.Pong:
        return c.Pong()

    async def get_health(self, body: c.GetHealth, ctx: RequestContext) -> c.HealthResult:
        node = self.node
        return c.HealthResult(
            status="draining" if node.stopping.is_set() else "ok",
            node_id=node.node_id,
            uptime_seconds=round(time.monotonic() - node.started_at, 3),
            revision=await node.kv.current_revision(),
        )

    async def get_node_info(self, body: c.GetNodeInfo, ctx: RequestContext) -> c.NodeInfoResult:
        node = self.node
        return c.NodeInfoResult(
            node_id=node.node_id,
            endpoint_addr=node.config.listen,
            version=__version__,
            request_types=sorted(node.registry.snapshot().request_types | {"PluginReload"}),
        )


def create(node: Any) -> NodeHandler:
    return NodeHandler(node)
