"""The node's services object: what every handler factory and route receives.

Handlers see it as ``ctx.node``; the attributes ``kv``, ``blobs``,
``node_id``, ``data_dir``, ``config`` and ``registry`` are the contract of
``aspen.rpc.handler``. Higher layers (plugin host, jobs, cluster) hang their
objects on the ``plugins``/``jobs``/``cluster`` slots when they start.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aspen.node.config import NodeConfig
from aspen.node.metrics import RpcMetrics
from aspen.node.watches import WatchHub
from aspen.rpc.registry import HandlerRegistry
from aspen.storage.protocol import BlobStore, KeyValueStore


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
    auth: Any = None  # aspen.auth.service.AuthService
    plugins: Any = None
    jobs: Any = None
    cluster: Any = None
    federation: Any = None  # aspen.federation.handler.FederationHandler
