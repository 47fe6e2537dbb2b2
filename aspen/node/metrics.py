"""Prometheus metrics of the RPC surface, in a registry owned by the node
(not the process-global one) so several nodes can live in one process.

Every label value comes from a closed set, since each new value is a new
series kept forever: the outcome is ``ok``, ``disconnected`` or a code of the
:class:`~aspen.errors.ErrorCode` catalogue, and any other code (a plugin may
return whatever it likes) counts as ``OTHER``."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from aspen.errors import ErrorCode

OTHER_OUTCOME = "OTHER"
OUTCOMES = frozenset({"ok", "disconnected", *ErrorCode})

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RpcMetrics:
    """Request counts and latencies kept in plain dicts and lists, turned into
    Prometheus families only when scraped: ``observe`` runs once per request
    on the event loop, and prometheus_client's own Counter and Histogram take
    a lock and walk the buckets per call (about 2 µs of a 12 µs Ping). Only
    the loop thread writes them; a scrape copies them first (one C-level copy
    each, atomic under the GIL), so it may run on any thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._counts: dict[tuple[str, str], int] = {}  # (type, outcome) -> requests
        self._latency: dict[str, list[float]] = {}  # type -> per-bucket counts (the last is +Inf), then the sum
        self.in_flight = 0  # a plain int on the hot path; the gauge reads it at scrape time
        Gauge("aspen_rpc_in_flight", "RPC requests being handled", registry=self.registry).set_function(
            lambda: self.in_flight
        )
        self.registry.register(self)

    def observe(self, request_type: str, outcome: str, seconds: float) -> None:
        if outcome not in OUTCOMES:
            outcome = OTHER_OUTCOME
        key = (request_type, outcome)
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        hist = self._latency.get(request_type)
        if hist is None:
            hist = self._latency[request_type] = [0.0] * (len(BUCKETS) + 2)
        hist[bisect_left(BUCKETS, seconds)] += 1  # first bound >= seconds: Prometheus' "le"
        hist[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        """The two families, for ``registry`` (prometheus_client's collector protocol)."""
        requests = CounterMetricFamily(
            "aspen_rpc_requests", "RPC requests by type and outcome (ok or error code)", labels=["type", "outcome"]
        )
        for (request_type, outcome), n in dict(self._counts).items():
            requests.add_metric([request_type, outcome], n)
        yield requests
        latency = HistogramMetricFamily("aspen_rpc_request_seconds", "RPC latency by type", labels=["type"])
        for request_type, hist in dict(self._latency).items():
            *counts, total = hist  # a copy
            cumulative, buckets = 0.0, []
            for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            latency.add_metric([request_type], buckets, total)
        yield latency

    def render(self) -> bytes:
        return generate_latest(self.registry)
