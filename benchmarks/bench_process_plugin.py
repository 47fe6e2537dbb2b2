"""Process-plugin overhead: Echo through the node's side of the protocol
against a raw JSON-RPC round trip to the same process over its pipes.

"ours": ``ProcessSupervisor.request("Echo", body)`` — params encoded, a
:class:`~aspen.plugins.process.connection.Peer` call with its id, deadline
timer and bounded line reader, the reply decoded and checked.
"raw": the same request line, prebuilt, written to the same process's stdin
and the answer waited for as bytes up to its newline: the pipes, the plugin
(``plugins/echo-process`` on the Python SDK, in the job sandbox) and nothing
of ours. Goal: ours ≤ 1.5× raw per call. Also printed: the node process's
CPU time per call on each side (less sensitive to a busy machine). Sequential calls, then 8 in flight
(raw: windows of 8 lines). Rounds alternate the sides.

Run: ``python benchmarks/bench_process_plugin.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import sysconfig
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aspen.jobs.sandbox import Sandbox
from aspen.node.event_loop import run
from aspen.plugins.process.protocol import encode_request, raw
from aspen.plugins.process.supervisor import ProcessSpec, ProcessSupervisor, RestartPolicy

BODY = {"msg": "hello", "n": 42}


async def ours(sup: ProcessSupervisor, calls: int, in_flight: int) -> tuple[float, float]:
    async def worker(n: int) -> None:
        for _ in range(n):
            await sup.request("Echo", BODY, timeout=10)

    start, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker(calls // in_flight) for _ in range(in_flight)))
    return (time.perf_counter() - start) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6


async def bare(sup: ProcessSupervisor, calls: int, in_flight: int) -> tuple[float, float]:
    """The same process, its stdout read here instead of by the peer."""
    proc = sup._run  # the benchmark borrows the live process's pipes
    assert proc is not None and proc.transport is not None
    stdin = proc.transport.get_pipe_transport(0)
    line = encode_request(1 << 40, "handle_request", raw({"type": "Echo", "body": BODY, "app": None,
                                                          "caller": None, "deadline_ms": 10000}))  # fmt: skip
    loop = asyncio.get_running_loop()
    state = {"want": 0, "fut": None}

    def feed(data: bytes) -> None:
        state["want"] -= data.count(b"\n")
        if state["want"] <= 0 and not state["fut"].done():
            state["fut"].set_result(None)

    real_feed, proc.peer.feed = proc.peer.feed, feed
    try:
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls // in_flight):
            state["want"], state["fut"] = in_flight, loop.create_future()
            stdin.write(line * in_flight)
            await state["fut"]
        return (time.perf_counter() - start) / calls * 1e6, (time.process_time() - cpu) / calls * 1e6
    finally:
        proc.peer.feed = real_feed


async def main(calls: int, rounds: int) -> None:
    site = sysconfig.get_paths()["purelib"]
    spec = ProcessSpec("echo-process", ("Ping", "Echo", "EchoRead"), ("/usr/bin/python3", "plugin.py"),
                       str(REPO / "plugins" / "echo-process"), env={"PYTHONPATH": f"{REPO}:{site}"})  # fmt: skip

    async def no_host_calls(method, params):
        raise RuntimeError("echo makes none")

    sup = ProcessSupervisor(spec, no_host_calls, sandbox=Sandbox("required", ro_binds=[str(REPO), site]),
                            policy=RestartPolicy(health_interval=0))  # fmt: skip
    await sup.start()
    try:
        for _ in range(2):  # warm up both paths
            await ours(sup, 200, 1)
            await bare(sup, 200, 1)
        for in_flight in (1, 8):
            a, b, cpu_a, cpu_b = [], [], [], []
            for _ in range(rounds):
                (wall, cpu) = await ours(sup, calls, in_flight)
                a.append(wall), cpu_a.append(cpu)
                (wall, cpu) = await bare(sup, calls, in_flight)
                b.append(wall), cpu_b.append(cpu)
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            print(
                f"Echo, {in_flight} in flight: ours {statistics.median(a):.1f} µs/call "
                f"({min(a):.1f}–{max(a):.1f}), raw {statistics.median(b):.1f} µs/call ({min(b):.1f}–{max(b):.1f}), "
                f"ratio median {statistics.median(ratios):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)}); "
                f"node CPU µs/call ours {statistics.median(cpu_a):.1f}, raw {statistics.median(cpu_b):.1f}"
            )
    finally:
        await sup.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(main(args.calls, args.rounds))
