"""Failover across etcd endpoints for the etcd backend.

aetcd's client talks to one host:port, so this module owns one gRPC channel
per member (built with aetcd's generated stubs) and moves to the next member
when the current one stops answering. A call is retried on another member
when that cannot change its outcome: reads always; writes whose effect is
the same when applied twice (a put, a delete) always; anything else
(compare-and-swap, transactions with compares) only when the request
provably never left the client (the connection was refused). Otherwise the
caller gets ``STORAGE_UNAVAILABLE`` saying the outcome is unknown, never a
silently doubled or lost write.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from aspen.errors import AspenError, ErrorCode
from aspen.storage.etcd_security import EtcdSecurity, open_channel

T = TypeVar("T")

DEFAULT_PORT = 2379
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 512 << 20),
    ("grpc.max_send_message_length", 512 << 20),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.enable_retries", 0),
]
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}
# etcd server errors that mean "this member cannot serve right now", whatever
# gRPC code they travel with (etcd 3.4 uses Canceled/Unknown for some)
_TRANSIENT_DETAILS = (
    "leader changed",
    "no leader",
    "request timed out",
    "server stopped",
    "request cancelled",
    "not capable",
    "too many requests",
    "raft: stopped",
    "proposal dropped",  # a follower without a leader drops proposals (during an election)
    "context canceled",
    "deadline exceeded",
    "unhealthy cluster",
)


# etcd's auth refusals, some of which travel as InvalidArgument or FailedPrecondition
_AUTH_DETAILS = ("user name is empty", "user name not found", "authentication failed", "permission denied")


def transient(exc: grpc.aio.AioRpcError) -> bool:
    if exc.code() in _TRANSIENT:
        return True
    details = (exc.details() or "").lower()
    return any(d in details for d in _TRANSIENT_DETAILS)


def parse_endpoints(endpoints: str | Sequence[str]) -> list[tuple[str, int]]:
    """``"http://h:p,h2:p2"`` or a list of such → [(host, port)]."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out: list[tuple[str, int]] = []
    for raw in items:
        item = raw.strip()
        for scheme in ("http://", "https://"):
            item = item.removeprefix(scheme)
        item = item.rstrip("/")
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep:
            host, port = item, str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"bad etcd endpoint {raw!r} (want host:port)")
        out.append((host, int(port)))
    if not out:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "no etcd endpoint given")
    return out


@dataclass(frozen=True, slots=True)
class Stubs:
    endpoint: str
    kv: Any
    lease: Any
    watch: Any
    cluster: Any
    maintenance: Any


def never_sent(exc: grpc.aio.AioRpcError) -> bool:
    """True when gRPC could not even connect, so the server never saw the request."""
    details = (exc.details() or "").lower()
    return exc.code() == grpc.StatusCode.UNAVAILABLE and (
        "failed to connect" in details or "connection refused" in details
    )


def map_rpc_error(exc: grpc.aio.AioRpcError) -> AspenError:
    """etcd's gRPC errors → Aspen codes (non-transient ones)."""
    code, details = exc.code(), exc.details() or ""
    low = details.lower()
    if "lease not found" in low:
        return AspenError(ErrorCode.LEASE_NOT_FOUND, "lease not found")
    if "future revision" in low:
        return AspenError(ErrorCode.INVALID_ARGUMENT, f"etcd: {details}")
    if "compacted" in low:
        return AspenError(ErrorCode.COMPACTED, details)
    if "too many operations" in low:
        return AspenError(ErrorCode.TOO_MANY_OPERATIONS, f"etcd: {details} (raise etcd --max-txn-ops)")
    if "request is too large" in low:
        return AspenError(ErrorCode.VALUE_TOO_LARGE, f"etcd: {details} (raise etcd --max-request-bytes)")
    if "duplicate key" in low:
        return AspenError(
            ErrorCode.INVALID_ARGUMENT,
            "a batch or transaction branch may write each key once (etcd rejects overlapping writes)",
        )
    if "lease already exists" in low:
        return AspenError(ErrorCode.INVALID_ARGUMENT, "a lease with this id already exists")
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED) or any(
        d in low for d in _AUTH_DETAILS
    ):
        return AspenError(ErrorCode.ETCD_AUTH_FAILED, f"etcd: {details} (see [node] etcd_user / etcd_cert)")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return AspenError(ErrorCode.INVALID_ARGUMENT, f"etcd: {details}")
    if transient(exc) or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return AspenError(ErrorCode.STORAGE_UNAVAILABLE, f"etcd: {details}")
    return AspenError(ErrorCode.INTERNAL, f"etcd {code.name}: {details}")


class EndpointPool:
    """One channel per etcd member; calls go to the current member and move
    on to the next one on connection errors."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        request_timeout: float = 5.0,
        failover_timeout: float = 20.0,
        connect_timeout: float = 3.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        self.endpoints = parse_endpoints(endpoints)
        self.security = security
        self.request_timeout = request_timeout
        self.failover_timeout = failover_timeout
        self.connect_timeout = connect_timeout
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._stubs: dict[int, Stubs] = {}
        self._current = 0

    @property
    def current(self) -> int:
        """Index of the member calls go to now."""
        return self._current

    def names(self) -> list[str]:
        return [f"{h}:{p}" for h, p in self.endpoints]

    def stubs(self, index: int | None = None) -> Stubs:
        i = self._current if index is None else index
        s = self._stubs.get(i)
        if s is None:
            host, port = self.endpoints[i]
            ch = open_channel(f"{host}:{port}", self.security, _CHANNEL_OPTIONS)
            self._channels[i] = ch
            s = self._stubs[i] = Stubs(
                endpoint=f"{host}:{port}",
                kv=rpc.KVStub(ch),
                lease=rpc.LeaseStub(ch),
                watch=rpc.WatchStub(ch),
                cluster=rpc.ClusterStub(ch),
                maintenance=rpc.MaintenanceStub(ch),
            )
        return s

    async def connect(self) -> int:
        """Find a member that answers within ``connect_timeout``; fail fast
        with ``ETCD_UNREACHABLE`` when none does. Returns etcd's revision."""
        deadline = time.monotonic() + self.connect_timeout
        errors: list[str] = []
        for attempt in range(len(self.endpoints)):
            i = (self._current + attempt) % len(self.endpoints)
            remaining = max(0.2, deadline - time.monotonic())
            try:
                status = await self.stubs(i).maintenance.Status(rpc.StatusRequest(), timeout=remaining)
            except grpc.aio.AioRpcError as exc:
                if not transient(exc):  # refused (credentials), not unreachable: no member will do better
                    raise self._refused(exc) from exc
                errors.append(f"{self.names()[i]}: {exc.code().name}: {exc.details()}")
                continue
            self._current = i
            return status.header.revision
        raise AspenError(
            ErrorCode.ETCD_UNREACHABLE,
            f"no etcd endpoint answered within {self.connect_timeout:g}s ({'; '.join(errors)})",
            endpoints=self.names(),
        )

    def _refused(self, exc: grpc.aio.AioRpcError) -> AspenError:
        err = map_rpc_error(exc)
        user = self.security.user if self.security else None
        if err.code == ErrorCode.ETCD_AUTH_FAILED and user:
            return AspenError(err.code, f"etcd refused user {user!r}: {exc.details()}", user=user)
        return err

    def rotate(self, failed: int) -> None:
        if self._current == failed:
            self._current = (failed + 1) % len(self.endpoints)

    async def call(self, fn: Callable[[Stubs, float], Awaitable[T]], *, idempotent: bool) -> T:
        """Run ``fn(stubs, timeout)`` against the current member, failing over
        on connection errors until ``failover_timeout`` has passed."""
        deadline = time.monotonic() + self.failover_timeout
        attempt = 0
        while True:
            i = self._current
            try:
                return await fn(self.stubs(i), self.request_timeout)
            except grpc.aio.AioRpcError as exc:
                if not transient(exc):
                    raise map_rpc_error(exc) from exc
                if not idempotent and not never_sent(exc):
                    raise AspenError(
                        ErrorCode.STORAGE_UNAVAILABLE,
                        f"etcd member {self.names()[i]} failed during a conditional write; "
                        f"its outcome is unknown ({exc.code().name}: {exc.details()})",
                        endpoint=self.names()[i],
                    ) from exc
                if time.monotonic() > deadline:
                    raise AspenError(
                        ErrorCode.STORAGE_UNAVAILABLE,
                        f"no etcd member answered for {self.failover_timeout:g}s "
                        f"(last: {self.names()[i]}: {exc.code().name}: {exc.details()})",
                        endpoints=self.names(),
                    ) from exc
                self.rotate(i)
                attempt += 1
                if attempt % len(self.endpoints) == 0:
                    # a full round failed (an election in progress): back off
                    await asyncio.sleep(min(0.05 * (2 ** (attempt // len(self.endpoints))), 1.0))

    async def close(self) -> None:
        channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for ch in channels:
            await ch.close()
