"""Starting, calling, restarting and stopping real plugin processes."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError
from aspen.plugins.process.supervisor import RestartPolicy, State
from tests.plugins.process.conftest import FAST, alive, open_pipes, until


async def test_handshake_and_echo_round_trip(launch, kv):
    echo = await launch("echo")
    assert echo.state is State.RUNNING and echo.info()["pid"]
    assert await echo.request("Ping", {}) == {"type": "Pong", "body": {}}
    assert await echo.request("Echo", {"a": [1, "two"]}) == {"type": "Echo", "body": {"a": [1, "two"]}}
    # One host call: a KV read in its own namespace, through the gate.
    await kv.put("__plugin:echo-process:greeting", b"hello")
    got = await echo.request("EchoRead", {"key": "greeting"})
    assert got["body"] == {"key": "__plugin:echo-process:greeting", "value": "hello"}
    with pytest.raises(AspenError) as unknown:
        await echo.request("Nope", {})
    assert unknown.value.code == "UNHANDLED"


async def test_many_calls_in_flight(launch):
    hostile = await launch()
    hang = asyncio.ensure_future(hostile.request("Hang", {}, timeout=3.0))
    replies = await asyncio.gather(*(hostile.request("Echo", {"n": i}) for i in range(200)))
    assert [r["body"]["n"] for r in replies] == list(range(200))  # each answer reached its own caller
    assert not hang.done()  # a call in flight does not hold the others up
    hang.cancel()


async def test_handshake_refuses_a_plugin_that_contradicts_its_manifest(launch):
    sup, tag = launch.make(env={"HOSTILE_NAME": "impostor"})
    with pytest.raises(AspenError) as exc:
        await sup.start()
    assert exc.value.code == "PLUGIN_LOAD_FAILED" and "name mismatch" in exc.value.message
    assert sup.state is State.FAILED and sup.restarts == 0  # a restart cannot fix it
    await until(lambda: alive(tag) == [], what="the impostor to be gone")


async def test_a_crashing_plugin_is_restarted_and_the_caller_gets_an_error(launch):
    hostile = await launch()
    first = hostile.info()["pid"]
    with pytest.raises(AspenError) as exc:
        await hostile.request("Crash", {})
    assert exc.value.code == "PLUGIN_TRAP"
    # Calls made while it restarts wait for the new process.
    assert (await hostile.request("Echo", {"after": 1}, timeout=20))["body"] == {"after": 1}
    assert hostile.restarts == 1 and hostile.info()["pid"] != first


async def test_a_hung_call_times_out_and_a_plugin_ignoring_deadlines_is_restarted(launch):
    hostile = await launch()
    first = hostile.info()["pid"]
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AspenError) as exc:
        await hostile.request("Hang", {}, timeout=0.5)
    assert exc.value.code == "PLUGIN_TIMEOUT"
    assert 0.45 <= loop.time() - started < 1.5  # at its deadline, not later
    await until(lambda: hostile.restarts == 1 and hostile.state is State.RUNNING, what="the restart")
    assert "past its deadline" in hostile.last_error and hostile.info()["pid"] != first
    assert (await hostile.request("Echo", {}))["type"] == "Echo"


async def test_a_crash_loop_ends_failed_with_the_last_stderr_lines(launch):
    policy = RestartPolicy(max_failures=3, window=60, backoff_base=0.01, stderr_lines=10, startup_timeout=20)
    sup, tag = launch.make(env={"HOSTILE_START": "crash"}, policy=policy)
    with pytest.raises(AspenError) as exc:
        await sup.start()
    assert exc.value.code == "PLUGIN_FAILED"
    info = sup.info()
    assert info["state"] == "failed" and info["restarts"] == 3
    assert info["stderr"] == [f"dying line {i}" for i in range(70, 80)]  # the last ones, bounded
    assert exc.value.details["stderr"] == info["stderr"]
    with pytest.raises(AspenError) as later:
        await sup.request("Echo", {})
    assert later.value.code == "PLUGIN_FAILED"
    assert alive(tag) == []


async def test_an_oversized_line_fails_only_its_call(launch):
    hostile = await launch()
    others = [asyncio.ensure_future(hostile.request("Echo", {"n": i})) for i in range(20)]
    with pytest.raises(AspenError) as exc:
        await hostile.request("Huge", {"bytes": 5 << 20})
    assert exc.value.code == "PLUGIN_BAD_OUTPUT" and "limit" in exc.value.message
    assert [r["body"]["n"] for r in await asyncio.gather(*others)] == list(range(20))
    assert hostile.restarts == 0 and (await hostile.request("Echo", {"still": True}))["body"] == {"still": True}


async def test_malformed_json_fails_only_its_call(launch):
    hostile = await launch()
    with pytest.raises(AspenError) as exc:
        await hostile.request("Garbage", {})
    assert exc.value.code == "PLUGIN_BAD_OUTPUT"
    assert hostile.restarts == 0 and (await hostile.request("Echo", {}))["type"] == "Echo"


async def test_a_reply_that_is_not_type_and_body_is_bad_output(launch):
    hostile = await launch()
    for body in ({"type": 5}, {"type": ""}, {"type": "X", "body": [1]}):
        with pytest.raises(AspenError) as exc:
            await hostile.request("BadShape", body)
        assert exc.value.code == "PLUGIN_BAD_OUTPUT", body
    assert (await hostile.request("BadShape", {"type": "Fine"}))["type"] == "Fine"


async def test_a_flooding_plugin_is_restarted(launch):
    hostile = await launch()
    with pytest.raises(AspenError) as exc:
        await hostile.request("Flood", {"lines": 100_000}, timeout=10)
    assert exc.value.code in ("PLUGIN_TRAP", "PLUGIN_TIMEOUT")
    await until(lambda: hostile.restarts == 1 and hostile.state is State.RUNNING, what="the restart")
    assert "bad lines" in hostile.last_error or "bytes" in hostile.last_error
    assert (await hostile.request("Echo", {}))["type"] == "Echo"


async def test_stderr_is_the_log(launch):
    hostile = await launch()
    await hostile.request("Stderr", {"text": "a line for the log"})
    await until(lambda: "a line for the log" in hostile.info()["stderr"], what="the stderr line")


async def test_graceful_stop_leaves_no_process_or_pipe(launch):
    pipes = open_pipes()
    sup, tag = launch.make("echo", policy=FAST)
    await sup.start()
    assert alive(tag)
    await sup.stop()
    assert sup.state is State.STOPPED and alive(tag) == []
    assert open_pipes() == pipes
    with pytest.raises(AspenError) as exc:
        await sup.request("Echo", {})
    assert exc.value.code == "UNAVAILABLE"


async def test_stop_of_a_plugin_ignoring_shutdown_kills_it(launch):
    policy = RestartPolicy(stop_grace=0.3, health_interval=0, startup_timeout=20)
    sup, tag = launch.make(env={"HOSTILE_SHUTDOWN": "ignore"}, policy=policy)
    await sup.start()
    loop = asyncio.get_running_loop()
    started = loop.time()
    await sup.stop()
    assert loop.time() - started < 3.0 and alive(tag) == []


async def test_an_unhealthy_plugin_is_restarted(launch):
    policy = RestartPolicy(health_interval=0.1, health_timeout=1.0, backoff_base=0.05, startup_timeout=20)
    hostile = await launch(env={"HOSTILE_HEALTH": "bad"}, policy=policy)
    await until(lambda: hostile.restarts >= 1, what="a restart")
    assert "unhealthy" in hostile.last_error


async def test_without_bubblewrap_the_plugin_fails_at_once(launch, sandbox):
    sup, _ = launch.make()
    sandbox.bwrap = None  # as on a node without the package
    with pytest.raises(AspenError) as exc:
        await sup.start()
    assert exc.value.code == "EXECUTOR_UNAVAILABLE" and sup.state is State.FAILED and sup.restarts == 0


async def test_a_bug_in_supervision_fails_the_plugin_instead_of_hanging(launch, monkeypatch):
    sup, _ = launch.make()

    async def broken(run):
        raise RuntimeError("a bug")

    monkeypatch.setattr(sup, "_spawn", broken)
    with pytest.raises(AspenError) as exc:
        await asyncio.wait_for(sup.start(), 10)
    assert exc.value.code == "INTERNAL" and sup.state is State.FAILED
