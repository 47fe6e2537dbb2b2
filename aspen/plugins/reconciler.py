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
dependency order.

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
from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.host import PluginHost
from aspen.plugins.lifecycle import (
    ErrorInfo,
    LifecycleState,
    ManagedPlugin,
    MetricsSnapshot,
    PluginStatus,
    RetiringVersion,
)
from aspen.plugins.manifest import NodePluginLimits, PluginManifest
from aspen.plugins.signing import verify_wasm, wasm_hash
from aspen.plugins.store import (
    MANIFESTS_PREFIX,
    PLUGINS_PREFIX,
    InstalledPlugin,
    PluginStore,
    blob_tag,
)
from aspen.plugins.trust import TRUST_PREFIX, TrustStore
from aspen.plugins.validation import load_order, version_satisfies
from aspen.rpc.catalog import PluginReloadResult
from aspen.rpc.registry import HandlerRegistry
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins.reconciler")

STATUS_PREFIX = "__plugins:status:"
STOPPED_KEPT = 3  # stopped versions per plugin still listed in its status
Key = tuple[str, str, int]  # (version, wasm_hash, generation)


def key_of(record: InstalledPlugin) -> Key:
    return (record.manifest.version, record.manifest.wasm_hash, record.generation)


def status_key(name: str, node_id: str) -> str:
    return f"{STATUS_PREFIX}{name}:{node_id}"


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
        limits: NodePluginLimits = NodePluginLimits(),
        signing_key: Ed25519PrivateKey | None = None,
        node_info: dict[str, Any] | None = None,
        drain_seconds: float = 30.0,
        resync_seconds: float = 30.0,
        health_seconds: float = 10.0,
    ) -> None:
        self.kv = kv
        self.blobs = blobs
        self.registry = registry
        self.node_id = node_id
        self.allow_unsigned = allow_unsigned
        self.limits = limits
        self.signing_key = signing_key
        self.node_info = dict(node_info or {"node_id": node_id})
        self.drain_seconds = drain_seconds
        self.resync_seconds = resync_seconds
        self.health_seconds = health_seconds
        self.store = PluginStore(kv, blobs)
        self.trust = TrustStore(kv)
        self._active: dict[str, ManagedPlugin] = {}
        self._hosts: dict[ManagedPlugin, PluginHost] = {}  # the host that loaded each version
        self._failed: dict[str, tuple[Key, AspenError]] = {}
        self._wanted: dict[str, InstalledPlugin] = {}
        self._transient: dict[str, LifecycleState] = {}  # loading / initializing of a new version
        self._published: dict[str, PluginStatus] = {}
        self._pinned: set[tuple[str, str, str]] = set()  # (name, version, hash) pinned in this node's blob store
        self._lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._passes = asyncio.Condition()
        self._passes_started = 0
        self._passes_done = 0  # the number (start order) of the last finished pass
        self._force: set[str] = set()
        self._tasks: list[asyncio.Task] = []
        self._retiring: set[asyncio.Task] = set()
        self._draining: dict[str, list[ManagedPlugin]] = {}  # replaced or removed, still stopping
        self._stopped: dict[str, deque[RetiringVersion]] = {}  # most recently stopped first
        self._closed = False

    # --- what runs here ----------------------------------------------------------

    def get(self, name: str) -> WasmPluginHandler:
        """The serving version's WASM handler (the jobs layer runs plugin exports through it)."""
        try:
            return self._active[name].inner
        except KeyError:
            raise AspenError(
                ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{name}' is not running on this node", plugin=name
            ) from None

    def status(self, name: str) -> PluginStatus:
        """This node's view of ``name``. ``retiring`` lists the versions that
        no longer serve here: each one Stopping while it drains (with its
        in-flight count), then Stopped. The last STOPPED_KEPT stopped versions
        stay listed, so ``plugin info`` after an upgrade still shows that the
        old version drained and stopped; they are forgotten when the plugin
        is removed or the node restarts."""
        active = self._active.get(name)
        wanted = self._wanted.get(name)
        failed = self._failed.get(name)
        if name in self._transient:
            state = self._transient[name].value
        elif active is not None:
            state = active.state.value
        elif failed is not None:
            state = LifecycleState.FAILED.value
        else:
            state = "absent"
        error = None
        if failed is not None and wanted is not None and failed[0] == key_of(wanted):
            error = ErrorInfo.of(failed[1])
        return PluginStatus(
            name=name,
            node_id=self.node_id,
            state=state,
            version=active.manifest.version if active else None,
            generation=active.generation if active else 0,
            wanted_version=wanted.manifest.version if wanted and wanted.manifest.enabled else None,
            wanted_generation=wanted.generation if wanted and wanted.manifest.enabled else 0,
            error=error,
            metrics=active.metrics.snapshot() if active else MetricsSnapshot(),
            updated_at_ms=now_ms(),
            retiring=(
                *(
                    RetiringVersion(
                        version=p.manifest.version,
                        generation=p.generation,
                        state=LifecycleState.STOPPING.value,
                        in_flight=p.metrics.in_flight,
                    )
                    for p in self._draining.get(name, ())
                ),
                *self._stopped.get(name, ()),
            ),
        )

    def statuses(self) -> list[PluginStatus]:
        return [self.status(n) for n in sorted(set(self._wanted) | set(self._active))]

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
            asyncio.create_task(self._watch(revision), name="plugins-watch"),
            asyncio.create_task(self._loop(), name="plugins-reconcile"),
            asyncio.create_task(self._tick(), name="plugins-health"),
        ]

    async def stop(self) -> None:
        """Stop following the records, drain and stop every plugin."""
        self._closed = True
        for task in self._tasks:
            await _cancel(task)
        async with self._lock:
            running = list(self._active.values())
            self._active.clear()
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
            self._force.update(names or self._wanted)
        self._dirty.set()
        return self._passes_started + 1

    async def reconcile(self, *, force: Iterable[str] = ()) -> None:
        """Run one full pass now (after any running one)."""
        self._force.update(force)
        await self._pass()

    async def settle(self, name: str, generation: int, timeout: float, *, after: int | None = None) -> PluginStatus:
        """Wait until this node serves ``generation`` of ``name`` (or failed
        it, or it is no longer wanted), at most ``timeout`` seconds. Only a
        pass numbered ``after`` or later counts (default: one that starts
        after this call)."""
        first = self._passes_started + 1 if after is None else after

        def settled() -> bool:
            if self._passes_done < first:
                return False
            wanted = self._wanted.get(name)
            if wanted is None or not wanted.manifest.enabled:
                return name not in self._active
            if wanted.generation > generation:
                return True  # overtaken by a later change
            active = self._active.get(name)
            if active is not None and active.generation >= generation:
                return True
            failed = self._failed.get(name)
            return failed is not None and failed[0][2] >= generation

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                async with self._passes:
                    await self._passes.wait_for(settled)
        return self.status(name)

    async def reload(self, name: str | None) -> PluginReloadResult:
        """``PluginReload``: with a name, restart that plugin blue/green on every
        node (the record's generation is bumped); without, force a full pass on
        this node, retrying every version that failed."""
        if name is None:
            await self.reconcile(force=set(self._wanted))
            failed = [n for n, s in ((n, self.status(n)) for n in self._wanted) if s.error is not None]
            count = len(self._active)
            if failed:
                return PluginReloadResult(
                    is_success=False,
                    plugin_count=count,
                    message=f"{count} plugin(s) running; failed: {', '.join(sorted(failed))}",
                    error=ErrorCode.PLUGIN_LOAD_FAILED,
                )
            return PluginReloadResult(is_success=True, plugin_count=count, message=f"{count} plugin(s) running")
        stored = await self.store.require(name)
        record = msgspec.structs.replace(
            stored.record, generation=stored.record.generation + 1, updated_at_ms=now_ms()
        )
        await self.store.write(record, stored)
        status = await self.settle(name, record.generation, self.drain_seconds, after=self.poke())
        ok = status.generation >= record.generation or not record.manifest.enabled
        return PluginReloadResult(
            is_success=ok,
            plugin_count=len(self._active),
            message=f"plugin '{name}' reloaded" if ok else f"plugin '{name}' failed to reload",
            error=None if ok else (status.error.code if status.error else ErrorCode.TIMEOUT),
        )

    async def _loop(self) -> None:
        while True:
            await self._dirty.wait()
            try:
                await self._pass()
            except Exception:
                log.exception("plugin reconcile pass failed; retrying")
                await asyncio.sleep(1.0)
                self._dirty.set()

    async def _watch(self, revision: int) -> None:
        """Mark dirty on every change to a manifest or the trust store."""
        while True:
            try:
                async for event in self.kv.watch(PLUGINS_PREFIX, start_revision=revision + 1):
                    revision = event.revision
                    key = event.kv.key
                    if key.startswith(MANIFESTS_PREFIX) or key.startswith(TRUST_PREFIX):
                        self._dirty.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # COMPACTED, a closed or failing store: resync, re-watch
                if self._closed:
                    return
                log.warning("plugin watch ended (%s); resyncing", exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    revision = await self.kv.current_revision()
                self._dirty.set()

    async def _tick(self) -> None:
        """Probe degraded plugins (a healthy answer restores Ready) and resync periodically."""
        waited = 0.0
        while True:
            await asyncio.sleep(self.health_seconds)
            waited += self.health_seconds
            try:
                for plugin in list(self._active.values()):
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
        self._wanted = records
        for name in [n for n in self._stopped if n not in records]:  # removed: forget its past versions
            del self._stopped[name]
        for name, exc in broken.items():
            log.error("plugin %s: %s", name, exc.message)
        enabled = {n: r.manifest for n, r in records.items() if r.manifest.enabled}
        order, dep_errors = load_order(enabled)
        for name, exc in dep_errors.items():
            self._fail(records[name], exc)
        await self._unpin(records, broken)
        keep = set(order) | set(broken)  # an unreadable record leaves what runs alone
        for name in [n for n in self._active if n not in keep]:
            self._retire(name)
        for name in order:
            record = records[name]
            active = self._active.get(name)
            if active is not None and active.key == key_of(record):
                continue
            failed = self._failed.get(name)
            if failed is not None and failed[0] == key_of(record) and name not in force:
                continue
            await self._roll(record)

    async def _unpin(self, records: dict[str, InstalledPlugin], broken: dict[str, AspenError]) -> None:
        """Release this node's pins on versions no record names any more."""
        for pin in sorted(self._pinned):
            name, version, digest = pin
            record = records.get(name)
            kept = {(m.version, m.wasm_hash) for m in (record.manifest, *record.history)} if record else set()
            if name in broken or (version, digest) in kept:
                continue
            self._pinned.discard(pin)
            if not any(p[:2] == (name, version) for p in self._pinned):
                await self.blobs.unprotect(blob_tag(name, version))

    def _fail(self, record: InstalledPlugin, exc: AspenError) -> None:
        previous = self._failed.get(record.name)
        if previous is None or previous[0] != key_of(record) or previous[1].code != exc.code:
            log.error("plugin %s %s not loaded: %s", record.name, record.manifest.version, exc)
        self._failed[record.name] = (key_of(record), exc)

    async def _roll(self, record: InstalledPlugin) -> None:
        """Blue/green: start the wanted version beside the serving one, swap, retire the old."""
        m = record.manifest
        name = m.name
        self._transient[name] = LifecycleState.LOADING
        try:
            wasm = await self._admit(m)
            self._transient[name] = LifecycleState.INITIALIZING
            # A loader per version, so two versions of one plugin can be resident
            # at once; the checks across plugins (prefix overlap, plugin count)
            # were made at install against every record.
            host = PluginHost(
                kv=self.kv,
                blobs=self.blobs,
                signing_key=self.signing_key,
                node_info=self.node_info,
                limits=self.limits,
                max_plugins=1,
            )
            handler = await host.load(m, wasm)
        except AspenError as exc:
            self._fail(record, exc)
            return
        except Exception as exc:  # a bug below us must not stop the other plugins' rollout
            log.exception("plugin %s: unexpected load failure", name)
            self._fail(record, AspenError(ErrorCode.INTERNAL, f"plugin '{name}': internal error while loading: {exc!r}"))
            return
        finally:
            self._transient.pop(name, None)
        new = ManagedPlugin(handler, record.generation)
        self._hosts[new] = host
        old = self._active.get(name)
        self._active[name] = new
        try:
            self._swap_table()
        except AspenError as exc:  # e.g. a native handler already uses this name
            if old is None:
                del self._active[name]
            else:
                self._active[name] = old
            self._fail(record, exc)
            self._spawn_stop(new)
            return
        self._failed.pop(name, None)
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
        if m.signature is not None or not self.allow_unsigned:
            await asyncio.to_thread(verify_wasm, m.signature, wasm, plugin=name)
            assert m.signature is not None
            if not self.allow_unsigned:
                await self.trust.require(m.signature, plugin=name)
        # Keep this node's copy (perhaps fetched from a peer) out of blob GC
        # while the version is current or kept for rollback.
        if (name, m.version, m.wasm_hash) not in self._pinned:
            await self.store.protect(m)
            self._pinned.add((name, m.version, m.wasm_hash))
        for dep in m.dependencies:
            serving = self._active.get(dep.name)
            if serving is None:
                if dep.optional:
                    continue
                raise AspenError(
                    ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                    f"plugin '{name}' needs '{dep.name}', which does not serve on this node",
                    plugin=name,
                    dependency=dep.name,
                )
            if not version_satisfies(serving.manifest.version, dep.min_version):
                raise AspenError(
                    ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD,
                    f"plugin '{name}' needs '{dep.name}' >= {dep.min_version}, this node serves "
                    f"{serving.manifest.version}",
                    plugin=name,
                    dependency=dep.name,
                )
        return wasm

    def _swap_table(self) -> None:
        """One assignment: native handlers plus exactly the serving plugin versions."""
        native = [h for h in self.registry.snapshot().handlers if not isinstance(h, ManagedPlugin)]
        self.registry.replace([*native, *self._active.values()])

    def _retire(self, name: str) -> None:
        plugin = self._active.pop(name)
        self._swap_table()
        log.info("plugin %s %s retired", name, plugin.manifest.version)
        self._spawn_stop(plugin)

    def _spawn_stop(self, plugin: ManagedPlugin) -> None:
        self._draining.setdefault(plugin.name, []).append(plugin)
        task = asyncio.create_task(self._drain(plugin))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _drain(self, plugin: ManagedPlugin) -> None:
        """Stop a version no longer routed to, then report it Stopped (every
        node's ``plugin info`` reads the published status)."""
        name = plugin.name
        try:
            await self._stop_version(plugin, self.drain_seconds)
        finally:
            draining = self._draining.get(name, [])
            if plugin in draining:
                draining.remove(plugin)
            if not draining:
                self._draining.pop(name, None)
            if name in self._wanted:  # a removed plugin's versions are not reported
                stopped = self._stopped.setdefault(name, deque(maxlen=STOPPED_KEPT))
                stopped.appendleft(
                    RetiringVersion(
                        version=plugin.manifest.version,
                        generation=plugin.generation,
                        state=plugin.state.value,
                        stopped_at_ms=now_ms(),
                    )
                )
        if self._closed:
            return
        try:
            async with self._lock:
                await self._publish()
        except Exception:
            log.exception("cannot publish plugin %s status after it stopped", name)

    async def _stop_version(self, plugin: ManagedPlugin, drain: float) -> None:
        host = self._hosts.pop(plugin, None)
        if host is None:
            return
        try:
            await host.unload(plugin.name, drain_seconds=drain)
        except Exception:
            log.exception("plugin %s %s did not stop cleanly", plugin.name, plugin.manifest.version)

    # --- status in KV ---------------------------------------------------------------

    async def _publish(self) -> None:
        """Write this node's view of each plugin under ``__plugins:status:`` when
        its state, version, error or retiring versions changed, so ``plugin
        info`` on any node shows every node."""
        if self._closed:
            return
        names = set(self._wanted) | set(self._active) | set(self._published)
        for name in sorted(names):
            status = self.status(name)
            before = self._published.get(name)
            same = before is not None and (
                before.state,
                before.version,
                before.generation,
                before.error,
                before.retiring,
            ) == (status.state, status.version, status.generation, status.error, status.retiring)
            if same:
                continue
            try:
                if status.state == "absent" and name not in self._wanted:
                    await self.kv.delete(status_key(name, self.node_id))
                    self._published.pop(name, None)
                    self._stopped.pop(name, None)
                else:
                    await self.kv.put(status_key(name, self.node_id), msgspec.json.encode(status))
                    self._published[name] = status
            except AspenError as exc:
                log.warning("cannot publish plugin status: %s", exc)
                return
