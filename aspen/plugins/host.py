"""Plugins loaded side by side from their files, without install records or
a reconciler: what tests, benchmarks and tools use to run a plugin. A node
runs its plugins through :mod:`aspen.plugins.reconciler`; both load through
:class:`~aspen.plugins.loader.PluginLoader`, and the rules across plugins
that hold among them (plugin count, prefix overlap) are the install-time
ones of :mod:`aspen.plugins.validation`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.loader import PluginLoader, load_failed
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.rules import MAX_PLUGINS, parse_manifest
from aspen.plugins.validation import check_prefixes_free, check_room

log = logging.getLogger("aspen.plugins")


class PluginHost:
    def __init__(self, *, max_plugins: int = MAX_PLUGINS, **services: Any) -> None:
        """``services``: what the plugins may reach, as :class:`PluginLoader` takes them."""
        self.loader = PluginLoader(**services)
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

    async def load(self, manifest: PluginManifest, wasm: bytes) -> WasmPluginHandler:
        async with self._lock:
            if manifest.name in self._handlers:
                raise load_failed(manifest.name, "is already loaded")
            loaded = {n: h.manifest for n, h in self._handlers.items()}
            check_room(manifest, loaded, max_plugins=self.max_plugins)
            check_prefixes_free(manifest, loaded)
            handler = await self.loader.load(manifest, wasm)
            self._handlers[handler.name] = handler
            return handler

    async def unload(self, name: str, *, drain_seconds: float = 30.0) -> None:
        async with self._lock:
            handler = self.get(name)
            del self._handlers[name]
        await handler.runtime.stop(drain_seconds)
        log.info("plugin %s unloaded", name)

    async def close(self) -> None:
        for name in list(self._handlers):
            await self.unload(name, drain_seconds=5.0)
