"""bench_proxy: Echo answered by the echo plugin on cluster C, sent to C
directly and sent to cluster A, which has no echo and forwards it through
one proxy hop (ProxyService), measured in the same run. Two single-node
clusters on loopback, real processes, real tokens.

    python benchmarks/bench_proxy.py [--connections 16] [--duration 5] [--rounds 2]

Each round also prints the CPU ms per request that A, C and the load generator
spent: on a shared machine that is steadier than req/s.

Goal (issue 15): through the proxy ≥ 0.5× the direct throughput, added p50
latency ≤ 2 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aspen.client import SyncClient
from tests.federation.conftest import cluster, install_echo
from tests.node.node_process import free_port

BODY = b'{"type":"Echo","body":{"msg":"hello"},"proxy_hops":0}'


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(url: str, token: str, connections: int, duration: float, pids: dict[str, int]) -> tuple:
    """``load``'s figures and the CPU ms per request each process spent (robust to a busy
    machine, unlike req/s): the node processes by name, and this load generator."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    own = time.process_time()
    rps, p50, p99, n = asyncio.run(load(url, token, connections, duration))
    cpu = {name: (cpu_seconds(pid) - before[name]) * 1000 / n for name, pid in pids.items()}
    cpu["client"] = (time.process_time() - own) * 1000 / n
    return rps, p50, p99, cpu


def show(cpu: dict[str, float]) -> str:
    return " ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())


async def load(url: str, token: str, connections: int, duration: float) -> tuple[float, float, float, int]:
    """Requests/s, p50 and p99 latency (ms) with ``connections`` concurrent loops; requests."""
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as http:
        stop = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < stop:
                t = time.perf_counter()
                resp = await http.post(f"{url}/v1/rpc", content=BODY, headers=headers)
                if resp.status_code != 200 or b'"Echo"' not in resp.content:
                    raise RuntimeError(f"bad answer: {resp.status_code} {resp.content[:200]!r}")
                latencies.append(time.perf_counter() - t)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return n / elapsed, latencies[n // 2] * 1000, latencies[int(n * 0.99)] * 1000, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-proxy-"))
    pa, pc = free_port(), free_port()
    a = cluster(root, "a", f'peers = ["http://127.0.0.1:{pc}"]\n[federation.proxy]\nenabled = true\n', port=pa)
    c = cluster(root, "c", f'peers = ["http://127.0.0.1:{pa}"]\n', port=pc)
    with a, c, SyncClient(a.url) as ca, SyncClient(c.url) as cc:
        key = lambda client: client.call("ClusterIdentity", {})["identity"]["document"]["cluster_key"]
        ca.call("TrustCluster", {"cluster_key": key(cc)})
        cc.call("TrustCluster", {"cluster_key": key(ca)})
        install_echo(cc)
        deadline = time.monotonic() + 30
        while not any(p["apps"] for p in ca.call("FederationPeers", {})["peers"]):
            if time.monotonic() > deadline:
                raise SystemExit("C's echo never reached A")
            ca.call("FederationRefresh", {})
            time.sleep(0.2)
        right = [{"operation": "plugin:call", "resource": "echo"}]
        direct_token = cc.call("TokenCreate", {"subject": "bench", "rights": right})["token"]
        proxy_token = ca.call("TokenCreate", {"subject": "bench", "rights": right})["token"]
        asyncio.run(load(c.url, direct_token, 4, 1.0))  # warm both paths
        asyncio.run(load(a.url, proxy_token, 4, 1.0))
        rows = []
        print(f"connections {args.connections}, {args.duration:g} s a side, load average {os.getloadavg()[0]:.1f}")
        pids = {"A": a.proc.pid, "C": c.proc.pid}
        for _ in range(args.rounds):
            direct = measured(c.url, direct_token, args.connections, args.duration, pids)
            proxied = measured(a.url, proxy_token, args.connections, args.duration, pids)
            rows.append((direct, proxied))
            print(
                f"direct {direct[0]:8.0f} req/s p50 {direct[1]:6.2f} ms p99 {direct[2]:6.2f} ms | "
                f"proxied {proxied[0]:8.0f} req/s p50 {proxied[1]:6.2f} ms p99 {proxied[2]:6.2f} ms | "
                f"ratio {proxied[0] / direct[0]:.2f}x, added p50 {proxied[1] - direct[1]:+.2f} ms | "
                f"load {os.getloadavg()[0]:.1f}\n"
                f"    CPU ms/request: direct {show(direct[3])} | proxied {show(proxied[3])}"
            )
        ratio = statistics.median(p[0] / d[0] for d, p in rows)
        added = statistics.median(p[1] - d[1] for d, p in rows)
        ratios = sorted(p[0] / d[0] for d, p in rows)
        print(
            f"median: throughput {ratio:.2f}x (goal >= 0.5x; spread {ratios[0]:.2f}-{ratios[-1]:.2f}), "
            f"added p50 {added:+.2f} ms (goal <= 2 ms)"
        )


if __name__ == "__main__":
    main()
