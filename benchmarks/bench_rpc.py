"""bench_rpc: Ping and ReadKey requests per second against one Aspen node,
load from wrk, against a bare Starlette endpoint that returns the same JSON
bytes under the same uvicorn settings, measured in the same run.

    .venv/bin/python benchmarks/bench_rpc.py [--connections 32] [--duration 10] [--rounds 2]

Prints requests/s, p50/p99 latency, and node/baseline ratios (goal >= 0.7x).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx

VENV_BIN = Path(sys.executable).parent
SERVER_SETTINGS = dict(log_level="warning", access_log=False, lifespan="off")  # node's uvicorn.Config too

BASELINE = textwrap.dedent(
    """
    import sys, uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    answers = {{b"Ping": {pong!r}, b"ReadKey": {read!r}}}

    async def rpc(request: Request) -> Response:
        body = await request.body()
        answer = answers[b"ReadKey" if b"ReadKey" in body else b"Ping"]
        return Response(answer, media_type="application/json")

    app = Starlette(routes=[Route("/v1/rpc", rpc, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), **{settings!r})
    """
)


JSON_HEADERS = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.post(f"{url}/v1/rpc", json={"type": "Ping"}, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wrk(url: str, body: bytes, connections: int, duration: int, workdir: Path) -> tuple[float, float, float]:
    script = workdir / "post.lua"
    script.write_text(
        f'wrk.method = "POST"\nwrk.body = [[{body.decode()}]]\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), f"{url}/v1/rpc"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    if "Non-2xx" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rps, _latency_ms(out, "50%"), _latency_ms(out, "99%")


def _latency_ms(out: str, pct: str) -> float:
    value, unit = re.search(rf"^\s+{pct}\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternate node/baseline this many times; best run counts")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    work = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    node_port, base_port = free_port(), free_port()
    node_url, base_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{base_port}"
    procs = []
    try:
        node = subprocess.Popen(
            [VENV_BIN / "aspen", "node", "start", "--data-dir", str(work / "data"),
             "--listen", f"127.0.0.1:{node_port}", "--log-level", "warning"],
        )  # fmt: skip
        procs.append(node)
        wait_up(node_url, node)
        value = "x" * 100
        httpx.post(f"{node_url}/v1/rpc", json={"type": "WriteKey", "body": {"key": "bench/key", "value": value}})
        requests = {
            "Ping": b'{"type":"Ping","body":{}}',
            "ReadKey": b'{"type":"ReadKey","body":{"key":"bench/key"}}',
        }
        answers = {name: httpx.post(f"{node_url}/v1/rpc", content=body, headers=JSON_HEADERS).content for name, body in requests.items()}
        assert b'"Error"' not in answers["ReadKey"], answers
        (work / "baseline.py").write_text(
            BASELINE.format(pong=answers["Ping"], read=answers["ReadKey"], settings=SERVER_SETTINGS)
        )
        base = subprocess.Popen([sys.executable, str(work / "baseline.py"), str(base_port)])
        procs.append(base)
        wait_up(base_url, base)
        assert httpx.post(f"{base_url}/v1/rpc", content=requests["ReadKey"], headers=JSON_HEADERS).content == answers["ReadKey"]

        best: dict[tuple[str, str], tuple[float, float, float]] = {}
        for _ in range(args.rounds):
            for name, body in requests.items():
                for target, url in (("baseline", base_url), ("node", node_url)):
                    run = wrk(url, body, args.connections, args.duration, work)
                    if run[0] > best.get((name, target), (0.0,))[0]:
                        best[(name, target)] = run

        print(f"bench_rpc: wrk -t1 -c{args.connections} -d{args.duration}s, best of {args.rounds}, "
              f"uvicorn {SERVER_SETTINGS}, {os.cpu_count()} cores shared by wrk and the server")  # fmt: skip
        print(f"{'request':<8} {'server':<9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
        for name in requests:
            for target in ("baseline", "node"):
                rps, p50, p99 = best[(name, target)]
                print(f"{name:<8} {target:<9} {rps:>9.0f} {p50:>8.2f} {p99:>8.2f}")
            ratio = best[(name, "node")][0] / best[(name, "baseline")][0]
            print(f"{name:<8} ratio node/bare-starlette = {ratio:.2f}x (goal >= 0.7x)")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
