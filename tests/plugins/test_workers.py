"""The plugin workers: native (calls run without the GIL) where the extension
is built, Python workers otherwise; CI runs this file on both. Answers reach
their own callers, a call that expired or was given up while queued never
runs, an instance that cannot be replaced is the next call's error, and
stopping ends every worker."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from aspen import handoff
from aspen.errors import AspenError, ErrorCode
from aspen.plugins import runtime
from aspen.plugins.manifest import PluginLimits
from aspen.plugins.native_workers import NativeWorkers
from aspen.plugins.python_workers import PythonWorkers
from aspen.plugins.state import LifecycleState
from aspen.rpc.handler import Request, RequestContext


def test_native_workers_are_used_unless_the_fallback_is_asked_for():
    fallback = os.environ.get("ASPEN_HANDOFF") == "python"
    assert handoff.NATIVE_CALLS != fallback
    assert runtime.Workers is (PythonWorkers if fallback else NativeWorkers)


async def test_hundreds_of_overlapping_calls_each_get_their_own_answer(load, kv):
    echo = await load("echo", limits=PluginLimits(concurrency=4))
    await kv.put("__plugin:echo:greeting", b"hello")  # EchoRead makes a host call back to the loop

    async def one(i: int):
        if i % 3:
            return (await echo.handle(Request("Echo", {"message": f"m{i}", "n": i}), RequestContext())).body
        return (await echo.handle(Request("EchoRead", {"key": "greeting"}), RequestContext())).body["value"]

    for wave in range(5):  # 64 at once: within the queue quota of 4 instances (68)
        calls = range(wave * 64, wave * 64 + 64)
        replies = await asyncio.gather(*(one(i) for i in calls))
        assert replies == [{"message": f"m{i}", "n": i} if i % 3 else "hello" for i in calls]
    assert echo.runtime.worker_count == 4 and echo.runtime.pending == 0


async def test_a_call_that_expired_while_queued_never_runs(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=600, concurrency=1))
    blocker = asyncio.create_task(faults.handle(Request("Spin", {}), RequestContext()))
    await asyncio.sleep(0.05)  # the only instance spins for 600 ms
    soon = time.monotonic() + 0.1
    queued = [faults.handle(Request("Spin", {}), RequestContext(deadline=soon)) for _ in range(5)]
    for outcome in await asyncio.gather(*queued, return_exceptions=True):
        assert isinstance(outcome, AspenError) and outcome.code == ErrorCode.TIMEOUT
    start = time.monotonic()
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    assert time.monotonic() - start < 2.0  # five queued spins of 600 ms each would take 3 s
    with pytest.raises(AspenError) as err:
        await blocker
    assert err.value.code == ErrorCode.PLUGIN_TIMEOUT


async def test_a_call_whose_caller_gave_up_while_queued_never_runs(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=1500, concurrency=1))
    blocker = asyncio.create_task(faults.handle(Request("Spin", {}), RequestContext()))
    await asyncio.sleep(0.05)  # the only instance spins for 1.5 s
    given_up = [asyncio.create_task(faults.handle(Request("Spin", {}), RequestContext())) for _ in range(2)]
    await asyncio.sleep(0.05)
    for task in given_up:
        task.cancel()
    with pytest.raises(AspenError):
        await blocker
    start = time.monotonic()
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    assert time.monotonic() - start < 0.8  # a given-up spin that ran would hold the instance 1.5 s more
    assert faults.runtime.pending == 0


async def test_an_instance_that_cannot_be_replaced_is_the_next_calls_error(load, monkeypatch):
    faults = await load("hostile/faults", limits=PluginLimits(concurrency=1))

    def refuse():
        raise AspenError(ErrorCode.PLUGIN_LOAD_FAILED, "plugin 'faults' cannot be instantiated: no memory")

    monkeypatch.setattr(faults.runtime, "new_instance", refuse)
    with pytest.raises(AspenError) as err:
        await faults.handle(Request("Trap", {}), RequestContext())  # the faulted instance is dropped
    assert err.value.code == ErrorCode.PLUGIN_TRAP
    with pytest.raises(AspenError) as err:
        await faults.handle(Request("Fine", {}), RequestContext())
    assert err.value.code == ErrorCode.PLUGIN_LOAD_FAILED and "no memory" in err.value.message
    monkeypatch.undo()
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"


async def test_a_caller_that_gives_up_leaves_the_workers_serving(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=300, concurrency=2))
    echo = await load("echo")
    spins = [asyncio.create_task(faults.handle(Request("Spin", {}), RequestContext())) for _ in range(4)]
    await asyncio.sleep(0.05)
    for task in spins:
        task.cancel()
    assert all(isinstance(o, asyncio.CancelledError) for o in await asyncio.gather(*spins, return_exceptions=True))
    assert (await faults.handle(Request("Fine", {}), RequestContext())).type == "Fine"
    assert (await echo.handle(Request("Echo", {"message": "x", "n": 1}), RequestContext())).body["message"] == "x"
    assert faults.runtime.pending == 0


async def test_stopping_ends_every_worker_and_refuses_later_calls(load):
    faults = await load("hostile/faults", limits=PluginLimits(timeout_ms=400, concurrency=3))
    spins = [asyncio.create_task(faults.handle(Request("Spin", {}), RequestContext())) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert faults.runtime.worker_count == 3
    await asyncio.wait_for(faults.runtime.stop(drain_seconds=5), 10)
    codes = [o.code for o in await asyncio.gather(*spins, return_exceptions=True)]
    assert codes == [ErrorCode.PLUGIN_TIMEOUT] * 3  # drained: each ran to its own time limit
    assert faults.runtime.state is LifecycleState.STOPPED and faults.runtime.worker_count == 0
    with pytest.raises(AspenError) as err:
        await faults.handle(Request("Fine", {}), RequestContext())
    assert err.value.code == ErrorCode.UNAVAILABLE
