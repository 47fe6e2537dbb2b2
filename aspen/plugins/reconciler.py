"""Make this node run exactly the plugins the install records ask for.

Every node runs one reconciler. It reads all records under
``__plugins:manifests:`` and converges: plugins removed or disabled are
drained and stopped; every enabled plugin whose (version, module,
generation) differs from what this node runs is rolled blue/green:

1. Loading — fetch the module from the blob store, check its BLAKE3 hash,
   its signature and that the author is trusted (at every load, not only at
   install), and that its hard dependencies serve on this node.
2. Initializing — instantiate it and run ``plugin_info``/``plugin_init``
   *beside* the running version, which keeps serving.
3. Only when the new version is Ready is the registry's handler table
   swapped (one assignment). Requests already dispatched hold the old
   handler and finish on it; the old runtime then drains and stops.

A version that fails at any step is never routed to: the old one keeps
serving and the failure is kept (and shown by ``plugin info``) until the
record changes or a ``PluginReload`` forces a retry. Plugins load in
dependency order, each through :class:`~aspen.plugins.loader.PluginLoader`;
what this node knows about each plugin is one :class:`PluginSlot`.

What triggers a pass: start-up (a node that was down catches up), a watch
on ``__plugins:`` (a change made through any node reaches every node), a
periodic resync (a safety net for a broken watch), and ``poke()`` from the
local lifecycle handler. Passes never overlap; changes arriving during a
pass coalesce into one more pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.lifecycle import ManagedPlugin, PluginStatus
from aspen.plugins.loader import RUNTIME_KINDS, Instantiate, PluginLoader
from aspen.plugins.manifest import NodePluginLimits, PluginManifest
from aspen.plugins.rules import DEFAULT_LIMITS
from aspen.plugins.signing import wasm_hash
from aspen.plugins.slot import PluginSlot, key_of, publish
from aspen.plugins.state import LifecycleState
from aspen.plugins.store import InstalledPlugin, PluginStore, watch_changes
from aspen.plugins.trust import TrustStore
from aspen.plugins.validation import check_dependencies, load_order
from aspen.rpc.registry import HandlerRegistry
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins.reconciler")


async def _cancel(task: asyncio.Task) -> None:
    """Cancel ``task`` and wait for it, cancelling again while it runs: a
    cancellation can be swallowed (Python 3.11's ``asyncio.wait_for``, used by
    store watches, returns a result that arrives in the same tick instead)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.2)
    if not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with %r", task.get_name(), task.exception())


class PluginReconciler:
    def __init__(
        self,
        *,
        kv: KeyValueStore,
        blobs: BlobStore,
        registry: HandlerRegistry,
        node_id: str,
        allow_unsigned: bool = False,
        limits: NodePluginLimits = DEFAULT_LIMITS,
        signing_key: Ed25519PrivateKey | None = None,
        node_info: dict[str, Any] | None = None,
        drain_seconds: float = 30.0,
        resync_seconds: float = 30.0,
        health_seconds: float = 10.0,
        kinds: Mapping[str, Instantiate] = RUNTIME_KINDS,
    ) -> None:
        self.kv = kv
        self.blobs = blobs
        self.registry = registry
        self.node_id = node_id
        self.allow_unsigned = allow_unsigned
        self.limits = limits
        self.loader = PluginLoader(
            kv=kv,
            blobs=blobs,
            signing_key=signing_key,
            node_info=node_info or {"node_id": node_id},
            limits=limits,
            kinds=kinds,
        )
        self.drain_seconds = drain_seconds
        self.resync_seconds = resync_seconds
        self.health_seconds = health_seconds
        self.store = PluginStore(kv, blobs)
        self.trust = TrustStore(kv)
        self._plugins: dict[str, PluginSlot] = {}
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._passes = asyncio.Condition()
        self._passes_started = 0
        self._passes_done = 0  # the number (start order) of the last finished pass
        self._force: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._retiring: set[asyncio.Task] = set()
        self._closed = False

    def _slot(self, name: str) -> PluginSlot:
        slot = self._plugins.get(name)
        if slot is None:
            slot = self._plugins[name] = PluginSlot(name)
        return slot

    def _serving(self) -> dict[str, ManagedPlugin]:
        return {n: s.serving for n, s in self._plugins.items() if s.serving is not None}

    def wanted_names(self) -> list[str]:
        """The plugins that have an install record."""
        return [n for n, s in self._plugins.items() if s.wanted is not None]

    # --- what runs here ----------------------------------------------------------

    def get(self, name: str) -> WasmPluginHandler:
        """The serving version's WASM handler (the jobs layer runs plugin exports through it)."""
        slot = self._plugins.get(name)
        if slot is None or slot.serving is None:
            raise AspenError(ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{name}' is not running on this node", plugin=name)
        return slot.serving.inner

    def status(self, name: str) -> PluginStatus:
        """This node's view of ``name`` (:meth:`PluginSlot.status`)."""
        return (self._plugins.get(name) or PluginSlot(name)).status(self.node_id)

    def statuses(self) -> list[PluginStatus]:
        return [s.status(self.node_id) for _, s in sorted(self._plugins.items()) if s.wanted or s.serving]

    @property
    def running(self) -> int:
        """How many plugins serve on this node."""
        return len(self._serving())

    # --- running ---------------------------------------------------------------

    async def start(self) -> None:
        """Catch up with the records, then follow them."""
        revision = await self.kv.current_revision()
        try:
            await self._pass()
        except Exception:  # the loop retries; a node still starts without its plugins
            log.exception("first plugin reconcile pass failed; retrying")
            self._dirty.set()
        self._tasks = [
            asyncio.create_task(
                watch_changes(self.kv, revision, self._dirty, lambda: self._closed), name="plugins-watch"
            ),
            asyncio.create_task(self._loop(), name="plugins-reconcile"),
            asyncio.create_task(self._tick(), name="plugins-health"),
        ]

    async def stop(self) -> None:
        """Stop following the records, drain and stop every plugin."""
        self._closed = True
        for task in self._tasks:
            await _cancel(task)
        async with self._lock:
            running = list(self._serving().values())
            for slot in self._plugins.values():
                slot.serving = None
            self._swap_table()
            await asyncio.gather(*(self._stop_version(p, self.drain_seconds / 3) for p in running))
        await self.drained()

    async def drained(self) -> None:
        """Wait until every replaced or removed version has drained and stopped."""
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)

    def poke(self, *names: str, force: bool = False) -> int:
        """Ask for a pass soon; ``force`` retries versions that failed before.
        Returns the number of the first pass that sees what was written before
        the call (for :meth:`settle`)."""
        if force:
            self._force.update(names or self.wanted_names())
        self._dirty.set()
        return self._passes_started + 1

    async def reconcile(self, *, force: Iterable[str] = ()) -> None:
        """Run one full pass now (after any running one); ``force`` retries
        those plugins' failed versions."""
        self._force.update(force)
        await self._pass()

    async def settle(self, name: str, generation: int, timeout: float, *, after: int | None = None) -> PluginStatus:
        """Wait until this node serves ``generation`` of ``name`` (or failed
        it, or it is no longer wanted), at most ``timeout`` seconds. Only a
        pass numbered ``after`` or later counts (default: one that starts
        after this call)."""
        first = self._passes_started + 1 if after is None else after

        def settled() -> bool:
            return self._passes_done >= first and (self._plugins.get(name) or PluginSlot(name)).settled(generation)

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with self._passes:
                    await self._passes.wait_for(settled)
        return self.status(name)

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            try:
                await self._pass()
            except Exception:
                log.exception("plugin reconcile pass failed; retrying")
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _tick(self) -> None:
        """Probe degraded plugins (a healthy answer restores Ready) and resync periodically."""
        waited = 0.0
        while True:
            await asyncio.sleep(self.health_seconds)
            waited += self.health_seconds
            try:
                for plugin in list(self._serving().values()):
                    if plugin.state is LifecycleState.DEGRADED:
                        await plugin.inner.runtime.probe()
                await self._publish()
            except Exception:
                log.exception("plugin health round failed")
            if waited >= self.resync_seconds:
                waited = 0.0
                self._dirty.set()

    # --- one pass --------------------------------------------------------------

    async def _pass(self) -> None:
        async with self._lock:
            self._dirty.clear()
            self._passes_started += 1
            number = self._passes_started
            force, self._force = self._force, set()
            try:
                await self._converge(force)
                await self._publish()
            finally:
                async with self._passes:
                    self._passes_done = number
                    self._passes.notify_all()

    async def _converge(self, force: set[str]) -> None:
        records, broken, _ = await self.store.scan()
        for name, slot in self._plugins.items():
            slot.wanted = records.get(name)
            if slot.wanted is None:  # removed: forget its past versions
                slot.stopped.clear()
        for name, record in records.items():
            self._slot(name).wanted = record
        for name, exc in broken.items():
            log.error("plugin %s: %s", name, exc.message)
        enabled = {n: r.manifest for n, r in records.items() if r.manifest.enabled}
        order, dep_errors = load_order(enabled)
        for name, exc in dep_errors.items():
            self._fail(records[name], exc)
        for name, slot in sorted(self._plugins.items()):
            if name not in broken:  # an unreadable record keeps its pins
                await slot.unpin(self.blobs)
        keep = set(order) | set(broken)  # an unreadable record leaves what runs alone
        for name in [n for n in self._serving() if n not in keep]:
            self._retire(name)
        for name in order:
            record, slot = records[name], self._plugins[name]
            if slot.serving is not None and slot.serving.key == key_of(record):
                continue
            if slot.failed is not None and slot.failed[0] == key_of(record) and name not in force:
                continue
            await self._roll(record)

    def _fail(self, record: InstalledPlugin, exc: AspenError) -> None:
        slot = self._slot(record.name)
        previous = slot.failed
        if previous is None or previous[0] != key_of(record) or previous[1].code != exc.code:
            log.error("plugin %s %s not loaded: %s", record.name, record.manifest.version, exc)
        slot.failed = (key_of(record), exc)

    async def _roll(self, record: InstalledPlugin) -> None:
        """Blue/green: start the wanted version beside the serving one, swap, retire the old.
        Two versions of one plugin can be resident at once; the checks across
        plugins (prefix overlap, plugin count) were made at install against
        every record."""
        m = record.manifest
        name = m.name
        slot = self._slot(name)
        slot.starting = LifecycleState.LOADING
        try:
            wasm = await self._admit(m)
            slot.starting = LifecycleState.INITIALIZING
            handler = await self.loader.load(m, wasm)
        except AspenError as exc:
            self._fail(record, exc)
            return
        except Exception as exc:  # a bug below us must not stop the other plugins' rollout
            log.exception("plugin %s: unexpected load failure", name)
            self._fail(
                record, AspenError(ErrorCode.INTERNAL, f"plugin '{name}': internal error while loading: {exc!r}")
            )
            return
        finally:
            slot.starting = None
        new = ManagedPlugin(handler, record.generation)
        old, slot.serving = slot.serving, new
        try:
            self._swap_table()
        except AspenError as exc:  # e.g. a native handler already uses this name
            slot.serving = old
            self._fail(record, exc)
            self._spawn_stop(new)
            return
        slot.failed = None
        log.info(
            "plugin %s %s (generation %d) serving%s",
            name,
            m.version,
            record.generation,
            f", replacing {old.manifest.version}" if old else "",
        )
        if old is not None:
            self._spawn_stop(old)

    async def _admit(self, m: PluginManifest) -> bytes:
        """The module bytes, once they are proven to be the signed, trusted ones."""
        name = m.name
        wasm = await self.store.read_wasm(m.wasm_hash, plugin=name)
        if await asyncio.to_thread(wasm_hash, wasm) != m.wasm_hash:
            raise AspenError(ErrorCode.PLUGIN_HASH_MISMATCH, f"plugin '{name}': the module does not match wasm_hash")
        await self.trust.check_module(m, wasm, allow_unsigned=self.allow_unsigned)
        # Keep this node's copy (perhaps fetched from a peer) out of blob GC
        # while the version is current or kept for rollback.
        pinned = self._slot(name).pinned
        if (m.version, m.wasm_hash) not in pinned:
            await self.store.protect(m)
            pinned.add((m.version, m.wasm_hash))
        serving = {n: p.manifest for n, p in self._serving().items()}
        check_dependencies(m, serving, missing="does not serve on this node", have="this node serves")
        return wasm

    def _swap_table(self) -> None:
        """One assignment: native handlers plus exactly the serving plugin versions."""
        native = [h for h in self.registry.snapshot().handlers if not isinstance(h, ManagedPlugin)]
        self.registry.replace([*native, *self._serving().values()])

    def _retire(self, name: str) -> None:
        slot = self._plugins[name]
        plugin, slot.serving = slot.serving, None
        assert plugin is not None
        self._swap_table()
        log.info("plugin %s %s retired", name, plugin.manifest.version)
        self._spawn_stop(plugin)

    def _spawn_stop(self, plugin: ManagedPlugin) -> None:
        self._slot(plugin.name).draining.append(plugin)
        task = asyncio.create_task(self._drain(plugin))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, plugin: ManagedPlugin) -> None:
        """Stop a version no longer routed to, then report it Stopped (every
        node's ``plugin info`` reads the published status)."""
        slot = self._slot(plugin.name)
        try:
            await self._stop_version(plugin, self.drain_seconds)
        finally:
            if plugin in slot.draining:
                slot.draining.remove(plugin)
            if slot.wanted is not None:  # a removed plugin's versions are not reported
                slot.record_stopped(plugin)
        if self._closed:
            return
        try:
            async with self._lock:
                await self._publish()
        except Exception:
            log.exception("cannot publish plugin %s status after it stopped", plugin.name)

    async def _stop_version(self, plugin: ManagedPlugin, drain: float) -> None:
        try:
            await plugin.inner.runtime.stop(drain)
        except Exception:
            log.exception("plugin %s %s did not stop cleanly", plugin.name, plugin.manifest.version)
        else:
            log.info("plugin %s %s stopped", plugin.name, plugin.manifest.version)

    async def _publish(self) -> None:
        if not self._closed:
            await publish(self.kv, self.node_id, self._plugins)
