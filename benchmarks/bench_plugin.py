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
to a thread, ``call_soon_threadsafe`` back) costs with no WASM in it: the
overhead the runtime's GIL-free hand-off (``aspen.handoff``) avoids.

Run: ``.venv/bin/python benchmarks/bench_plugin.py [--calls N] [--rounds R]``.
Rounds alternate the two sides so load from other processes hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import extism
import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aspen.node.event_loop import run  # noqa: E402
from aspen.plugins.build import build_all  # noqa: E402
from aspen.plugins.extism_bridge import HOST_FUNCTIONS  # noqa: E402
from aspen.plugins.host import PluginHost  # noqa: E402
from aspen.plugins.loop_bridge import CallContext  # noqa: E402
from aspen.plugins.rules import parse_manifest  # noqa: E402
from aspen.rpc.handler import Request, RequestContext  # noqa: E402
from aspen.rpc.registry import HandlerRegistry  # noqa: E402
from aspen.storage.sqlite import SqliteKeyValueStore  # noqa: E402


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


async def throughput(registry, callers: int, calls: int, request: Request = Request("Burn", {})) -> float:
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


async def main(calls: int, rounds: int) -> None:
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
            ours, base = await per_call(registry, echo, echo_req, calls, rounds)
            print(f"echo      registry {ours:8.1f} µs/call   raw Plugin.call {base:8.1f} µs/call   ratio {ours / base:.2f}x (goal <= 1.3x)")
            hop = statistics.median([await bare_handoff(calls) for _ in range(rounds)])
            print(f"context   a plain asyncio loop->thread->loop hand-off alone {hop:8.1f} µs ({hop / base:.2f}x a raw call)")
            piped = statistics.median([await pipelined(registry, echo_req, calls, 8) for _ in range(rounds)])
            print(f"echo      registry, 8 in flight {piped:8.1f} µs/call   ratio to raw {piped / base:.2f}x")
            ours_kv, base_kv = await per_call(registry, echo, Request("EchoRead", {"key": "greeting"}), calls, rounds)
            print(f"kv_get    registry {ours_kv:8.1f} µs/call   raw Plugin.call {base_kv:8.1f} µs/call   ratio {ours_kv / base_kv:.2f}x (goal <= 1.3x)")

            burn_calls = max(40, calls // 10)
            one, two, raw1, raw2 = [], [], [], []
            for _ in range(rounds):
                one.append(await throughput(registry, 1, burn_calls))
                two.append(await throughput(registry, 2, burn_calls))
                raw1.append(await asyncio.to_thread(raw_threads_throughput, 1, burn_calls, burn.runtime.limits))
                raw2.append(await asyncio.to_thread(raw_threads_throughput, 2, burn_calls, burn.runtime.limits))
            t1, t2 = statistics.median(one), statistics.median(two)
            r1, r2 = statistics.median(raw1), statistics.median(raw2)
            print(f"cpu-burn  1 caller {t1:8.1f} calls/s   2 callers {t2:8.1f} calls/s   ratio {t2 / t1:.2f}x (goal >= 1.7x)")
            print(f"cpu-burn  raw Plugin.call, 1 thread {r1:8.1f} calls/s   2 threads {r2:8.1f} calls/s   ratio {r2 / r1:.2f}x (machine ceiling now)")
        finally:
            await host.close()
            await kv.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    run(main(args.calls, args.rounds))  # the node's event loop
