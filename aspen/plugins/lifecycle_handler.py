"""The node's plugin lifecycle: the RPC handler for the ``Plugin*`` requests
(``PluginReload`` among them) and the factory that wires the reconciler into
a node.

Entry point (``aspen.handlers`` group)::

    plugins = "aspen.plugins.lifecycle_handler:create"

Node configuration, ``[plugins]`` table of ``aspen.toml``:
``allow_unsigned`` (default false; also ``ASPEN_ALLOW_UNSIGNED_PLUGINS=1``,
set by ``aspen node start --allow-unsigned-plugins``), ``drain_seconds``
(30), ``resync_seconds`` (30), ``health_seconds`` (10), and the caps no
manifest's ``limits`` may exceed: ``max_memory_mib`` (16), ``max_timeout_ms``
(5000), ``max_input_bytes`` and ``max_output_bytes`` (4 MiB),
``max_instances`` (8); ``hook_queue_events`` (1000) and ``hook_queue_bytes``
(16 MiB) bound each plugin's queue of hook events.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.builtin import job_sandbox
from aspen.plugins import requests as r
from aspen.plugins.admin import PluginAdmin
from aspen.plugins.hook_subscribers import HookService
from aspen.plugins.loader import PROCESS, RUNTIME_KINDS
from aspen.plugins.manifest import NodePluginLimits
from aspen.plugins.process_runtime import ProcessKind
from aspen.plugins.reconciler import PluginReconciler
from aspen.plugins.timer_duty import TimerScheduler
from aspen.rpc.catalog import CORE_REQUESTS, parse_body, to_body
from aspen.rpc.handler import Request, RequestContext, Response

ALLOW_UNSIGNED_ENV = "ASPEN_ALLOW_UNSIGNED_PLUGINS"

Verb = Callable[[PluginAdmin, Any], Awaitable[Any]]


async def _trust_remove(admin: PluginAdmin, body: r.PluginTrustRemove) -> r.PluginTrustRemoveResult:
    await admin.trust.remove(body.pubkey)
    return r.PluginTrustRemoveResult(pubkey=body.pubkey, was_removed=True)


async def _trust_list(admin: PluginAdmin, body: r.PluginTrustList) -> r.PluginTrustListResult:
    return r.PluginTrustListResult(authors=await admin.trust.list())


# request type -> the admin verb that answers it; bodies and responses are
# the request tables' (r.LIFECYCLE_REQUESTS, and the core PluginReload)
VERBS: dict[str, Verb] = {
    "PluginInstall": lambda admin, body: admin.install(body, upgrade=False),
    "PluginUpgrade": lambda admin, body: admin.install(body, upgrade=True),
    "PluginRollback": PluginAdmin.rollback,
    "PluginEnable": PluginAdmin.enable,
    "PluginDisable": PluginAdmin.disable,
    "PluginRemove": PluginAdmin.remove,
    "PluginList": lambda admin, body: admin.list(),
    "PluginInfo": PluginAdmin.info,
    "PluginDeps": PluginAdmin.deps,
    "PluginCheck": lambda admin, body: admin.check(),
    "PluginTrustAdd": lambda admin, body: admin.trust.add(body.pubkey, body.name),
    "PluginTrustRemove": _trust_remove,
    "PluginTrustList": _trust_list,
    "PluginReload": lambda admin, body: admin.reload(body.name),
}
REQUESTS = {**r.LIFECYCLE_REQUESTS, "PluginReload": CORE_REQUESTS["PluginReload"]}
if set(VERBS) != set(REQUESTS):
    raise RuntimeError(f"plugin requests without a verb or a body: {sorted(set(VERBS) ^ set(REQUESTS))}")


class LifecycleHandler:
    name = "core.plugins"
    priority = 150  # above the core store handlers' 0-99: runs under the request deadline
    request_types = frozenset(REQUESTS)

    def __init__(self, reconciler: PluginReconciler, hooks: HookService | None = None) -> None:
        self.reconciler = reconciler
        self.admin = PluginAdmin(reconciler)
        self.hooks = hooks
        self.timers = TimerScheduler(reconciler.kv, reconciler, reconciler.node_id)

    async def start(self) -> None:
        await self.reconciler.start()
        self.timers.start()
        if self.hooks is not None:
            self.hooks.start()

    async def stop(self) -> None:
        await self.timers.stop()  # first: another node takes the timers while this one drains
        if self.hooks is not None:
            await self.hooks.stop()
        await self.reconciler.stop()

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        try:
            body_cls, response_type, _ = REQUESTS[request.type]
        except KeyError:
            raise AspenError(ErrorCode.UNKNOWN_REQUEST, f"unknown plugin request {request.type}") from None
        result = await VERBS[request.type](self.admin, parse_body(request.body, body_cls))
        return Response(response_type, to_body(result))


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _seconds(section: dict[str, Any], name: str, default: float) -> float:
    value = section.get(name, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[plugins] {name} must be a positive number of seconds")
    return float(value)


MAX_MEMORY_MIB = 4096  # a wasm32 memory cannot grow past 4 GiB
# [plugins] key -> (NodePluginLimits field, unit in bytes, largest value)
_CAPS = {
    "max_memory_mib": ("max_memory_bytes", 1 << 20, MAX_MEMORY_MIB),
    "max_timeout_ms": ("max_timeout_ms", 1, 1 << 31),
    "max_input_bytes": ("max_max_input_bytes", 1, 1 << 31),
    "max_output_bytes": ("max_max_output_bytes", 1, 1 << 31),
    "max_instances": ("max_concurrency", 1, 1024),
}


def node_limits(section: dict[str, Any]) -> NodePluginLimits:
    """The caps of the ``[plugins]`` table over the built-in defaults."""
    caps = {}
    for key, (field, unit, largest) in _CAPS.items():
        value = section.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= largest:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[plugins] {key} must be an integer in 1..{largest}")
        caps[field] = value * unit
    return NodePluginLimits(**caps)


def process_kind(node: Any) -> ProcessKind:
    """Process plugins unpack under ``{data_dir}/plugin-bundles`` (emptied at
    start: what is there belonged to a previous run) and run in the job
    sandbox of ``[jobs]`` (``shell_sandbox``, ``sandbox_uid``/``sandbox_gid``).
    Without a data dir (an in-process test node), the default kind's."""
    if getattr(node, "data_dir", None) is None:
        return RUNTIME_KINDS[PROCESS]  # type: ignore[return-value]
    root = Path(node.data_dir) / "plugin-bundles"
    shutil.rmtree(root, ignore_errors=True)
    return ProcessKind(root, job_sandbox(dict(node.config.sections.get("jobs", {}))))


def create(node: Any) -> LifecycleHandler:
    """Build the node's reconciler (``node.plugins``) and return the handler
    whose start/stop run it and that answers the ``Plugin*`` requests."""
    section = dict(node.config.sections.get("plugins", {}))
    reconciler = PluginReconciler(
        kv=node.kv,
        blobs=node.blobs,
        registry=node.registry,
        node_id=node.node_id,
        allow_unsigned=_flag(section.get("allow_unsigned", False)) or _flag(os.environ.get(ALLOW_UNSIGNED_ENV, "")),
        node_info={"node_id": node.node_id},
        drain_seconds=_seconds(section, "drain_seconds", 30.0),
        resync_seconds=_seconds(section, "resync_seconds", 30.0),
        health_seconds=_seconds(section, "health_seconds", 10.0),
        limits=node_limits(section),
        kinds={**RUNTIME_KINDS, PROCESS: process_kind(node)},
    )
    node.plugins = reconciler
    hooks = HookService(node.kv, node.node_id, reconciler, section, getattr(node, "metrics", None))
    return LifecycleHandler(reconciler, hooks)
