"""The plugin host: loads WASM plugins (manifest + module), enforces the
load-time rules and hands their handlers to the registry.

Until the lifecycle issue stores manifests in KV, a node lists its plugins
in its configuration as (manifest path, wasm path) pairs — :class:`PluginSource`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.gate import PluginGate
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.loop_bridge import HostEnv
from aspen.plugins.manifest import (
    MAX_WASM_BYTES,
    NodePluginLimits,
    PluginManifest,
    effective_limits,
)
from aspen.plugins.namespace import effective_prefixes, find_overlap
from aspen.plugins.rules import LOAD, MAX_PLUGINS, check_manifest, parse_manifest
from aspen.plugins.runtime import PluginRuntime, PluginState, decode_json_object
from aspen.plugins.signing import wasm_hash
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins")

MAX_HOST_REPLY_BYTES = 4 << 20


class PluginSource(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One entry of the node configuration's plugin list."""

    manifest: str
    wasm: str


def _load_failed(name: str, message: str, **details: Any) -> AspenError:
    return AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"plugin '{name}': {message}", plugin=name, **details)


class PluginHost:
    def __init__(
        self,
        *,
        kv: KeyValueStore | None,
        blobs: BlobStore | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        node_info: dict[str, Any] | None = None,
        limits: NodePluginLimits = NodePluginLimits(),
        max_plugins: int = MAX_PLUGINS,
    ) -> None:
        self.kv = kv
        self.blobs = blobs
        self.signing_key = signing_key
        self.node_info = dict(node_info or {})
        self.limits = limits
        self.max_plugins = max_plugins
        self._handlers: dict[str, WasmPluginHandler] = {}
        self._lock = asyncio.Lock()

    def handlers(self) -> tuple[WasmPluginHandler, ...]:
        """The loaded plugins' handlers, by priority then name."""
        return tuple(sorted(self._handlers.values(), key=lambda h: (h.priority, h.name)))

    def get(self, name: str) -> WasmPluginHandler:
        try:
            return self._handlers[name]
        except KeyError:
            raise AspenError(ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{name}' is not loaded", plugin=name) from None

    async def load_files(self, manifest_path: str | Path, wasm_path: str | Path) -> WasmPluginHandler:
        def read() -> tuple[bytes, bytes]:
            return Path(manifest_path).read_bytes(), Path(wasm_path).read_bytes()

        try:
            raw_manifest, wasm = await asyncio.to_thread(read)
        except OSError as exc:
            raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, f"cannot read plugin files: {exc}") from exc
        return await self.load(parse_manifest(raw_manifest), wasm)

    async def load_all(self, sources: Iterable[PluginSource]) -> list[AspenError]:
        """Load every configured plugin; one that fails is logged and skipped."""
        errors = []
        for source in sources:
            try:
                await self.load_files(source.manifest, source.wasm)
            except AspenError as exc:
                log.error("plugin from %s not loaded: %s", source.manifest, exc)
                errors.append(exc)
        return errors

    async def load(self, manifest: PluginManifest, wasm: bytes) -> WasmPluginHandler:
        async with self._lock:
            return await self._load(manifest, wasm)

    def _check_admission(self, manifest: PluginManifest, wasm: bytes) -> str:
        check_manifest(manifest, at=LOAD)
        name = manifest.name
        if not manifest.enabled:
            raise _load_failed(name, "is disabled")
        if name in self._handlers:
            raise _load_failed(name, "is already loaded")
        if len(self._handlers) >= self.max_plugins:
            raise _load_failed(name, f"this node already runs {self.max_plugins} plugins")
        if len(wasm) > MAX_WASM_BYTES:
            raise _load_failed(name, f"the module is {len(wasm)} bytes, the limit is {MAX_WASM_BYTES}")
        others = {n: h.runtime.env.gate.prefixes for n, h in self._handlers.items()}
        clash = find_overlap(effective_prefixes(name, manifest.kv_prefixes), others)
        if clash:
            mine, other, theirs = clash
            raise AspenError(
                ErrorCode.INVALID_MANIFEST,
                f"kv prefix {mine!r} of plugin '{name}' overlaps {theirs!r} of plugin '{other}'",
                field="kv_prefixes",
                plugin=name,
                other=other,
            )
        digest = wasm_hash(wasm)
        if manifest.wasm_hash and manifest.wasm_hash != digest:
            raise _load_failed(name, "the module does not match wasm_hash", expected=manifest.wasm_hash, actual=digest)
        return digest

    async def _load(self, manifest: PluginManifest, wasm: bytes) -> WasmPluginHandler:
        digest = self._check_admission(manifest, wasm)
        manifest = msgspec.structs.replace(manifest, wasm_hash=digest)
        name = manifest.name
        limits = effective_limits(manifest.limits, self.limits)
        gate = PluginGate(name, manifest.permissions.granted(), effective_prefixes(name, manifest.kv_prefixes))
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
            runtime = await asyncio.to_thread(PluginRuntime, name, wasm, env, limits)
        except AspenError:
            raise
        except Exception as exc:  # extism.Error: not a module, missing imports, …
            raise _load_failed(name, f"the module does not load: {exc}") from exc
        try:
            await self._start(manifest, runtime)
        except AspenError:
            runtime.state = PluginState.FAILED
            await runtime.stop(0)
            raise
        handler = WasmPluginHandler(manifest, runtime)
        self._handlers[name] = handler
        log.info("plugin %s %s loaded (%s)", name, manifest.version, ", ".join(manifest.handles))
        return handler

    async def _start(self, manifest: PluginManifest, runtime: PluginRuntime) -> None:
        name = manifest.name
        for export in ("plugin_info", "handle_request"):
            if not runtime.has_export(export):
                raise _load_failed(name, f"the module does not export {export}")
        try:
            info = await runtime.call(
                "plugin_info", b"", lambda raw: decode_json_object(name, "plugin_info", raw), lifecycle=True
            )
        except AspenError as exc:
            raise _load_failed(name, f"plugin_info failed: {exc.message}", cause=exc.code) from exc
        if info.get("name") != name:
            raise _load_failed(name, f"plugin name mismatch: manifest says '{name}', guest says '{info.get('name')}'")
        if runtime.has_export("plugin_init"):
            try:
                reply = await runtime.call(
                    "plugin_init", b"{}", lambda raw: decode_json_object(name, "plugin_init", raw), lifecycle=True
                )
            except AspenError as exc:
                raise _load_failed(name, f"plugin_init failed: {exc.message}", cause=exc.code) from exc
            if reply.get("ok") is not True:
                raise _load_failed(name, f"plugin_init refused: {reply.get('error', 'no reason given')}")
        runtime.state = PluginState.READY

    async def unload(self, name: str, *, drain_seconds: float = 30.0) -> None:
        async with self._lock:
            handler = self.get(name)
            del self._handlers[name]
        await handler.runtime.stop(drain_seconds)
        log.info("plugin %s unloaded", name)

    async def close(self) -> None:
        for name in list(self._handlers):
            await self.unload(name, drain_seconds=5.0)
