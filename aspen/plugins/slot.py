"""What one node knows about one plugin: the reconciler's single record per
plugin name, and the status it reports from it."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError
from aspen.plugins.lifecycle import (
    ErrorInfo,
    ManagedPlugin,
    MetricsSnapshot,
    PluginStatus,
    RetiringVersion,
)
from aspen.plugins.state import LifecycleState
from aspen.plugins.store import InstalledPlugin, blob_tag
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins.reconciler")

STATUS_PREFIX = "__plugins:status:"
STOPPED_KEPT = 3  # stopped versions per plugin still listed in its status
Key = tuple[str, str, int]  # (version, wasm_hash, generation)


def status_key(name: str, node_id: str) -> str:
    return f"{STATUS_PREFIX}{name}:{node_id}"


def key_of(record: InstalledPlugin) -> Key:
    return (record.manifest.version, record.manifest.wasm_hash, record.generation)


@dataclass(eq=False, slots=True)
class PluginSlot:
    name: str
    wanted: InstalledPlugin | None = None  # the install record, None once removed
    serving: ManagedPlugin | None = None  # the version the registry routes to
    failed: tuple[Key, AspenError] | None = None  # the last version that failed here, and why
    starting: LifecycleState | None = None  # Loading or Initializing a new version
    published: PluginStatus | None = None  # what this node last wrote under __plugins:status:
    draining: list[ManagedPlugin] = field(default_factory=list)  # replaced or removed, still stopping
    stopped: deque[RetiringVersion] = field(default_factory=lambda: deque(maxlen=STOPPED_KEPT))  # newest first
    pinned: set[tuple[str, str]] = field(default_factory=set)  # (version, hash) kept out of this node's blob GC

    @property
    def failure(self) -> AspenError | None:
        """Why the wanted version is not the one serving, if it failed."""
        if self.failed is not None and self.wanted is not None and self.failed[0] == key_of(self.wanted):
            return self.failed[1]
        return None

    def state(self) -> str:
        if self.starting is not None:
            return self.starting.value
        if self.serving is not None:
            return self.serving.state.value
        if self.failed is not None:
            return LifecycleState.FAILED.value
        return "absent"

    def status(self, node_id: str) -> PluginStatus:
        """This node's view. ``retiring`` lists the versions that no longer
        serve here: each one Stopping while it drains (with its in-flight
        count), then Stopped. The last STOPPED_KEPT stopped versions stay
        listed, so ``plugin info`` after an upgrade still shows that the old
        version drained and stopped; they are forgotten when the plugin is
        removed or the node restarts."""
        active, wanted = self.serving, self.wanted
        enabled = wanted is not None and wanted.manifest.enabled
        failure = self.failure
        return PluginStatus(
            name=self.name,
            node_id=node_id,
            state=self.state(),
            version=active.manifest.version if active else None,
            generation=active.generation if active else 0,
            wanted_version=wanted.manifest.version if wanted is not None and enabled else None,
            wanted_generation=wanted.generation if wanted is not None and enabled else 0,
            error=ErrorInfo.of(failure) if failure is not None else None,
            stderr=_stderr(active, failure),
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
                    for p in self.draining
                ),
                *self.stopped,
            ),
        )

    def record_stopped(self, plugin: ManagedPlugin) -> None:
        self.stopped.appendleft(
            RetiringVersion(
                version=plugin.manifest.version,
                generation=plugin.generation,
                state=plugin.state.value,
                stopped_at_ms=now_ms(),
            )
        )

    def settled(self, generation: int) -> bool:
        """Whether this node is done with ``generation``: it serves it (or a
        later one), failed it, or the plugin is no longer wanted here."""
        wanted = self.wanted
        if wanted is None or not wanted.manifest.enabled:
            return self.serving is None
        if wanted.generation > generation:
            return True  # overtaken by a later change
        if self.serving is not None and self.serving.generation >= generation:
            return True
        return self.failed is not None and self.failed[0][2] >= generation

    async def unpin(self, blobs: BlobStore) -> None:
        """Release this node's pins on versions the record no longer names."""
        record = self.wanted
        kept = {(m.version, m.wasm_hash) for m in (record.manifest, *record.history)} if record else set()
        for pin in sorted(self.pinned - kept):
            self.pinned.discard(pin)
            if not any(v == pin[0] for v, _ in self.pinned):
                await blobs.unprotect(blob_tag(self.name, pin[0]))

    @property
    def idle(self) -> bool:
        """Nothing left to know: the slot can be dropped."""
        return (
            self.wanted is None
            and self.serving is None
            and self.failed is None
            and self.published is None
            and not self.draining
            and not self.pinned
        )


def _stderr(active: ManagedPlugin | None, failure: AspenError | None) -> tuple[str, ...]:
    """A process plugin's last stderr lines, when it failed to load or failed since."""
    if failure is not None:
        return tuple(failure.details.get("stderr") or ())
    if active is not None and active.state is LifecycleState.FAILED and hasattr(active.inner.runtime, "info"):
        return tuple(active.inner.runtime.info()["stderr"])
    return ()


async def publish(kv: KeyValueStore, node_id: str, slots: dict[str, PluginSlot]) -> None:
    """Write this node's view of each plugin under ``__plugins:status:`` when
    its state, version, error or retiring versions changed, so ``plugin
    info`` on any node shows every node; then drop the slots with nothing
    left to know."""
    for name, slot in sorted(slots.items()):
        if slot.wanted is None and slot.serving is None and slot.published is None:
            continue
        status = slot.status(node_id)
        before = slot.published
        same = before is not None and (
            before.state,
            before.version,
            before.generation,
            before.error,
            before.retiring,
            before.stderr,
        ) == (status.state, status.version, status.generation, status.error, status.retiring, status.stderr)
        if same:
            continue
        try:
            if status.state == "absent" and slot.wanted is None:
                await kv.delete(status_key(name, node_id))
                slot.published = None
                slot.stopped.clear()
            else:
                await kv.put(status_key(name, node_id), msgspec.json.encode(status))
                slot.published = status
        except AspenError as exc:
            log.warning("cannot publish plugin status: %s", exc)
            return
    for name in [n for n, s in slots.items() if s.idle]:
        del slots[name]
