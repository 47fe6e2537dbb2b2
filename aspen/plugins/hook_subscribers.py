"""Plugins as hook subscribers, and the node's hook duty.

A plugin subscribes through the host functions of
:mod:`aspen.plugins.hook_functions`; its patterns live at
``__plugins:hooks:subs:{name}`` and its cursor at
``__plugins:hooks:cursor:{name}`` (keyed by name, so an upgrade keeps
both; removing the plugin drops them). It is a subscriber while it is
installed, enabled and granted ``hooks``. A KV event reaches it only for a
key under its own prefixes, with the value only when it has ``kv_read`` —
the same namespace as its host calls, so hooks are no way around the gate.
Events go to ``plugin_on_hook_event`` (process plugins: ``on_hook_event``)
of the version serving on the node that holds the duty.
"""

from __future__ import annotations

from typing import Any

from aspen.coordination.duty import ClusterDuty
from aspen.errors import AspenError, ErrorCode
from aspen.hooks.dispatcher import DISPATCH_RETRY, QUEUE_BYTES, QUEUE_EVENTS, HookDispatcher, Subscriber
from aspen.hooks.subscriptions import SubscriptionStore, decode_subscriptions
from aspen.hooks.topics import HookEvent, matches
from aspen.plugins.host_functions import put_bytes
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.namespace import effective_prefixes
from aspen.plugins.store import MANIFESTS_PREFIX
from aspen.storage.protocol import KeyValueStore

SUBS_PREFIX = "__plugins:hooks:subs:"
CURSOR_PREFIX = "__plugins:hooks:cursor:"
DUTY = "plugin-hooks"
EVENT_OVERHEAD = 256  # bytes counted per queued event besides its value


def plugin_subscriptions(kv: KeyValueStore) -> SubscriptionStore:
    return SubscriptionStore(kv, SUBS_PREFIX, CURSOR_PREFIX)


class PluginSubscriber:
    retry = DISPATCH_RETRY

    def __init__(self, manifest: PluginManifest, patterns: tuple[str, ...], start: int, plugins: Any) -> None:
        self.name = manifest.name
        self.start = start
        self.patterns = patterns
        self.prefixes = effective_prefixes(manifest.name, manifest.kv_prefixes)
        self.reads = manifest.permissions.kv_read
        self.plugins = plugins  # the reconciler: the version serving here

    def select(self, hook: HookEvent) -> tuple[dict[str, Any], int] | None:
        if not any(matches(p, hook.topic) for p in self.patterns):
            return None
        event = hook.event
        if hook.is_kv:
            if not hook.key.startswith(self.prefixes):
                return None
            if self.reads and hook.value is not None:
                event = put_bytes(dict(event), "value", hook.value)
        return {"topic": hook.topic, "event": event}, EVENT_OVERHEAD + len(hook.value or b"")

    async def deliver(self, payload: dict[str, Any]) -> None:
        if not await self.plugins.get(self.name).notify("hook_event", payload):
            raise AspenError(ErrorCode.PLUGIN_CALLBACK_FAILED, f"plugin '{self.name}' has no plugin_on_hook_event")


class PluginSubscribers:
    """The dispatcher's source of plugin subscribers."""

    kind = "plugin"

    def __init__(self, kv: KeyValueStore, plugins: Any) -> None:
        self.kv = kv
        self.plugins = plugins
        self.store = plugin_subscriptions(kv)

    def affects(self, key: str) -> bool:
        return key.startswith((SUBS_PREFIX, MANIFESTS_PREFIX))

    async def load(self) -> dict[str, Subscriber]:
        manifests = await self.plugins.store.manifests()
        page = await self.kv.scan(SUBS_PREFIX, limit=1000)
        out: dict[str, Subscriber] = {}
        for entry in page.entries:
            name = entry.key[len(SUBS_PREFIX) :]
            m = manifests.get(name)
            subs = decode_subscriptions(entry.value)
            if m is not None and m.enabled and m.permissions.hooks and subs.patterns:
                out[name] = PluginSubscriber(m, subs.patterns, subs.since, self.plugins)
        return out


class HookService:
    """The hook duty of one node: the dispatcher runs where the duty is held.
    ``[plugins] hook_queue_events`` / ``hook_queue_bytes`` bound each plugin's queue."""

    def __init__(self, kv: KeyValueStore, node_id: str, plugins: Any, section: dict[str, Any], metrics: Any) -> None:
        dropped = None
        if metrics is not None:
            from prometheus_client import Counter

            dropped = Counter(
                "aspen_hooks_dropped", "Hook events dropped per plugin (its queue was full, or history compacted)",
                ["plugin"], registry=metrics.registry,
            )  # fmt: skip

        def on_drop(name: str, n: int) -> None:
            if dropped is not None:
                dropped.labels(name).inc(n)

        self.dispatcher = HookDispatcher(
            kv,
            [PluginSubscribers(kv, plugins)],
            queue_events=_positive(section, "hook_queue_events", QUEUE_EVENTS),
            queue_bytes=_positive(section, "hook_queue_bytes", QUEUE_BYTES),
            on_drop=on_drop,
            idle_prefix=SUBS_PREFIX,  # the whole key space is watched only once a plugin has subscribed
        )
        self.duty = ClusterDuty(kv, DUTY, node_id, self.dispatcher.run)

    def start(self) -> None:
        self.duty.start()

    async def stop(self) -> None:
        await self.duty.stop()


def _positive(section: dict[str, Any], name: str, default: int) -> int:
    value = section.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1 << 40:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[plugins] {name} must be a positive integer")
    return value
