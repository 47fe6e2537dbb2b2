"""Hooks as subscribers of the hook dispatcher, delivered by one node.

The node holding the ``hooks-app`` :class:`~aspen.coordination.duty.ClusterDuty`
runs a :class:`~aspen.hooks.dispatcher.HookDispatcher` over every hook: one
lane and cursor per hook, at-least-once across a failover. Each event is
checked against the owner *now*: a revoked or expired token delivers
nothing, a KV event needs the owner's ``kv:watch`` or ``kv:read`` on its key
and carries the value only with ``kv:read``; other topics (plugin, job,
cluster summaries) need ``cluster:admin``. Direct deliveries run at most
``[hooks] concurrency`` at once across all hooks, each within its timeout,
retried by the hook's own policy; handing an event to a job is retried by
the dispatcher's. The delivering node counts every event's outcome in
``aspen_hookapp_events_total{outcome}`` (delivered, failed, dropped: a
closed set, not a series per hook; per hook, ``HookMetrics``).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from prometheus_client import Counter

from aspen.coordination.duty import ClusterDuty
from aspen.errors import AspenError
from aspen.hookapp.actions import deliver, may_read, owner
from aspen.hookapp.records import (
    RECORDS_PREFIX,
    RESERVED_MARK,
    SECRET_PREFIX,
    HookRecord,
    HookSecret,
    acts_directly,
    decode,
    retry_policy,
)
from aspen.hookapp.store import cursors
from aspen.hooks.dispatcher import DISPATCH_RETRY, HookDispatcher, Subscriber
from aspen.hooks.topics import HookEvent, matches
from aspen.plugins.host_functions import put_bytes
from aspen.rpc.access import needs_for
from aspen.storage.pages import scan_all

DUTY = "hooks-app"
DEFAULT_CONCURRENCY = 8
EVENT_OVERHEAD = 256  # bytes counted per queued event besides its value
OUTCOMES = ("delivered", "failed", "dropped")


def event_id(hook: str, topic: str, key: str, revision: int) -> str:
    """The same for every retry of one event to one hook: receivers deduplicate on it."""
    return hashlib.sha256(f"{hook}\0{topic}\0{key}\0{revision}".encode()).hexdigest()[:32]


def payload_of(node: Any, record: HookRecord, secret: HookSecret, hook: HookEvent) -> dict[str, Any] | None:
    """What the action gets, or None when the owner may not see this event now."""
    if not matches(record.pattern, hook.topic):
        return None
    if hook.is_kv and (hook.key.startswith(RESERVED_MARK) or not hook.key.startswith(record.prefix)):
        return None  # keys under __ (system state, plugins' namespaces) are never a hook's
    try:
        principal = owner(node, secret)
    except AspenError:
        return None  # revoked or expired: the hook delivers nothing more
    event = dict(hook.event)
    if hook.is_kv:
        readable = may_read(node, principal, hook.key)
        watch = needs_for("WatchCreate", {"prefix": hook.key}, None)[0]
        if not readable and not node.auth.verifier.allows(principal, watch, "WatchCreate"):
            return None
        if readable and hook.value is not None:
            put_bytes(event, "value", hook.value)
    elif not (record.admin and node.auth.allows(principal, "cluster:admin")):
        return None
    return {
        "id": event_id(record.name, hook.topic, hook.key, hook.revision),
        "hook": record.name,
        "topic": hook.topic,
        "revision": hook.revision,
        "event": event,
    }


class HookSubscriber:
    def __init__(
        self, node: Any, record: HookRecord, secret: HookSecret, incarnation: int, gate: asyncio.Semaphore
    ) -> None:
        self.node = node
        self.record = record
        self.secret = secret
        self.incarnation = incarnation  # the record's create_revision: a re-added hook is another
        self.gate = gate
        self.name = record.name
        self.start = record.since
        self.retry = retry_policy(record) if acts_directly(record) else DISPATCH_RETRY

    def select(self, hook: HookEvent) -> tuple[dict[str, Any], int] | None:
        payload = payload_of(self.node, self.record, self.secret, hook)
        return None if payload is None else (payload, EVENT_OVERHEAD + len(hook.value or b""))

    async def deliver(self, payload: dict[str, Any]) -> None:
        async with self.gate:
            await deliver(self.node, self.record, self.secret, self.incarnation, payload)


class HookSubscribers:
    """The dispatcher's source of hooks."""

    kind = "hookapp"

    def __init__(self, node: Any, gate: asyncio.Semaphore) -> None:
        self.node = node
        self.gate = gate
        self.store = cursors(node.kv)

    def affects(self, key: str) -> bool:
        return key.startswith(RECORDS_PREFIX)

    async def load(self) -> dict[str, Subscriber]:
        kv = self.node.kv
        by_name = {e.key[len(SECRET_PREFIX) :]: decode(e.value, HookSecret) async for e in scan_all(kv, SECRET_PREFIX)}
        out: dict[str, Subscriber] = {}
        async for entry in scan_all(kv, RECORDS_PREFIX):
            record = decode(entry.value, HookRecord)
            secret = by_name.get(record.name)
            if secret is not None:
                out[record.name] = HookSubscriber(self.node, record, secret, entry.create_revision, self.gate)
        return out


class HookAppService:
    """The node's part: stand for the duty; deliver while holding it."""

    def __init__(self, node: Any, concurrency: int = DEFAULT_CONCURRENCY) -> None:
        self.node = node
        self.events: Any = None  # the Prometheus counter, registered at start
        subscribers = HookSubscribers(node, asyncio.Semaphore(concurrency))
        self.dispatcher = HookDispatcher(
            node.kv,
            [subscribers],
            on_drop=lambda name, n: self.count("dropped", n),
            on_done=lambda name, delivered: self.count("delivered" if delivered else "failed", 1),
            idle_prefix=RECORDS_PREFIX,  # the whole key space is watched only once there is a hook
        )
        self.duty = ClusterDuty(node.kv, DUTY, node.node_id, self.dispatcher.run)

    def count(self, outcome: str, n: int) -> None:
        if self.events is not None:
            self.events.labels(outcome).inc(n)

    def start(self) -> None:
        if self.events is None:
            self.events = Counter(
                "aspen_hookapp_events", "Hook events this node delivered, failed (after their retries) or dropped",
                ["outcome"], registry=self.node.metrics.registry,
            )  # fmt: skip
            for outcome in OUTCOMES:  # every series from the start, at 0
                self.events.labels(outcome)
        self.duty.start()

    async def stop(self) -> None:
        await self.duty.stop()
