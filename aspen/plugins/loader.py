"""Plugin loading in one place: the reconciler (installed plugins), the WASM
job executor (modules run as jobs) and :class:`~aspen.plugins.host.PluginHost`
(plugins from files) all get their runtimes here, so what a plugin may
reach (:class:`~aspen.plugins.loop_bridge.HostEnv`) and how its runtime is
built are defined once.

The seam for another kind of runtime is :data:`RUNTIME_KINDS`: a kind maps to
the function that instantiates a module of that kind into something that
answers like :class:`PluginRuntime` (``call``, ``has_export``, ``state``,
``probe``, ``stop``): ``wasm`` and ``process``
(:mod:`aspen.plugins.process_runtime`, whose module is a bundle). The
manifest rules, the hash and signature, the ``plugin_info``/``plugin_init``
handshake and the handler are the same for every kind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle
from aspen.plugins.faults import decode_json_object
from aspen.plugins.gate import PluginGate
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.loop_bridge import HostEnv
from aspen.plugins.manifest import (
    MAX_WASM_BYTES,
    EffectiveLimits,
    NodePluginLimits,
    PluginManifest,
    effective_limits,
)
from aspen.plugins.namespace import effective_prefixes
from aspen.plugins.process_runtime import default_kind
from aspen.plugins.rules import DEFAULT_LIMITS, LOAD, check_manifest
from aspen.plugins.runtime import PluginRuntime
from aspen.plugins.signing import wasm_hash
from aspen.plugins.state import LifecycleState
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins")

MAX_HOST_REPLY_BYTES = 4 << 20
WASM, PROCESS = "wasm", "process"

# ``instantiate(name, module, env, limits)``, run on a worker thread.
Instantiate = Callable[[str, bytes, HostEnv, EffectiveLimits], PluginRuntime]
RUNTIME_KINDS: Mapping[str, Instantiate] = MappingProxyType({WASM: PluginRuntime, PROCESS: default_kind()})


def load_failed(name: str, message: str, **details: Any) -> AspenError:
    return AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"plugin '{name}': {message}", plugin=name, **details)


class PluginLoader:
    """What this node gives every plugin it loads (stores, signing key, node
    info, the node's limits), and the steps from module bytes to a started
    runtime."""

    def __init__(
        self,
        *,
        kv: KeyValueStore | None,
        blobs: BlobStore | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        node_info: dict[str, Any] | None = None,
        limits: NodePluginLimits = DEFAULT_LIMITS,
        kinds: Mapping[str, Instantiate] = RUNTIME_KINDS,
    ) -> None:
        self.kv = kv
        self.blobs = blobs
        self.signing_key = signing_key
        self.node_info = dict(node_info or {})
        self.limits = limits
        self.kinds = kinds

    async def instantiate(
        self,
        name: str,
        module: bytes,
        gate: PluginGate,
        limits: EffectiveLimits,
        *,
        kind: str = WASM,
        bad_module: ErrorCode = ErrorCode.PLUGIN_LOAD_FAILED,
    ) -> PluginRuntime:
        """A runtime for ``module``, in the Initializing state. A module the
        runtime cannot load (not a module, missing imports …) is ``bad_module``."""
        env = HostEnv(
            gate,
            kv=self.kv,
            blobs=self.blobs,
            loop=asyncio.get_running_loop(),
            loop_thread=threading.get_ident(),
            node_info=self.node_info,
            signing_key=self.signing_key,
            max_reply_bytes=min(MAX_HOST_REPLY_BYTES, limits.memory_bytes // 4),
        )
        try:
            return await asyncio.to_thread(self.kinds[kind], name, module, env, limits)
        except AspenError:
            raise
        except Exception as exc:  # extism.Error: not a module, missing imports, …
            message = f"the module does not load: {exc}"
            if bad_module == ErrorCode.PLUGIN_LOAD_FAILED:
                raise load_failed(name, message) from exc
            raise AspenError(bad_module, message) from exc

    async def load(self, manifest: PluginManifest, module: bytes, *, kind: str | None = None) -> WasmPluginHandler:
        """Check ``manifest`` against the load-time rules and the module,
        start the runtime of ``kind`` (default: the manifest's ``runtime``;
        ``plugin_info``, ``plugin_init``) and return its handler, Ready. The
        rules across plugins are the caller's."""
        check_manifest(manifest, at=LOAD)
        name = manifest.name
        kind = kind or manifest.runtime
        if PROCESS in (kind, manifest.runtime) and kind != manifest.runtime:
            raise load_failed(name, f"the manifest's runtime is {manifest.runtime!r}, not {kind!r}")
        if not manifest.enabled:
            raise load_failed(name, "is disabled")
        if len(module) > MAX_WASM_BYTES:
            raise load_failed(name, f"the module is {len(module)} bytes, the limit is {MAX_WASM_BYTES}")
        digest = await asyncio.to_thread(wasm_hash, module)
        if manifest.wasm_hash and manifest.wasm_hash != digest:
            raise AspenError(
                ErrorCode.PLUGIN_HASH_MISMATCH,
                f"plugin '{name}': the module does not match wasm_hash",
                plugin=name,
                expected=manifest.wasm_hash,
                actual=digest,
            )
        manifest = msgspec.structs.replace(manifest, wasm_hash=digest)
        if kind == PROCESS:
            await asyncio.to_thread(bundle.check, module, manifest)
        gate = PluginGate(name, manifest.permissions.granted(), effective_prefixes(name, manifest.kv_prefixes))
        runtime = await self.instantiate(name, module, gate, effective_limits(manifest.limits, self.limits), kind=kind)
        try:
            await _start(name, runtime)
        except AspenError:
            runtime.state = LifecycleState.FAILED
            await runtime.stop(0)
            raise
        log.info("plugin %s %s loaded (%s)", name, manifest.version, ", ".join(manifest.handles))
        return WasmPluginHandler(manifest, runtime)


def _json_call(runtime: PluginRuntime, export: str, data: bytes) -> Awaitable[dict[str, Any]]:
    return runtime.call(export, data, lambda raw: decode_json_object(runtime.name, export, raw), lifecycle=True)


async def _start(name: str, runtime: PluginRuntime) -> None:
    """The handshake: the guest must say it is the manifest's plugin, and
    ``plugin_init`` (when exported) must accept."""
    for export in ("plugin_info", "handle_request"):
        if not runtime.has_export(export):
            raise load_failed(name, f"the module does not export {export}")
    try:
        info = await _json_call(runtime, "plugin_info", b"")
    except AspenError as exc:
        stderr = {"stderr": exc.details["stderr"]} if "stderr" in exc.details else {}  # a process plugin's log
        raise load_failed(name, f"plugin_info failed: {exc.message}", cause=exc.code, **stderr) from exc
    if info.get("name") != name:
        raise load_failed(name, f"plugin name mismatch: manifest says '{name}', guest says '{info.get('name')}'")
    if runtime.has_export("plugin_init"):
        try:
            reply = await _json_call(runtime, "plugin_init", b"{}")
        except AspenError as exc:
            raise load_failed(name, f"plugin_init failed: {exc.message}", cause=exc.code) from exc
        if reply.get("ok") is not True:
            raise load_failed(name, f"plugin_init refused: {reply.get('error', 'no reason given')}")
    runtime.state = LifecycleState.READY
