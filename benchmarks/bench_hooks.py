"""Hook delivery latency on a real node over HTTP, against a plain KV watch
of the same writes on the same node, in the same run.

One node process (embedded SQLite, durable writes) with the hook probe
process plugin (tests/hooks/probe: subscribed to ``hooks.kv.>`` on its
prefix; it stamps the wall-clock time its ``on_hook_event`` callback is
entered). A writer in this process makes ``--rate`` writes/s for
``--seconds`` (open loop, each write on its own task) through ``/v1/rpc``;
a separate process follows the same prefix on the node's ``/v1/watch``
(SSE) route and stamps each event as it arrives. Per write:

- hooks: callback entered − write acknowledged (the client knows it is committed);
- watch (baseline): event received − write acknowledged;
- both also from the moment the write was sent, and the write's own round trip.

"After the ack" can be negative: the commit precedes the reply, and an
event may be delivered before the writer has read its reply. Each run
prints p50/p99 of both and their ratio; the summary gives median and range
over ``--runs``, after ``--warmup`` unreported ones. All clocks are the
host's CLOCK_REALTIME.

Run: ``python benchmarks/bench_hooks.py [--rate 1000] [--seconds 3] [--runs 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aspen.client import Client, SyncClient
from tests.hooks.real_nodes import config, install
from tests.hooks.test_plugin_hooks import probe
from tests.node.node_process import NodeProcess

PREFIX = "bh:"
KEYS = 100
MAX_IN_FLIGHT = 64
READY = "ready"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def follow(url: str, prefix: str, start: int, count: int, out) -> None:
    """In its own process: once the stream is live (the first event, the
    run's ``ready`` key), stamp the next ``count`` watch events."""

    async def main() -> None:
        got = []
        async with Client(url) as c:
            async for event in c.watch(prefix, start):
                if event.kv.key == prefix + READY:
                    out.put("ready")
                    continue
                got.append((event.revision, time.time()))
                if len(got) == count:
                    break
        out.put(got)

    asyncio.run(main())


async def write(url: str, token: str, run: int, rate: int, seconds: float) -> list[tuple[int, float, float]]:
    """(revision, sent, acknowledged) per ``WriteKey``, paced at ``rate``, at
    most ``MAX_IN_FLIGHT`` at once. aiohttp, not our httpx client: that costs
    ~1.5 ms of CPU per request here, and could not offer 1 000 writes/s."""
    done: list[tuple[int, float, float]] = []
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    value = base64.b64encode(b"x" * 64).decode()
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def one(i: int) -> None:
            body = json.dumps({"type": "WriteKey", "body": {"key": f"{PREFIX}{run}:{i % KEYS}", "value": value}})
            sent = time.time()
            async with http.post(f"{url}/v1/rpc", data=body) as resp:
                reply = await resp.json()
            done.append((reply["body"]["revision"], sent, time.time()))

        tasks = []
        started = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    return done


def one_run(node: NodeProcess, client: SyncClient, run: int, rate: int, seconds: float, seen: int) -> dict:
    count = int(rate * seconds)
    start = client.get_health().revision + 1
    out = multiprocessing.get_context("spawn").Queue()
    watcher = multiprocessing.get_context("spawn").Process(
        target=follow, args=(node.url, f"{PREFIX}{run}:", start, count, out)
    )
    watcher.start()
    client.write_key(f"{PREFIX}{run}:{READY}", b"")
    assert out.get(timeout=30) == "ready"
    writes = asyncio.run(write(node.url, node.token, run, rate, seconds))
    watched = dict(out.get(timeout=60))
    watcher.join(10)
    deadline = time.monotonic() + 60
    while True:
        events = client.call("BenchProbeEvents", {"from": seen})["events"]
        hooked = {
            e["event"]["revision"]: e["entered"]
            for e in events
            if e["event"]["key"].startswith(f"{PREFIX}{run}:") and not e["event"]["key"].endswith(READY)
        }
        if len(hooked) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(hooked) == count and len(watched) == count, (len(hooked), len(watched), count)
    ms = 1000.0
    return {
        "seen": seen + len(events),
        "achieved": count / (max(a for _, _, a in writes) - min(s for _, s, _ in writes)),
        "rtt": [(a - s) * ms for _, s, a in writes],
        "hook": [(hooked[r] - a) * ms for r, _, a in writes],
        "watch": [(watched[r] - a) * ms for r, _, a in writes],
        "hook_sent": [(hooked[r] - s) * ms for r, s, _ in writes],
        "watch_sent": [(watched[r] - s) * ms for r, s, _ in writes],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1000, help="writes per second")
    parser.add_argument("--seconds", type=float, default=3.0, help="per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="runs first, not reported")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="aspen-bench-hooks-", dir="/tmp"))
    home.chmod(0o711)  # the plugin sandbox's uid reaches its bundle
    os.environ.setdefault("ASPEN_CREDENTIALS", str(home / "credentials.json"))  # where the node's token is found
    node = NodeProcess(home / "data", "--config", config(home, "bench", "hook_queue_events = 100000\n"),
                       "--allow-unsigned-plugins")  # fmt: skip
    try:
        with node, SyncClient(node.url) as client:
            install(node, probe(home, "bench-probe", "BenchProbe", [PREFIX], "hooks.kv.>"), home)
            print(f"load average {os.getloadavg()[0]:.1f}; {args.rate} writes/s for {args.seconds} s per run")
            print(f"{'run':>3} {'writes/s':>8} {'rtt p50/p99':>13} {'hook p50/p99':>13} {'watch p50/p99':>14}"
                  f" {'p50 ratio':>9} {'p99 ratio':>9} {'from send: hook / watch p50':>28}")  # fmt: skip
            results, seen = [], 0
            for run in range(-args.warmup, args.runs):
                res = one_run(node, client, run, args.rate, args.seconds, seen)
                seen = res["seen"]
                if run < 0:
                    continue
                results.append(res)
                h50, h99, w50, w99 = (pct(res[k], p) for k in ("hook", "watch") for p in (0.5, 0.99))
                print(f"{run:>3} {res['achieved']:8.0f} {pct(res['rtt'], 0.5):6.2f}/{pct(res['rtt'], 0.99):<6.2f}"
                      f" {h50:6.2f}/{h99:<6.2f} {w50:6.2f}/{w99:<7.2f} {_ratio(h50, w50):>9} {_ratio(h99, w99):>9}"
                      f" {pct(res['hook_sent'], 0.5):13.2f} / {pct(res['watch_sent'], 0.5):.2f}")  # fmt: skip
            print(
                "\nover the runs, median (range) of each run's figure; hook/watch after the ack, *_sent and rtt from the send:"
            )
            for key in ("hook", "watch", "rtt", "hook_sent", "watch_sent"):
                for p in (0.5, 0.99):
                    _spread(f"{key} p{int(p * 100)} ms", [pct(r[key], p) for r in results])
            for p in (0.5, 0.99):
                _spread(f"hook/watch p{int(p * 100)}", [pct(r["hook"], p) / pct(r["watch"], p) for r in results], "x")
                sent = [pct(r["hook_sent"], p) / pct(r["watch_sent"], p) for r in results]
                _spread(f"hook/watch p{int(p * 100)} from send", sent, "x")
            print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _spread(label: str, values: list[float], unit: str = "") -> None:
    print(f"  {label:<26} {statistics.median(values):7.2f}{unit}  ({min(values):.2f}–{max(values):.2f}{unit})")


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "—"


if __name__ == "__main__":
    main()
