"""The node's services object: what every handler factory and route receives.

Handlers see it as ``ctx.node``; the attributes ``kv``, ``blobs``,
``node_id``, ``data_dir``, ``config`` and ``registry`` are the contract of
``aspen.rpc.handler``. Higher layers hang their objects on the ``auth``,
``plugins``, ``jobs`` and ``federation`` slots when they start; the slots are
typed by what their readers use (protocols), so a layer that reads one needs
no import of the layer that fills it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aspen.node.config import NodeConfig
from aspen.node.metrics import RpcMetrics
from aspen.node.watches import WatchHub
from aspen.rpc.registry import HandlerRegistry
from aspen.storage.protocol import BlobStore, KeyValueStore

if TYPE_CHECKING:
    from aspen.auth.service import AuthService
    from aspen.federation.handler import FederationHandler
    from aspen.jobs.store import JobStore
    from aspen.plugins.handler import WasmPluginHandler


class PluginHost(Protocol):
    """``plugins``: the plugin reconciler (:mod:`aspen.plugins.reconciler`);
    the jobs layer runs plugin exports through it."""

    def get(self, name: str) -> WasmPluginHandler:
        """The serving version's handler; ``PLUGIN_NOT_FOUND`` when none runs here."""


class JobSystem(Protocol):
    """``jobs``: the job handler (:mod:`aspen.jobs.handler`) once started."""

    store: JobStore

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass(eq=False)
class NodeServices:
    config: NodeConfig
    node_id: str
    data_dir: Path
    kv: KeyValueStore
    blobs: BlobStore
    registry: HandlerRegistry
    watches: WatchHub
    metrics: RpcMetrics = field(default_factory=RpcMetrics)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)  # set on SIGTERM
    started_at: float = field(default_factory=time.monotonic)
    auth: AuthService | None = None
    plugins: PluginHost | None = None
    jobs: JobSystem | None = None
    federation: FederationHandler | None = None
