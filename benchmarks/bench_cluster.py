"""End-to-end WriteKey/ReadKey over RPC on a local 3-node Aspen cluster on a
3-member etcd cluster (``aspen.cluster.dev_cluster``), against etcd's own
HTTP/JSON gateway (``/v3/kv/put``, ``/v3/kv/range``) on the same etcd
cluster in the same run.

    .venv/bin/python benchmarks/bench_cluster.py [--duration 5] [--connections 30] [--rounds 2]

Load: ``wrk`` (C), one process per target, connections split evenly over
the three Aspen nodes or the three etcd members, JSON bodies, 100-byte
values. Baseline "etcd-gateway": the same request straight to etcd's
grpc-gateway (HTTP/JSON → etcd), so the ratio is the price of an Aspen node
in the path (HTTP → envelope → handler → EtcdKeyValueStore → gRPC → etcd).
Everything (wrk, 3 nodes, 3 etcd members) shares the machine's cores.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aspen.cluster.dev_cluster import DevCluster

VALUE = b"v" * 100


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


REQUESTS = {
    "aspen-3-nodes": {
        "write": ("/v1/rpc", {"type": "WriteKey", "body": {"key": "bench/w", "value": b64(VALUE)}}),
        "read": ("/v1/rpc", {"type": "ReadKey", "body": {"key": "bench/r"}}),
    },
    "etcd-gateway": {
        "write": ("/v3/kv/put", {"key": b64(b"bench/w"), "value": b64(VALUE)}),
        "read": ("/v3/kv/range", {"key": b64(b"bench/r")}),
    },
}


def wrk_many(
    urls: list[str], path: str, body: dict, connections: int, duration: int, work: Path
) -> tuple[float, float]:
    """Run one wrk per URL at once; total req/s and the worst p99 (ms)."""
    script = work / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{json.dumps(body)}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    per = max(1, connections // len(urls))
    procs = [
        subprocess.Popen(
            ["wrk", "-t1", f"-c{per}", f"-d{duration}s", "--latency", "-s", str(script), url + path],
            stdout=subprocess.PIPE,
            text=True,
        )
        for url in urls
    ]
    total, p99 = 0.0, 0.0
    for p in procs:
        out, _ = p.communicate()
        if "Non-2xx" in out or "Socket errors" in out:
            raise SystemExit(f"wrk saw errors:\n{out}")
        total += float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
        p99 = max(p99, float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)])
    return total, p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2, help="alternate targets; the best round counts")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    base = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    dev = DevCluster(base, nodes=3).start()
    try:
        targets = {"aspen-3-nodes": dev.urls, "etcd-gateway": [m.client_url for m in dev.etcd.members]}
        seed = json.dumps({"key": b64(b"bench/r"), "value": b64(VALUE)}).encode()
        urllib.request.urlopen(targets["etcd-gateway"][0] + "/v3/kv/put", data=seed, timeout=10).read()
        best: dict[tuple[str, str], tuple[float, float]] = {}
        for _ in range(args.rounds):
            for op in ("write", "read"):
                for name, urls in targets.items():
                    path, body = REQUESTS[name][op]
                    got = wrk_many(urls, path, body, args.connections, args.duration, base)
                    if got[0] > best.get((name, op), (0.0, 0.0))[0]:
                        best[(name, op)] = got
    finally:
        dev.stop()
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'op':<8}{'etcd-gateway req/s':>20}{'p99 ms':>9}{'aspen-3-nodes req/s':>21}{'p99 ms':>9}{'aspen/etcd':>12}")
    for op in ("write", "read"):
        (r, rp), (a, ap) = best[("etcd-gateway", op)], best[("aspen-3-nodes", op)]
        print(f"{op:<8}{r:>20,.0f}{rp:>9.1f}{a:>21,.0f}{ap:>9.1f}{a / r:>11.2f}x")
    print(f"(wrk, {args.connections} connections over 3 targets, {args.duration} s, best of {args.rounds})")


if __name__ == "__main__":
    main()
