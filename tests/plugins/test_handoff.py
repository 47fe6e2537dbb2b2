"""The loop <-> worker hand-off: both EventCount implementations (native
and plain) behave alike, and plugin calls give their answers, faults and
deadlines through it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from aspen import handoff
from aspen.errors import AspenError
from aspen.handoff import plain
from aspen.plugins.lifecycle import ManagedPlugin
from aspen.plugins.manifest import PluginLimits
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry

MS = 1_000_000  # ns


IMPLEMENTATIONS = {"python": plain.EventCount, **({"native": handoff.EventCount} if handoff.NATIVE else {})}


def test_the_extension_is_built_unless_the_fallback_is_asked_for():
    assert handoff.NATIVE != (os.environ.get("ASPEN_HANDOFF") == "python")


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def EventCount(request):
    """Both implementations behave alike: the C one, and the fallback a node uses without it."""
    return IMPLEMENTATIONS[request.param]


def test_eventcount_counts_and_waits(EventCount):
    ec = EventCount()
    assert ec.value() == 0
    assert ec.wait(0, 0) is False  # nothing moved: a zero timeout returns at once
    ec.bump()
    ec.bump()
    assert ec.value() == 2
    assert ec.wait(0, 10 * MS) is True  # already moved: no waiting
    start = time.monotonic()
    assert ec.wait(2, 30 * MS) is False
    assert 0.025 <= time.monotonic() - start < 1.0  # parked, gave up


def test_a_parked_waiter_is_woken_by_a_bump_from_another_thread(EventCount):
    ec, other = EventCount(), EventCount()
    result: list[bool] = []

    def waiter() -> None:
        result.append(ec.wait(0, 10_000 * MS))  # parks for up to 10 s

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.05)
    start = time.monotonic()
    other.bump()  # another count: the waiter sleeps on
    time.sleep(0.05)
    assert other.value() == 1 and not result
    ec.bump()
    t.join(5)
    assert result == [True]
    assert time.monotonic() - start < 1.0


def test_eventcount_takes_no_arguments_and_a_whole_timeout(EventCount):
    with pytest.raises(TypeError):
        EventCount(1)
    with pytest.raises(TypeError):
        EventCount().wait(0, "soon")


async def test_answers_faults_and_host_calls_come_back(load, kv):
    echo = await load("echo")
    faults = await load("hostile/faults")
    reply = await echo.handle(Request("Echo", {"message": "hi", "n": 3}), RequestContext())
    assert reply.body == {"message": "hi", "n": 3}
    for rtype, code in (("Trap", "PLUGIN_TRAP"), ("NotJson", "PLUGIN_BAD_OUTPUT")):
        with pytest.raises(AspenError) as err:
            await faults.handle(Request(rtype, {}), RequestContext())
        assert err.value.code == code
    assert faults.runtime.faults == 2
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    await kv.put("__plugin:echo:greeting", b"hello")  # aspen_kv_get: worker -> loop -> worker
    for _ in range(3):
        reply = await echo.handle(Request("EchoRead", {"key": "greeting"}), RequestContext())
        assert reply.body["value"] == "hello"


async def test_the_request_deadline_holds_without_the_registry_timer(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=2000))
    registry = HandlerRegistry([faults])
    start = time.monotonic()
    reply = await registry.dispatch(Request("Spin", {}), RequestContext(deadline=time.monotonic() + 0.3))
    assert reply.type == "Error" and reply.body["code"] == "TIMEOUT"
    assert time.monotonic() - start < 2.0


async def test_a_served_plugin_is_timed_by_its_runtime_alone(load):
    """What the reconciler registers (ManagedPlugin) keeps the handler's own
    deadline: the registry sets no second timer, and TIMEOUT is the runtime's."""
    faults = ManagedPlugin(await load("hostile/faults", limits=PluginLimits(timeout_ms=2000)), 1)
    registry = HandlerRegistry([faults])
    assert registry.snapshot().untimed["Spin"] is faults
    reply = await registry.dispatch(Request("Spin", {}), RequestContext(deadline=time.monotonic() + 0.3))
    assert reply.body["code"] == "TIMEOUT" and "plugin 'faults' handle_request" in reply.body["message"]


def test_extism_helper_threads_never_preempt_a_guest(built):
    """Extism's own threads (its timer among them) run SCHED_BATCH: they keep
    their CPU share, so timeouts fire (test_faults), but never preempt a
    running guest on wake-up. Checked in a fresh process, where every native
    thread is Extism's."""
    script = f"""
import asyncio, os
from aspen.plugins.host import PluginHost
from aspen.plugins.runtime import _native_threads
from aspen.storage.sqlite import SqliteKeyValueStore

async def main(tmp):
    kv = await SqliteKeyValueStore.open(tmp + "/kv", durable=False)
    host = PluginHost(kv=kv)
    await host.load_files({str(built / "echo" / "plugin.json")!r}, {str(built / "echo" / "plugin.wasm")!r})
    threads = _native_threads()
    print(len(threads), sorted({{os.sched_getscheduler(t) for t in threads}}))
    await host.close()
    await kv.close()

import tempfile
with tempfile.TemporaryDirectory() as tmp:
    asyncio.run(main(tmp))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    count, policies = out.stdout.split(" ", 1)
    assert int(count) >= 1
    assert policies.strip() == f"[{os.SCHED_BATCH}]"
