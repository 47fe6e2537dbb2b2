"""bench_rpc: Ping and ReadKey requests per second against one Aspen node,
load from wrk, against a bare Starlette endpoint that returns the same JSON
bytes on the node's own HTTP server and loop, measured in the same run. Every
request to the node carries a real attenuated token (Authorization: Bearer).

    .venv/bin/python benchmarks/bench_rpc.py [--connections 32] [--duration 10] [--rounds 2] [--before COMMIT]

``--before COMMIT`` also runs the node of that commit (checked out into a
temporary directory; it gets the same requests, header included, and ignores the token)
Prints requests/s, p50/p99 latency, the ratios, and the per-request cost of
token verification and of authorisation (uncached and cached) in this process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
from http_load import (
    JSON_HEADERS,
    VENV_BIN,
    checkout,
    clean_up,
    free_port,
    require_wrk,
    wait_up,
    wrk,
)

from aspen.node.config import load_config
from aspen.node.http_server import server_kind

BASELINE = textwrap.dedent(
    """
    import asyncio, sys
    from aspen.node.config import load_config
    from aspen.node.event_loop import run
    from aspen.node.http_server import serve_apps
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
    config = load_config(listen=f"127.0.0.1:{{sys.argv[1]}}", log_level="warning")
    run(serve_apps(config, app, None, asyncio.Event()))  # the node's own serving code and loop
    """
)


def bench_token(node_url: str, admin: str) -> str:
    """A real attenuated token: created by the admin, then narrowed offline."""
    import biscuit_auth as bz

    from aspen.auth.tokens import Right, attenuate

    created = httpx.post(
        f"{node_url}/v1/rpc",
        json={
            "type": "TokenCreate",
            "body": {"rights": [{"operation": "kv:read", "resource": "bench/"}], "ttl_seconds": 86400},
        },
        headers={"authorization": f"Bearer {admin}"},
    ).json()["body"]["token"]
    key = httpx.post(
        f"{node_url}/v1/rpc", json={"type": "TokenVerify", "body": {}}, headers={"authorization": f"Bearer {admin}"}
    ).json()["body"]["public_key"]
    public = bz.PublicKey.from_bytes(bytes.fromhex(key), bz.Algorithm.Ed25519)
    return attenuate(created, public, rights=[Right("kv:read", "bench/key")], ttl_seconds=7200)


def auth_costs(n: int = 2000) -> dict[str, float]:
    """Microseconds per verification (uncached), per authorisation (uncached and cached)."""
    import biscuit_auth as bz

    from aspen.auth.tokens import Right, attenuate, mint
    from aspen.auth.verifier import TokenVerifier
    from aspen.rpc.access import Need

    keys = bz.KeyPair()
    token = mint(keys.private_key, subject="bench", rights=[Right("kv:read", "bench/")], audience="c", ttl_seconds=3600)
    token = attenuate(token, keys.public_key, rights=[Right("kv:read", "bench/key")])
    verifier = TokenVerifier(keys.public_key, "c", lambda ids: False)
    started = time.perf_counter()
    for _ in range(n // 10):
        verifier.forget()
        principal = verifier.authenticate(token)
    verify = (time.perf_counter() - started) / (n // 10) * 1e6
    started = time.perf_counter()
    for i in range(n):
        verifier.allows(principal, Need("kv:read", f"bench/key{i}", True), "ReadKey")
    uncached = (time.perf_counter() - started) / n * 1e6
    need = Need("kv:read", "bench/key", True)
    started = time.perf_counter()
    for _ in range(n):
        verifier.authenticate(token)
        verifier.allows(principal, need, "ReadKey")
    cached = (time.perf_counter() - started) / n * 1e6
    return {"verify (uncached)": verify, "authorise (uncached)": uncached, "verify+authorise (cached)": cached}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternate node/baseline this many times; best run counts")
    ap.add_argument(
        "--before",
        help="also run the node of this commit (same requests; it ignores the token) for the before/after ratio",
    )
    args = ap.parse_args()
    require_wrk()

    work = Path(tempfile.mkdtemp(prefix="bench-rpc-"))
    node_port, base_port, before_port = free_port(), free_port(), free_port()
    node_url, base_url = f"http://127.0.0.1:{node_port}", f"http://127.0.0.1:{base_port}"
    before_url = f"http://127.0.0.1:{before_port}"
    procs = []
    tree = None
    try:
        node = subprocess.Popen(
            [VENV_BIN / "aspen", "node", "start", "--data-dir", str(work / "data"),
             "--listen", f"127.0.0.1:{node_port}", "--log-level", "warning"],
        )  # fmt: skip
        procs.append(node)
        wait_up(node_url, node)
        admin = (work / "data" / "admin.token").read_text().strip()
        value = "x" * 100
        write = {"type": "WriteKey", "body": {"key": "bench/key", "value": value}}
        httpx.post(f"{node_url}/v1/rpc", json=write, headers={"authorization": f"Bearer {admin}"})
        token = bench_token(node_url, admin)
        requests = {
            "Ping": b'{"type":"Ping","body":{}}',
            "ReadKey": b'{"type":"ReadKey","body":{"key":"bench/key"}}',
        }
        headers = {"authorization": f"Bearer {token}"}
        answers = {
            name: httpx.post(f"{node_url}/v1/rpc", content=body, headers={**JSON_HEADERS, **headers}).content
            for name, body in requests.items()
        }
        assert b'"Error"' not in answers["ReadKey"] and b'"Error"' not in answers["Ping"], answers
        (work / "baseline.py").write_text(BASELINE.format(pong=answers["Ping"], read=answers["ReadKey"]))
        base = subprocess.Popen([sys.executable, str(work / "baseline.py"), str(base_port)])
        procs.append(base)
        wait_up(base_url, base)
        assert (
            httpx.post(f"{base_url}/v1/rpc", content=requests["ReadKey"], headers=JSON_HEADERS).content
            == answers["ReadKey"]
        )
        targets = [("baseline", base_url, None), ("node", node_url, token)]
        if args.before:
            tree, env = checkout(args.before, work)
            before = subprocess.Popen(
                [sys.executable, "-c", "from aspen.cli.main import app; app()", "node", "start", "--data-dir", str(work / "before-data"),
                 "--listen", f"127.0.0.1:{before_port}", "--log-level", "warning"],
                env=env, cwd=tree,
            )  # fmt: skip
            procs.append(before)
            wait_up(before_url, before)
            httpx.post(f"{before_url}/v1/rpc", json=write)
            assert (
                b'"Error"'
                not in httpx.post(f"{before_url}/v1/rpc", content=requests["ReadKey"], headers=JSON_HEADERS).content
            )
            targets.append(("before", before_url, token))  # the same bytes on the wire; it ignores the header

        best: dict[tuple[str, str], tuple[float, float, float]] = {}
        per_round: dict[tuple[str, str], list[float]] = {}  # (request, target) -> req/s of each round
        for round_ in range(args.rounds):
            for name, body in requests.items():
                # the targets of a round run back to back, in an order that rotates across rounds
                for target, url, tok in targets[round_ % len(targets) :] + targets[: round_ % len(targets)]:
                    *run, errors = wrk(url, body, args.connections, args.duration, work, tok)
                    if errors:
                        raise SystemExit(f"{target} answered {errors} {name} requests with an error")
                    per_round.setdefault((name, target), []).append(run[0])
                    if run[0] > best.get((name, target), (0.0,))[0]:
                        best[(name, target)] = run

        print(f"bench_rpc: wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds, "
              f"server={server_kind(load_config())}, {os.cpu_count()} cores shared by wrk and the server; "
              f"node requests carry an attenuated token ({len(token)} chars)")  # fmt: skip
        print(f"{'request':<8} {'server':<9} {'best req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
        for name in requests:
            for target, _, _ in targets:
                rps, p50, p99 = best[(name, target)]
                print(f"{name:<8} {target:<9} {rps:>10.0f} {p50:>8.2f} {p99:>8.2f}")
            pairs = [("baseline", "node/bare-starlette", 0.7)]
            if args.before:
                pairs.append(("before", f"node-with-token/node-{args.before[:8]}", 0.85))
            for other, label, goal in pairs:
                ratios = sorted(a / b for a, b in zip(per_round[(name, "node")], per_round[(name, other)], strict=True))
                print(f"{name:<8} ratio {label}: median {statistics.median(ratios):.2f}x, rounds "
                      f"{ratios[0]:.2f}-{ratios[-1]:.2f}x (goal >= {goal}x)")  # fmt: skip
        for what, us in auth_costs().items():
            print(f"auth cost: {what:<26} {us:8.1f} us per request")
    finally:
        clean_up(procs, tree, work)


if __name__ == "__main__":
    main()
