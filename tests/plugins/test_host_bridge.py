"""How host functions reach the async services from a worker thread: never
from the loop thread (that would deadlock), never past the call deadline."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from aspen.errors import AspenError
from aspen.plugins.gate import PluginGate
from aspen.plugins.host_functions import bytes_arg, put_bytes
from aspen.plugins.loop_bridge import CallContext, HostEnv, run_on_loop


def _env(loop) -> HostEnv:
    return HostEnv(
        PluginGate("p", frozenset(), ("__plugin:p:",)),
        kv=None,
        blobs=None,
        loop=loop,
        loop_thread=threading.get_ident(),
        node_info={},
        signing_key=None,
        max_reply_bytes=1 << 20,
    )


async def test_result_from_worker_thread():
    env = _env(asyncio.get_running_loop())
    ctx = CallContext(env, time.monotonic() + 5)

    async def answer():
        return 42

    assert await asyncio.to_thread(run_on_loop, ctx, answer()) == 42


async def test_refused_on_the_loop_thread():
    env = _env(asyncio.get_running_loop())

    async def never():
        raise AssertionError("must not run")

    with pytest.raises(AspenError) as err:
        run_on_loop(CallContext(env, time.monotonic() + 5), never())
    assert err.value.code == "INTERNAL"


async def test_wait_is_bounded_by_the_deadline():
    env = _env(asyncio.get_running_loop())
    cancelled = asyncio.Event()

    async def slow():
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    start = time.monotonic()
    with pytest.raises(AspenError) as err:
        await asyncio.to_thread(run_on_loop, CallContext(env, time.monotonic() + 0.2), slow())
    assert err.value.code == "TIMEOUT"
    assert time.monotonic() - start < 2
    await asyncio.wait_for(cancelled.wait(), 2)  # the abandoned coroutine is cancelled


async def test_expired_deadline_and_closed_loop():
    env = _env(asyncio.get_running_loop())

    async def nothing():
        return None

    with pytest.raises(AspenError) as err:
        await asyncio.to_thread(run_on_loop, CallContext(env, time.monotonic() - 1), nothing())
    assert err.value.code == "TIMEOUT"
    closed = asyncio.new_event_loop()
    closed.close()
    with pytest.raises(AspenError) as err:
        await asyncio.to_thread(run_on_loop, CallContext(_env(closed), time.monotonic() + 5), nothing())
    assert err.value.code == "UNAVAILABLE"


def test_bytes_encoding_round_trip():
    for data in (b"text", b"\xff\xfe", b""):
        encoded = put_bytes({}, "value", data)
        assert bytes_arg(encoded, "value") == data
    with pytest.raises(AspenError):
        bytes_arg({}, "value")
    assert bytes_arg({}, "expected", required=False) is None
