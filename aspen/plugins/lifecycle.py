"""One plugin version running on this node: its metrics, the handler the
registry routes to, and the status records a node reports. Its state is the
runtime's (:class:`~aspen.plugins.state.LifecycleState`)."""

from __future__ import annotations

import time
from collections import deque

import msgspec

from aspen.errors import AspenError
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.state import LifecycleState
from aspen.rpc.handler import Request, RequestContext, Response

LATENCY_WINDOW = 1024  # most recent calls the percentiles are taken over


class MetricsSnapshot(msgspec.Struct, frozen=True):
    calls: int = 0
    errors: int = 0
    in_flight: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0


class PluginMetrics:
    """Calls, errors, in-flight count and latency percentiles over the last
    LATENCY_WINDOW calls (a plugin's recent behaviour is what an operator
    looking at ``plugin info`` wants)."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.in_flight = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def record(self, seconds: float, ok: bool) -> None:
        self.calls += 1
        if not ok:
            self.errors += 1
        self._latencies.append(seconds)

    def snapshot(self) -> MetricsSnapshot:
        ordered = sorted(self._latencies)

        def pct(p: float) -> float:
            if not ordered:
                return 0.0
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

        return MetricsSnapshot(self.calls, self.errors, self.in_flight, pct(0.50), pct(0.99))


class ErrorInfo(msgspec.Struct, frozen=True):
    code: str
    message: str

    @classmethod
    def of(cls, exc: AspenError) -> ErrorInfo:
        return cls(exc.code, exc.message)


class RetiringVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A version this node no longer routes to: draining its in-flight calls
    (``stopping``) or shut down (``stopped``). Without it a version replaced
    by an upgrade would vanish from ``plugin info`` while it still finishes
    requests."""

    version: str
    generation: int
    state: str  # LifecycleState.STOPPING or LifecycleState.STOPPED
    in_flight: int = 0
    stopped_at_ms: int = 0  # when it stopped; 0 while stopping


class PluginStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What one node reports about one plugin (``plugin list``/``info``)."""

    name: str
    node_id: str
    state: str  # LifecycleState, or "absent" when nothing runs
    version: str | None = None  # the version serving requests, if any
    generation: int = 0
    wanted_version: str | None = None  # the version the install record asks for
    wanted_generation: int = 0
    error: ErrorInfo | None = None  # why the wanted version is not the one serving
    metrics: MetricsSnapshot = MetricsSnapshot()
    updated_at_ms: int = 0
    # versions retired on this node: those stopping first, then the most
    # recently stopped (see PluginReconciler.status for how long they stay)
    retiring: tuple[RetiringVersion, ...] = ()
    stderr: tuple[str, ...] = ()  # a Failed process plugin's last stderr lines


class ManagedPlugin:
    """The registry's handler for one running plugin version: routes to the
    WASM handler and records metrics. A request that picked this handler
    from a registry snapshot finishes on it even after a swap — the old
    runtime drains before it stops."""

    def __init__(self, handler: WasmPluginHandler, generation: int) -> None:
        self.inner = handler
        self.manifest: PluginManifest = handler.manifest
        self.generation = generation
        self.name = handler.name
        self.request_types = handler.request_types
        self.public_types = handler.public_types
        self.priority = handler.priority
        self.app_id = handler.app_id
        self.keeps_deadline = handler.keeps_deadline  # the runtime's timer, not a second one in the registry
        self.metrics = PluginMetrics()

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.manifest.version, self.manifest.wasm_hash, self.generation)

    @property
    def state(self) -> LifecycleState:
        return self.inner.runtime.state

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        m = self.metrics
        m.in_flight += 1
        started = time.perf_counter()
        ok = False
        try:
            response = await self.inner.handle(request, ctx)
            ok = True
            return response
        finally:
            m.in_flight -= 1
            m.record(time.perf_counter() - started, ok)
