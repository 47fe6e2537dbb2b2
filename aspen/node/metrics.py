"""Prometheus metrics of the RPC surface, in a registry owned by the node
(not the process-global one) so several nodes can live in one process.

Every label value comes from a closed set, since each new value is a new
series kept forever: the outcome is ``ok``, ``disconnected`` or a code of the
:class:`~aspen.errors.ErrorCode` catalogue, and any other code (a plugin may
return whatever it likes) counts as ``OTHER``."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from aspen.errors import ErrorCode

OTHER_OUTCOME = "OTHER"
OUTCOMES = frozenset({"ok", "disconnected", *ErrorCode})

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RpcMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "aspen_rpc_requests", "RPC requests by type and outcome (ok or error code)",
            ["type", "outcome"], registry=self.registry,
        )  # fmt: skip
        self._latency = Histogram(
            "aspen_rpc_request_seconds", "RPC latency by type", ["type"], buckets=BUCKETS, registry=self.registry
        )
        self.in_flight = 0  # a plain int on the hot path; the gauge reads it at scrape time
        Gauge("aspen_rpc_in_flight", "RPC requests being handled", registry=self.registry).set_function(
            lambda: self.in_flight
        )
        # labels() takes a lock and builds a key; the hot path reuses children
        self._count_children: dict[tuple[str, str], object] = {}
        self._latency_children: dict[str, object] = {}

    def observe(self, request_type: str, outcome: str, seconds: float) -> None:
        if outcome not in OUTCOMES:
            outcome = OTHER_OUTCOME
        key = (request_type, outcome)
        counter = self._count_children.get(key)
        if counter is None:
            counter = self._count_children[key] = self._requests.labels(request_type, outcome)
        counter.inc()  # type: ignore[attr-defined]
        hist = self._latency_children.get(request_type)
        if hist is None:
            hist = self._latency_children[request_type] = self._latency.labels(request_type)
        hist.observe(seconds)  # type: ignore[attr-defined]

    def render(self) -> bytes:
        return generate_latest(self.registry)
