"""Firing plugin timers: on exactly one node of the cluster, the leader of the
``plugin-timers`` :class:`~aspen.coordination.duty.ClusterDuty`.

The leader keeps no schedule of its own: it reads the timer records
(:mod:`aspen.plugins.timers`), calls ``plugin_on_timer`` of the version this
node serves for every timer that is due, and then waits — for a change
under ``__plugins:`` that matters (a timer record, an install record, this
node's status of a plugin, i.e. a plugin starting or stopping here) or
until the earliest timer is due. There is no polling loop.

A timer's next fire time is written *after* its callback ends (a one-shot
is removed then), so a leader that dies or loses the lead mid-callback
leaves the timer due and the next leader fires it again: delivery is
at-least-once, and a timer fires twice in a row only across such a change.
A callback that fails is logged (throttled) and the timer goes on as if it
had fired. A plugin that does not serve on the leader (disabled, being
upgraded, failed here) keeps its due timers until it serves again, and
they fire then; a plugin without an install record loses its timers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aspen.clock import now_ms
from aspen.coordination.duty import DEFAULT_TTL, ClusterDuty
from aspen.errors import AspenError
from aspen.plugins import timers
from aspen.plugins.handler import WasmPluginHandler
from aspen.plugins.log_throttle import LogThrottle
from aspen.plugins.reconciler import PluginReconciler
from aspen.plugins.slot import STATUS_PREFIX
from aspen.plugins.store import MANIFESTS_PREFIX, SCAN_LIMIT, watch_changes
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger("aspen.plugins.timers")

DUTY_NAME = "plugin-timers"
FINISH_SECONDS = 5.0  # how long a leader that stops waits for the callbacks it started
TimerId = tuple[str, str]  # (plugin, timer name)


class TimerScheduler:
    def __init__(
        self, kv: KeyValueStore, reconciler: PluginReconciler, node_id: str, *, ttl: int = DEFAULT_TTL
    ) -> None:
        self.kv = kv
        self.reconciler = reconciler
        self.node_id = node_id
        self.duty = ClusterDuty(kv, DUTY_NAME, node_id, self._lead, ttl=ttl)
        self.log = LogThrottle(log)

    def start(self) -> None:
        self.duty.start()

    async def stop(self) -> None:
        """Resign: another node takes over the timers at once."""
        await self.duty.stop()

    def _relevant(self, key: str) -> bool:
        return key.startswith((timers.TIMERS_PREFIX, MANIFESTS_PREFIX)) or (
            key.startswith(STATUS_PREFIX) and key.endswith(":" + self.node_id)
        )

    def _serving(self, plugin: str) -> WasmPluginHandler | None:
        try:
            return self.reconciler.get(plugin)
        except AspenError:
            return None

    async def _lead(self) -> None:
        changed = asyncio.Event()
        closed = False
        revision = await self.kv.current_revision()
        watch = asyncio.create_task(
            watch_changes(self.kv, revision, changed, lambda: closed, self._relevant), name="plugin-timers-watch"
        )
        in_flight: dict[TimerId, asyncio.Task] = {}
        try:
            while True:
                changed.clear()
                wake = await self._round(in_flight, changed)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if wake is None else max(0.0, (wake - now_ms()) / 1000)):
                        await changed.wait()
        finally:
            closed = True
            if in_flight:  # let running callbacks end, so their next fire times are written
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(list(in_flight.values()), timeout=FINISH_SECONDS)
            tasks = [watch, *in_flight.values()]
            while not all(t.done() for t in tasks):  # a store watch may swallow one cancellation
                for t in tasks:
                    t.cancel()
                await asyncio.wait(tasks, timeout=0.2)

    async def _round(self, in_flight: dict[TimerId, asyncio.Task], changed: asyncio.Event) -> int | None:
        """Start the callback of every due timer; returns when the next one is due."""
        page = await self.kv.scan(timers.TIMERS_PREFIX, limit=SCAN_LIMIT)
        now = now_ms()
        wake: int | None = None
        for entry in page.entries:
            plugin = entry.key[len(timers.TIMERS_PREFIX) :]
            handler = self._serving(plugin)
            due = False
            for name, timer in timers.decode_timers(entry.value).timers.items():
                if (plugin, name) in in_flight:
                    continue  # a repeating timer counts its interval from the end of its callback
                if timer.next_fire_ms > now:
                    if handler is not None:
                        wake = timer.next_fire_ms if wake is None else min(wake, timer.next_fire_ms)
                    continue
                due = True
                if handler is not None:
                    in_flight[(plugin, name)] = asyncio.create_task(
                        self._fire(handler, plugin, name, timer, in_flight, changed)
                    )
            if due and handler is None and await self.kv.get(MANIFESTS_PREFIX + plugin) is None:
                await self.kv.compare_and_delete(entry.key, entry.value)  # the plugin was removed
        return wake

    async def _fire(
        self,
        handler: WasmPluginHandler,
        plugin: str,
        name: str,
        timer: timers.Timer,
        in_flight: dict[TimerId, asyncio.Task],
        changed: asyncio.Event,
    ) -> None:
        try:
            payload = {"name": name, "scheduled_ms": timer.next_fire_ms, "fired_ms": now_ms()}
            try:
                if not await handler.notify("timer", payload):
                    self.log.log(
                        (plugin, "no-export"), logging.WARNING, "plugin %s has timers but no plugin_on_timer", plugin
                    )
            except AspenError as exc:
                if self._serving(plugin) is not handler:
                    return  # stopped or replaced meanwhile: due still, for the version that serves next
                self.log.log(
                    (plugin, name), logging.WARNING, "plugin %s timer %s: callback failed: %s", plugin, name, exc
                )
            await timers.fired(self.kv, plugin, name, timer)
        except asyncio.CancelledError:
            raise
        except Exception:  # a store failure: the timer stays due and the next round retries
            self.log.log(
                (plugin, "fire"), logging.ERROR, "plugin %s timer %s: cannot fire", plugin, name, exc_info=True
            )
            await asyncio.sleep(1.0)
        finally:
            in_flight.pop((plugin, name), None)
            changed.set()
