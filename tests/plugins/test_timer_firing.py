"""Timers firing for real: two in-process nodes on one SQLite file (as two
node processes would share it), each with its reconciler and the
``plugin-timers`` duty wired as :func:`aspen.plugins.lifecycle_handler.create`
wires them, and the compiled hostile/ticker plugin recording every firing
with the node it ran on."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass

import msgspec
import pytest

from aspen.clock import now_ms
from aspen.errors import ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.admin import PluginAdmin
from aspen.plugins.reconciler import PluginReconciler
from aspen.plugins.timer_duty import TimerScheduler
from aspen.plugins.timers import MAX_TIMERS, timers_key
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.lifecycle.conftest import start_reconciler
from tests.plugins.conftest import plugin_files
from tests.plugins.test_timer_calls import CANCEL, LIST, SCHEDULE, code, tcall

NS = "__plugin:ticker:"
TOLERANCE_MS = 700  # from due to callback, on a loaded 2-core machine


@dataclass
class Node:
    node_id: str
    kv: SqliteKeyValueStore
    rec: PluginReconciler
    timers: TimerScheduler

    @property
    def admin(self) -> PluginAdmin:
        return PluginAdmin(self.rec)


async def until(condition, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def cluster(tmp_path, built):
    nodes: list[Node] = []
    closing = []
    for node_id in ("a", "b"):
        kv = await SqliteKeyValueStore.open(tmp_path / "shared.sqlite", durable=False)
        blobs = await LocalBlobStore.open(tmp_path / "blobs")
        rec = await start_reconciler(kv, blobs, node_id=node_id, allow_unsigned=True, node_info={"node_id": node_id})
        timers = TimerScheduler(kv, rec, node_id, ttl=3)
        timers.start()
        nodes.append(Node(node_id, kv, rec, timers))
        closing += [kv, blobs]
    yield nodes
    for n in nodes:
        await n.timers.stop()
        await n.rec.stop()
    for s in closing:
        await s.close()


async def install(nodes: list[Node], built, version: str = "0.1.0", *, upgrade: bool = False) -> None:
    manifest, wasm = plugin_files(built, "hostile/ticker")
    manifest = msgspec.structs.replace(manifest, version=version)
    result = await nodes[0].admin.install(r.PluginInstall(manifest=manifest, wasm=wasm), upgrade=upgrade)
    for n in nodes:  # the other store object sees the write only at its resync (30 s): ask for a pass now
        status = await n.rec.settle("ticker", result.generation, 15, after=n.rec.poke())
        assert status.version == version, status


async def schedule(node: Node, name: str, interval_ms: int, repeating: bool = False) -> dict:
    args = {"name": name, "interval_ms": interval_ms, "repeating": repeating}
    return await tcall(node.rec.get("ticker"), SCHEDULE, args)


async def firings(kv, name: str) -> list[dict]:
    page = await kv.scan(f"{NS}fired:{name}:", limit=1000)
    return sorted((json.loads(e.value) for e in page.entries), key=lambda f: f["fired_ms"])


def leader(nodes: list[Node]) -> Node | None:
    leading = [n for n in nodes if n.timers.duty.leading]
    return leading[0] if len(leading) == 1 else None


async def test_a_timer_fires_on_one_node_within_tolerance_and_moves_with_the_duty(cluster, built):
    await install(cluster, built)
    first = await until(lambda: asyncio.sleep(0, leader(cluster)), what="a timer leader")
    other = next(n for n in cluster if n is not first)
    await schedule(other, "tick", 1000, repeating=True)  # any node may schedule; the leader fires
    fired = await until(lambda: _at_least(first.kv, "tick", 3), what="3 firings")
    assert {f["node"] for f in fired} == {first.node_id}
    for f in fired:
        assert 0 <= f["fired_ms"] - f["scheduled_ms"] < TOLERANCE_MS, f
    due = [f["scheduled_ms"] for f in fired]
    assert all(b - a >= 1000 for a, b in itertools.pairwise(due)), due  # a fixed delay after each callback

    await first.timers.stop()  # resigns: the other node takes the timers at once
    started = len(fired)
    fired = await until(lambda: _at_least(first.kv, "tick", started + 3), what="firings on the other node")
    assert {f["node"] for f in fired[started:]} == {other.node_id}
    due = [f["scheduled_ms"] for f in fired]
    assert len(due) == len(set(due)), "a firing was repeated across the change of leader"
    first.timers = TimerScheduler(first.kv, first.rec, first.node_id, ttl=3)  # for the fixture's stop
    first.timers.start()


async def _at_least(kv, name: str, n: int) -> list[dict] | None:
    fired = await firings(kv, name)
    return fired if len(fired) >= n else None


async def test_a_fired_one_shot_frees_its_slot(cluster, built):
    a = cluster[0]
    await install(cluster, built)
    ticker = a.rec.get("ticker")
    for i in range(MAX_TIMERS - 1):
        assert "ok" in await schedule(a, f"long{i}", 3_600_000)
    assert "ok" in await schedule(a, "once", 1000)
    assert code(await schedule(a, "more", 1000)) == ErrorCode.PLUGIN_TOO_MANY_TIMERS
    await until(lambda: _at_least(a.kv, "once", 1), what="the one-shot to fire")

    async def freed() -> bool:
        return len((await tcall(ticker, LIST))["ok"]["timers"]) == MAX_TIMERS - 1

    await until(freed, what="the one-shot to go")
    assert "ok" in await schedule(a, "more", 60_000)
    await asyncio.sleep(1.5)
    assert len(await firings(a.kv, "once")) == 1  # a one-shot fires once


async def test_host_calls_from_a_callback_are_applied(cluster, built):
    a = cluster[0]
    await install(cluster, built)
    # "first" schedules "second" from its callback; "self" schedules itself again (a one-shot chain)
    await a.kv.put(f"{NS}then:first", b'{"name": "second", "interval_ms": 1000}')
    await a.kv.put(f"{NS}then:self", b'{"name": "self", "interval_ms": 1000}')
    await schedule(a, "first", 1000)
    await schedule(a, "self", 1000)
    second = await until(lambda: _at_least(a.kv, "second", 1), what="the timer scheduled from a callback")
    first = await firings(a.kv, "first")
    assert second[0]["fired_ms"] - first[0]["fired_ms"] >= 1000
    assert json.loads((await a.kv.get(f"{NS}then-reply:first")).value)["ok"]["next_fire_ms"] > 0
    await until(lambda: _at_least(a.kv, "self", 3), what="a one-shot that reschedules itself")
    listed = {t["name"] for t in (await tcall(a.rec.get("ticker"), LIST))["ok"]["timers"]}
    assert "first" not in listed and "second" not in listed and "self" in listed


async def test_a_failing_callback_is_logged_once_and_the_timer_goes_on(cluster, built, caplog):
    caplog.set_level(logging.WARNING, logger="aspen.plugins.timers")
    a = cluster[0]
    await install(cluster, built)
    await a.kv.put(f"{NS}fail:bad", b"1")
    await schedule(a, "bad", 1000, repeating=True)
    await until(lambda: _at_least(a.kv, "bad", 3), what="a failing timer to keep firing")
    failed = [rec for rec in caplog.records if "callback failed" in rec.getMessage()]
    assert len(failed) == 1 and ErrorCode.PLUGIN_CALLBACK_FAILED in failed[0].getMessage()  # throttled


async def test_upgrade_keeps_timers_disable_pauses_them_remove_deletes_them(cluster, built):
    a, b = cluster
    await install(cluster, built)
    await schedule(a, "tick", 1000, repeating=True)
    await until(lambda: _at_least(a.kv, "tick", 1), what="a first firing")

    await install(cluster, built, "0.2.0", upgrade=True)
    upgraded = now_ms()
    listed = (await tcall(b.rec.get("ticker"), LIST))["ok"]["timers"]
    assert [t["name"] for t in listed] == ["tick"]  # the new version inherited it

    async def fired_after(t: int) -> bool:
        return any(f["fired_ms"] > t for f in await firings(a.kv, "tick"))

    await until(lambda: fired_after(upgraded), what="a firing of the upgraded version")

    await a.admin.disable(r.PluginDisable(name="ticker"))
    await b.rec.settle("ticker", 0, 10, after=b.rec.poke())  # it sees the other store's write only at its resync
    await asyncio.sleep(0.5)  # a callback started before the disable may still end
    paused = len(await firings(a.kv, "tick"))
    await asyncio.sleep(2.5)
    assert len(await firings(a.kv, "tick")) == paused  # a disabled plugin's timers do not fire
    assert await a.kv.get(timers_key("ticker")) is not None  # … but are kept
    enabled = now_ms()
    resumed = await a.admin.enable(r.PluginEnable(name="ticker"))
    await b.rec.settle("ticker", resumed.generation, 10, after=b.rec.poke())  # b may lead the duty
    await until(lambda: fired_after(enabled), what="the timers to resume")

    await a.admin.remove(r.PluginRemove(name="ticker"))
    assert await a.kv.get(timers_key("ticker")) is None
    await asyncio.sleep(0.5)
    gone = len(await firings(a.kv, "tick"))
    await asyncio.sleep(1.5)
    assert len(await firings(a.kv, "tick")) == gone


async def test_cancel_stops_a_timer_before_it_fires(cluster, built):
    a = cluster[0]
    await install(cluster, built)
    await schedule(a, "never", 1000)
    assert (await tcall(a.rec.get("ticker"), CANCEL, {"name": "never"}))["ok"] == {"cancelled": True}
    await schedule(a, "marker", 1500)  # fires after "never" would have
    await until(lambda: _at_least(a.kv, "marker", 1), what="the marker timer")
    assert await firings(a.kv, "never") == []
