"""What ``plugin list``/``info`` report while a plugin works: latency
percentiles, the in-flight count, and a replaced version that drains
(Stopping) and then stops (Stopped) while its successor serves."""

from __future__ import annotations

import asyncio
import time

from aspen.cli.plugin import _retiring_line, _status_line
from aspen.plugins import requests as r
from aspen.plugins.lifecycle import ManagedPlugin, RetiringVersion
from aspen.plugins.slot import STOPPED_KEPT
from aspen.plugins.state import LifecycleState
from aspen.rpc.handler import Request, RequestContext
from tests.lifecycle.conftest import signed, vers_manifest


async def install(node, author, modules, version: str, *, upgrade: bool = False):
    wasm = modules[version]
    body = r.PluginInstall(manifest=signed(author, vers_manifest(version), wasm), wasm=wasm)
    return await node.install(body, upgrade=upgrade)


async def call(registry, seq: int, hold_ms: int = 0):
    body = {"seq": seq, **({"hold_ms": hold_ms} if hold_ms else {})}
    resp = await registry.dispatch(Request("VersionEcho", body), RequestContext())
    assert resp.type == "VersionEchoResult" and resp.body["seq"] == seq, resp
    return resp.body


def serving(registry) -> ManagedPlugin:
    (plugin,) = [h for h in registry.snapshot().handlers if isinstance(h, ManagedPlugin) and h.name == "vers"]
    return plugin


async def listed_metrics(node):
    (summary,) = (await node.list()).plugins
    return summary.status.metrics


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_latency_percentiles_reflect_the_calls(node, author, modules):
    await install(node, author, modules, "1.0.0")
    registry = node.rec.registry
    assert (await listed_metrics(node)).p50_ms == 0.0  # nothing measured yet
    for seq in range(20):
        await call(registry, seq)
    slow_started = time.perf_counter()
    for seq in range(20, 23):
        await call(registry, seq, hold_ms=250)
    slow_took_ms = (time.perf_counter() - slow_started) * 1000 / 3
    m = await listed_metrics(node)
    assert m.calls == 23 and m.errors == 0 and m.in_flight == 0
    assert 0 < m.p50_ms < 250  # the median is one of the fast calls
    assert 240 <= m.p99_ms <= slow_took_ms + 50  # the tail is a held call (guest clock: whole ms)
    info = await node.info(r.PluginInfo(name="vers"))
    assert info.status.metrics.calls == 23 and info.status.metrics.p99_ms == m.p99_ms


async def test_in_flight_counts_a_held_call_and_returns_to_zero(node, author, modules):
    await install(node, author, modules, "1.0.0")
    registry = node.rec.registry
    held = asyncio.create_task(call(registry, 1, hold_ms=1500))

    async def one_in_flight():
        return (await listed_metrics(node)).in_flight == 1

    await wait_until(one_in_flight)
    quick = await call(registry, 2)  # a second call is not stuck behind it (concurrency 2)
    assert quick["version"] == "1.0.0"
    m = await listed_metrics(node)
    assert m.in_flight == 1 and m.calls == 1  # only the quick call has finished
    assert (await held)["version"] == "1.0.0"
    m = await listed_metrics(node)
    # the guest's clock (aspen_now_ms, whole ms) and the host's timer differ by
    # under a millisecond: the held call must still dominate p99
    assert m.in_flight == 0 and m.calls == 2 and m.p99_ms >= 1490


async def test_replaced_version_drains_then_stops(node, author, modules):
    await install(node, author, modules, "1.0.0")
    registry = node.rec.registry
    old = serving(registry)
    assert old.state is LifecycleState.READY
    held = asyncio.create_task(call(registry, 7, hold_ms=4000))  # under the 5 s call timeout

    async def old_busy():
        return old.metrics.in_flight == 1

    await wait_until(old_busy)
    up = await install(node, author, modules, "2.0.0", upgrade=True)
    assert up.status.version == "2.0.0" and up.status.state == "ready"
    new = serving(registry)
    assert new is not old and new.manifest.version == "2.0.0"
    # the old version no longer takes calls but drains the one it holds
    assert old.state is LifecycleState.STOPPING and old.metrics.in_flight == 1
    assert (await call(registry, 8))["version"] == "2.0.0"
    status = node.rec.status("vers")
    assert status.version == "2.0.0" and status.metrics.in_flight == 0 and status.metrics.calls == 1
    assert not held.done()
    assert (await held)["version"] == "1.0.0"  # finished whole on the version it started on
    await node.rec.drained()
    assert old.state is LifecycleState.STOPPED and old.metrics.in_flight == 0 and old.metrics.calls == 1
    assert new.state is LifecycleState.READY


async def test_info_and_list_show_the_replaced_version_stopping_then_stopped(node, author, modules):
    await install(node, author, modules, "1.0.0")
    registry = node.rec.registry
    old = serving(registry)
    held = asyncio.create_task(call(registry, 7, hold_ms=4000))  # under the 5 s call timeout

    async def old_busy():
        return old.metrics.in_flight == 1

    await wait_until(old_busy)
    await install(node, author, modules, "2.0.0", upgrade=True)
    assert not held.done()
    info = await node.info(r.PluginInfo(name="vers"))
    draining = RetiringVersion(version="1.0.0", generation=1, state="stopping", in_flight=1)
    assert info.status.version == "2.0.0" and info.status.state == "ready"
    assert info.status.retiring == (draining,)
    (published,) = info.nodes  # what other nodes read: written when the swap happened
    assert published.version == "2.0.0" and published.retiring == (draining,)
    (summary,) = (await node.list()).plugins
    assert summary.status.retiring == (draining,)
    assert _status_line(summary.status) == "ready 2.0.0 (+1.0.0 stopping)"
    assert _retiring_line(info.status) == "1.0.0 stopping (1 in flight)"

    assert (await held)["version"] == "1.0.0"
    await node.rec.drained()  # the drain reports the stop before it ends
    info = await node.info(r.PluginInfo(name="vers"))
    assert info.status.version == "2.0.0" and info.status.state == "ready"
    (stopped,) = info.status.retiring
    assert (stopped.version, stopped.generation, stopped.state, stopped.in_flight) == ("1.0.0", 1, "stopped", 0)
    assert stopped.stopped_at_ms > 0
    assert info.nodes[0].retiring == (stopped,)
    assert _status_line(info.status) == "ready 2.0.0" and _retiring_line(info.status) == "1.0.0 stopped"

    # only the last STOPPED_KEPT stopped versions stay listed, most recent first
    for _ in range(STOPPED_KEPT):
        assert (await node.reload("vers")).is_success
    await node.rec.drained()
    retired = node.rec.status("vers").retiring
    assert [(v.version, v.generation, v.state) for v in retired] == [
        ("2.0.0", generation, "stopped") for generation in range(4, 4 - STOPPED_KEPT, -1)
    ]
    # a removed plugin's past versions are forgotten once its last one has stopped
    await node.remove(r.PluginRemove(name="vers"))
    await node.rec.drained()
    assert node.rec.status("vers").retiring == ()
