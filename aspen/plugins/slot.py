"""What one node knows about one plugin: the reconciler's single record per
plugin name, and the status it reports from it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

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
from aspen.plugins.store import InstalledPlugin

STOPPED_KEPT = 3  # stopped versions per plugin still listed in its status
Key = tuple[str, str, int]  # (version, wasm_hash, generation)


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
