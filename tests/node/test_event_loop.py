"""The node's event loop: uvloop when installed, asyncio's own otherwise;
the tests run on the same loop the node serves on."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from aspen.node import event_loop
from aspen.node.event_loop import run


def node_loop_type() -> type:
    loop = event_loop.new_event_loop()
    try:
        return type(loop)
    finally:
        loop.close()


def test_uvloop_is_the_node_loop_when_installed():
    try:
        import uvloop
    except ImportError:
        assert issubclass(node_loop_type(), asyncio.BaseEventLoop)
    else:
        assert issubclass(node_loop_type(), uvloop.Loop)


async def test_the_tests_run_on_the_node_loop():
    assert isinstance(asyncio.get_running_loop(), node_loop_type())


async def test_timers_sockets_and_other_threads_reach_the_loop():
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    await asyncio.sleep(0.05)
    assert 0.04 <= time.monotonic() - start < 1.0

    done = loop.create_future()
    threading.Timer(0.02, loop.call_soon_threadsafe, (done.set_result, "from a thread")).start()
    assert await asyncio.wait_for(done, 5) == "from a thread"

    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        got = loop.create_future()
        loop.add_reader(a.fileno(), lambda: got.done() or got.set_result(a.recv(16)))
        threading.Timer(0.02, b.send, (b"ping",)).start()
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
    assert isinstance(loops[0], node_loop_type()) and loops[0].is_closed()
