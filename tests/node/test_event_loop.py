"""The node's event loop stays an ordinary asyncio loop while it spins for
plugin calls: timers fire, sockets are read, other threads reach it."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from aspen import handoff
from aspen.node.event_loop import AspenEventLoop, run


@pytest.fixture
def calls_in_flight():
    """Pretend a plugin call is out on a worker, so the loop spins."""
    handoff.IN_FLIGHT.calls += 1
    yield
    handoff.IN_FLIGHT.calls -= 1


async def test_the_tests_run_on_the_node_loop():
    assert isinstance(asyncio.get_running_loop(), AspenEventLoop)


async def test_call_soon_threadsafe_ends_a_spin(calls_in_flight):
    loop = asyncio.get_running_loop()
    before = handoff.LOOP_ATTENTION.value()
    done = loop.create_future()
    threading.Timer(0.02, loop.call_soon_threadsafe, (done.set_result, "from a thread")).start()
    assert await asyncio.wait_for(done, 5) == "from a thread"
    # the thread bumps after it queued the callback, which may already have run: poll for the bump
    deadline = time.monotonic() + 5
    while handoff.LOOP_ATTENTION.value() == before:
        assert time.monotonic() < deadline, "call_soon_threadsafe never bumped LOOP_ATTENTION"
        await asyncio.sleep(0.005)


async def test_timers_and_sockets_work_while_spinning(calls_in_flight):
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    await asyncio.sleep(0.05)
    assert 0.04 <= time.monotonic() - start < 1.0

    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        got = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(16)))
        threading.Timer(0.02, b.send, (b"ping",)).start()  # no call_soon_threadsafe: only the fd says so
        assert await asyncio.wait_for(got, 5) == b"ping"
        loop.remove_reader(a.fileno())
    finally:
        a.close()
        b.close()


def test_run_returns_the_result_and_closes_its_loop():
    loops = []

    async def main():
        loops.append(asyncio.get_running_loop())
        return 42

    assert run(main()) == 42
    assert isinstance(loops[0], AspenEventLoop) and loops[0].is_closed()
