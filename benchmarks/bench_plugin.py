"""WASM plugin overhead and parallelism.

1. Echo dispatched through ``HandlerRegistry`` to the echo plugin, against a
   raw ``extism.Plugin.call`` of the same export with the same payload bytes
   (goal: ≤ 1.3× the raw time per call), sequentially and with 8 requests
   in flight (the loop and the worker threads overlap).
2. The same for a request that makes one ``aspen_kv_get`` (EchoRead against
   a real SQLite store); the raw call gets the same host functions and host
   context, so both pay the same host-function cost.
3. The CPU-bound ``cpu-burn`` plugin: throughput with 2 concurrent callers
   (2 pooled instances on 2 threads) against 1 (goal: ≥ 1.7×), next to the
   same ratio for raw ``Plugin.call`` on 2 threads vs 1 — what the (shared)
   machine allows at that moment.

Everything runs on the node's own event loop (``aspen.node.event_loop``).
For context the bench also prints what a plain asyncio hand-off (``SimpleQueue``
to a thread, ``call_soon_threadsafe`` back) costs with no WASM in it.

Run: ``.venv/bin/python benchmarks/bench_plugin.py [--calls N] [--rounds R] [--processes P]``.
Each figure is measured in P fresh processes (default 5) and reported as the
median with its spread; within a process, rounds alternate the two sides so
load from other processes hits both. Goals on the median: Echo ≤ 1.3×, one
``aspen_kv_get`` ≤ 1.5×, cpu-burn ≥ 1.7×.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import extism
import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aspen.node.event_loop import run
from aspen.plugins.build import build_all
from aspen.plugins.extism_bridge import HOST_FUNCTIONS
from aspen.plugins.host import PluginHost
from aspen.plugins.loop_bridge import CallContext
from aspen.plugins.rules import parse_manifest
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry
from aspen.storage.sqlite import SqliteKeyValueStore


async def load(host: PluginHost, rel: str):
    d = REPO / "plugins" / rel
    return await host.load(parse_manifest((d / "plugin.json").read_bytes()), (d / "plugin.wasm").read_bytes())


async def per_call(registry, handler, request: Request, calls: int, rounds: int) -> tuple[float, float]:
    """Median µs per call: (registry path, raw Plugin.call)."""
    payload = msgspec.json.encode({"type": request.type, "body": request.body, "app": request.app})
    raw = extism.Plugin(extism_manifest("echo", handler.runtime.limits), functions=HOST_FUNCTIONS)
    ctx = CallContext(handler.runtime.env, 0.0)

    def raw_loop() -> float:
        ctx.deadline = time.monotonic() + 3600
        start = time.perf_counter()
        for _ in range(calls):
            raw.call("handle_request", payload, host_context=ctx)
        return (time.perf_counter() - start) / calls * 1e6

    async def registry_loop() -> float:
        rctx = RequestContext(deadline=time.monotonic() + 3600)
        start = time.perf_counter()
        for _ in range(calls):
            reply = await registry.dispatch(request, rctx)
        assert reply.type != "Error", reply
        return (time.perf_counter() - start) / calls * 1e6

    ours, base = [], []
    for _ in range(rounds):
        ours.append(await registry_loop())
        base.append(await asyncio.to_thread(raw_loop))  # off the loop: host functions reach it
    return statistics.median(ours), statistics.median(base)


async def pipelined(registry, request: Request, calls: int, in_flight: int) -> float:
    """µs per call with ``in_flight`` requests outstanding (loop and workers overlap)."""
    start = time.perf_counter()
    await throughput(registry, in_flight, calls, request)
    return (time.perf_counter() - start) / calls * 1e6


BURN = Request("Burn", {})


async def throughput(registry, callers: int, calls: int, request: Request = BURN) -> float:
    rctx = RequestContext(deadline=time.monotonic() + 3600)

    async def caller(n: int) -> None:
        for _ in range(n):
            reply = await registry.dispatch(request, rctx)
            assert reply.type != "Error", reply

    start = time.perf_counter()
    await asyncio.gather(*(caller(calls // callers) for _ in range(callers)))
    return calls / (time.perf_counter() - start)


async def bare_handoff(calls: int) -> float:
    """µs for an empty event loop → worker thread → event loop round trip
    through a plain asyncio hand-off (SimpleQueue + call_soon_threadsafe)."""
    jobs: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while (job := jobs.get()) is not None:
            loop, future = job
            loop.call_soon_threadsafe(future.set_result, None)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for _ in range(calls):
        future = loop.create_future()
        jobs.put((loop, future))
        await future
    elapsed = time.perf_counter() - t0
    jobs.put(None)
    thread.join()
    return elapsed / calls * 1e6


def extism_manifest(rel: str, limits) -> dict:
    """The Extism manifest the runtime builds: same module, same limits."""
    wasm = (REPO / "plugins" / rel / "plugin.wasm").read_bytes()
    return {"wasm": [{"data": wasm}], "timeout_ms": limits.timeout_ms, "memory": {"max_pages": limits.memory_pages}}


def raw_threads_throughput(threads: int, calls: int, limits) -> float:
    """The machine's ceiling right now: raw Plugin.call of cpu-burn on
    ``threads`` threads, one instance each, no Aspen involved."""
    import threading

    plugins = [extism.Plugin(extism_manifest("cpu-burn", limits), functions=HOST_FUNCTIONS) for _ in range(threads)]

    def run(p: extism.Plugin) -> None:
        for _ in range(calls // threads):
            p.call("handle_request", b"{}")

    workers = [threading.Thread(target=run, args=(p,)) for p in plugins]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return calls / (time.perf_counter() - start)


async def measure(calls: int, rounds: int) -> dict[str, float]:
    """Every figure of one process."""
    build_all(REPO)
    with tempfile.TemporaryDirectory() as tmp:
        kv = await SqliteKeyValueStore.open(Path(tmp) / "kv.sqlite", durable=False)
        host = PluginHost(kv=kv)
        try:
            echo = await load(host, "echo")
            burn = await load(host, "cpu-burn")
            registry = HandlerRegistry(host.handlers())
            await kv.put("__plugin:echo:greeting", b"hello")
            echo_req = Request("Echo", {"message": "x" * 64, "n": 1})
            fig: dict[str, float] = {}
            fig["echo_us"], fig["echo_raw_us"] = await per_call(registry, echo, echo_req, calls, rounds)
            fig["handoff_us"] = statistics.median([await bare_handoff(calls) for _ in range(rounds)])
            fig["echo_8_us"] = statistics.median([await pipelined(registry, echo_req, calls, 8) for _ in range(rounds)])
            fig["kv_get_us"], fig["kv_get_raw_us"] = await per_call(
                registry, echo, Request("EchoRead", {"key": "greeting"}), calls, rounds
            )
            burn_calls = max(40, calls // 10)
            one, two, raw1, raw2 = [], [], [], []
            for _ in range(rounds):
                one.append(await throughput(registry, 1, burn_calls))
                two.append(await throughput(registry, 2, burn_calls))
                raw1.append(await asyncio.to_thread(raw_threads_throughput, 1, burn_calls, burn.runtime.limits))
                raw2.append(await asyncio.to_thread(raw_threads_throughput, 2, burn_calls, burn.runtime.limits))
            fig["burn_scaling"] = statistics.median(two) / statistics.median(one)
            fig["burn_raw_scaling"] = statistics.median(raw2) / statistics.median(raw1)
            fig["echo_ratio"] = fig["echo_us"] / fig["echo_raw_us"]
            fig["echo_8_ratio"] = fig["echo_8_us"] / fig["echo_raw_us"]
            fig["kv_get_ratio"] = fig["kv_get_us"] / fig["kv_get_raw_us"]
            return fig
        finally:
            await host.close()
            await kv.close()


LINES = [  # (figure, label, unit, goal)
    ("echo_us", "echo      registry", "µs/call", None),
    ("echo_raw_us", "echo      raw Plugin.call", "µs/call", None),
    ("echo_ratio", "echo      ratio registry/raw", "x", "<= 1.3x"),
    ("echo_8_ratio", "echo      8 in flight, ratio to raw", "x", None),
    ("handoff_us", "context   plain loop->thread->loop hand-off alone", "µs", None),
    ("kv_get_us", "kv_get    registry", "µs/call", None),
    ("kv_get_raw_us", "kv_get    raw Plugin.call", "µs/call", None),
    ("kv_get_ratio", "kv_get    ratio registry/raw", "x", "<= 1.5x"),
    ("burn_scaling", "cpu-burn  2 callers / 1", "x", ">= 1.7x"),
    ("burn_raw_scaling", "cpu-burn  raw 2 threads / 1 (machine ceiling now)", "x", None),
]


def main(calls: int, rounds: int, processes: int) -> None:
    """Each process is fresh: a figure's spread across processes shows what one run cannot."""
    runs = []
    for _ in range(processes):
        out = subprocess.run(
            [sys.executable, __file__, "--calls", str(calls), "--rounds", str(rounds), "--one-process"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        runs.append(json.loads(out.splitlines()[-1]))
    print(f"bench_plugin: {processes} fresh processes, {calls} calls x {rounds} rounds each; median (min-max)")
    for key, label, unit, goal in LINES:
        values = sorted(r[key] for r in runs)
        print(f"{label:<52} {statistics.median(values):8.2f} {unit:<8} ({values[0]:.2f}-{values[-1]:.2f})"
              + (f"  goal {goal}" if goal else ""))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--one-process", action="store_true", help="measure here and print the figures as JSON")
    args = parser.parse_args()
    if args.one_process:
        print(json.dumps(run(measure(args.calls, args.rounds))))  # the node's event loop
    else:
        main(args.calls, args.rounds, args.processes)
