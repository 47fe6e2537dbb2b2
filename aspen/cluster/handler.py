"""The ``ClusterStatus`` request and node registration, as a native handler.

Entry point (group ``aspen.handlers``)::

    cluster = "aspen.cluster.handler:create"

At node start the handler registers the node under ``__cluster:nodes:``
(see :mod:`aspen.cluster.membership`); at shutdown it deregisters. The
advertised URL is ``[cluster] advertise_url`` from aspen.toml, else
``http://{listen}``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aspen import __version__
from aspen.cluster.etcd_status import EtcdClusterStatus, etcd_cluster_status
from aspen.cluster.membership import NodeRecord, NodeRegistration, list_nodes
from aspen.rpc.handler import Request, RequestContext, Response
from aspen.storage.etcd import EtcdKeyValueStore


class ClusterStatusResult(msgspec.Struct, frozen=True):
    """The answer to ``ClusterStatus``; the CLI decodes into the same record."""

    node_id: str  # the node that answered
    backend: str  # "etcd" or "embedded"
    nodes: list[NodeRecord]
    etcd: EtcdClusterStatus | None = None
    etcd_endpoints: list[str] = []


class ClusterHandler:
    name = "core.cluster"
    priority = 40
    request_types = frozenset({"ClusterStatus"})

    def __init__(self, node: Any) -> None:
        self.node = node
        section = (getattr(node.config, "sections", None) or {}).get("cluster", {})
        self.registration = NodeRegistration(
            node.kv, node.node_id, node.config.advertise_url, __version__, ttl=int(section.get("registration_ttl", 10))
        )

    async def start(self) -> None:
        await self.registration.start()

    async def stop(self) -> None:
        await self.registration.stop()

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        kv = self.node.kv
        result = ClusterStatusResult(node_id=self.node.node_id, backend="embedded", nodes=await list_nodes(kv))
        if isinstance(kv, EtcdKeyValueStore):
            result = msgspec.structs.replace(
                result, backend="etcd", etcd=await etcd_cluster_status(kv.pool), etcd_endpoints=kv.endpoints
            )
        return Response("ClusterStatusResult", msgspec.to_builtins(result))


def create(node: Any) -> ClusterHandler:
    return ClusterHandler(node)
