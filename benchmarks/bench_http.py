"""bench_http: the node over HTTP under wrk, against bare Starlette servers
on the same HTTP stack (the node's own serving code and event loop),
measured in the same run.

- Echo goes through the echo plugin (POST /v1/rpc → registry → WASM); its
  baseline is a bare Starlette endpoint that calls the same echo.wasm through
  a ``ThreadPoolExecutor`` of Extism instances, as many as the node's plugin
  pool has (goal: node ≥ 1.5× baseline); ``baseline-anyio`` is the same
  endpoint calling through Starlette's ``run_in_threadpool`` (anyio's
  threads, one instance per thread), as the issue's first measurement did.
- Ping and ReadKey against a bare endpoint returning the node's exact bytes
  (goals ≥ 1.0× and ≥ 0.9×).
- ``--before COMMIT`` also runs the node of that commit, as it shipped (its
  dependency list had no httptools, so it serves on h11; ``--before-http auto``
  lets it find httptools): goal node ≥ 2× it on Ping and Echo.
- ``--variant NAME=VAR=VALUE[,VAR=VALUE…]`` adds a node started with those
  environment variables (e.g. ``plain=ASPEN_HANDOFF=python``).
- ``--node-args NAME=ARGS`` adds a node started with those arguments (e.g.
  ``uvicorn=--http-server uvicorn``: the node on the other server, its
  baselines staying on ``--http-server``, auto by default).
- ``--contention`` keeps a CPU-bound process running beside everything.

Node requests carry the admin token (bench_rpc measures an attenuated one).

    .venv/bin/python benchmarks/bench_http.py [--duration 5] [--rounds 3] [--before b0ee350]
        [--requests Ping,ReadKey,Echo] [--variant plain=ASPEN_HANDOFF=python] [--contention]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
from http_load import (
    JSON_HEADERS,
    REPO,
    checkout,
    clean_up,
    free_port,
    load_average,
    require_wrk,
    start_node,
    wait_up,
    wrk,
)

from aspen.node.config import load_config
from aspen.node.event_loop import new_event_loop
from aspen.node.http_server import HTTP_PROTOCOL, server_kind
from aspen.plugins.build import build_all
from aspen.plugins.manifest import NodePluginLimits

REQUESTS = {
    "Ping": b'{"type":"Ping","body":{}}',
    "ReadKey": b'{"type":"ReadKey","body":{"key":"bench/key"}}',
    "Echo": b'{"type":"Echo","body":{"message":"' + b"x" * 64 + b'","n":1}}',
}

BASELINE = textwrap.dedent(
    """
    import asyncio, sys, threading
    from concurrent.futures import ThreadPoolExecutor
    import extism
    from aspen.node.config import load_config
    from aspen.node.event_loop import run
    from aspen.node.http_server import serve_apps
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from aspen.plugins.extism_bridge import HOST_FUNCTIONS

    answers = {answers!r}
    manifest = {{"wasm": [{{"path": {wasm!r}}}]}}
    local = threading.local()

    def echo(body: bytes) -> bytes:
        plugin = getattr(local, "plugin", None)
        if plugin is None:
            plugin = local.plugin = extism.Plugin(manifest, functions=HOST_FUNCTIONS)
        return bytes(plugin.call("handle_request", body, parse=None))

    pool = ThreadPoolExecutor({workers})  # one Extism instance per thread

    async def rpc(request: Request) -> Response:
        body = await request.body()
        for name, answer in answers.items():
            if name.encode() in body:
                return Response(answer, media_type="application/json")
        if sys.argv[2] == "anyio":  # Starlette's own way: anyio's worker threads
            out = await run_in_threadpool(echo, body)
        else:
            out = await asyncio.get_running_loop().run_in_executor(pool, echo, body)
        return Response(out, media_type="application/json")

    app = Starlette(routes=[Route("/v1/rpc", rpc, methods=["POST"])])
    config = load_config(listen=f"127.0.0.1:{{sys.argv[1]}}", http_server={server!r}, log_level="warning")
    run(serve_apps(config, app, None, asyncio.Event()))  # the node's own serving code and loop
    """
)


def admin_post(url: str, admin: str, type_: str, body: dict) -> dict:
    reply = httpx.post(
        f"{url}/v1/rpc", json={"type": type_, "body": body}, headers={"authorization": f"Bearer {admin}"}, timeout=30
    ).json()
    if reply["type"] == "Error":
        raise SystemExit(f"{type_} failed at {url}: {reply}")
    return reply


def prepare_node(url: str, data: Path) -> str:
    """Install the echo plugin and the key ReadKey reads; the admin token."""
    admin = (data / "admin.token").read_text().strip()
    echo = REPO / "plugins" / "echo"
    wasm = base64.b64encode((echo / "plugin.wasm").read_bytes()).decode()
    admin_post(url, admin, "PluginInstall", {"manifest": json.loads((echo / "plugin.json").read_text()), "wasm": wasm})
    admin_post(url, admin, "WriteKey", {"key": "bench/key", "value": "x" * 100})
    for _ in range(100):  # the plugin serves once the reconciler has loaded it
        if admin_post(url, admin, "Echo", {"message": "up"})["type"] == "Echo":
            break
    return admin


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, assignments = text.partition("=")
    return name, dict(a.split("=", 1) for a in assignments.split(",") if a)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3, help="alternate the servers this many times")
    ap.add_argument("--requests", default="Ping,ReadKey,Echo")
    ap.add_argument("--before", help="also run the node of this commit")
    ap.add_argument("--before-http", choices=("h11", "auto"), default="h11")
    ap.add_argument("--variant", action="append", default=[], help="NAME=VAR=VALUE[,VAR=VALUE…]: another node")
    ap.add_argument("--node-args", action="append", default=[], help="NAME=ARGS: another node, started with ARGS")
    ap.add_argument("--http-server", default="auto", choices=("auto", "granian", "uvicorn"),
                    help="the nodes' and the bare servers' stack")  # fmt: skip
    ap.add_argument("--contention", action="store_true", help="a CPU-bound process runs beside everything")
    args = ap.parse_args()
    require_wrk()
    build_all(REPO)
    requests = {name: REQUESTS[name] for name in args.requests.split(",")}
    work = Path(tempfile.mkdtemp(prefix="bench-http-"))
    procs: list[subprocess.Popen] = []
    tree = None
    targets: list[tuple[str, str, str | None]] = []  # (name, url, token)
    try:
        server = server_kind(load_config(http_server=args.http_server))
        nodes = [("node", {}, ()), *((*parse_variant(v), ()) for v in args.variant)]
        nodes += [(name, {}, tuple(argv.split())) for name, _, argv in (a.partition("=") for a in args.node_args)]
        for name, env, argv in nodes:
            port = free_port()
            proc = start_node(
                work / name, port, "--allow-unsigned-plugins", "--http-server", server, *argv, env={**os.environ, **env}
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_up(url, proc)
            targets.append((name, url, prepare_node(url, work / name)))
        node_url, admin = targets[0][1], targets[0][2]
        answers = {
            name: httpx.post(f"{node_url}/v1/rpc", content=body, headers={**JSON_HEADERS, "authorization": f"Bearer {admin}"}).content
            for name, body in REQUESTS.items() if name != "Echo"
        }  # fmt: skip
        script = work / "baseline.py"
        script.write_text(BASELINE.format(
            answers=answers, wasm=str(REPO / "plugins" / "echo" / "plugin.wasm"),
            workers=NodePluginLimits().concurrency, server=server,
        ))  # fmt: skip
        for pool in ("anyio", "executor"):
            port = free_port()
            base = subprocess.Popen([sys.executable, str(script), str(port), pool])
            procs.append(base)
            targets.insert(
                0, ("baseline" if pool == "executor" else "baseline-anyio", f"http://127.0.0.1:{port}", None)
            )
            wait_up(targets[0][1], base)
        if args.before:
            tree, env = checkout(args.before, work)
            if args.before_http == "h11":  # as it shipped: httptools was not installed
                stub = work / "no-httptools" / "httptools"
                stub.mkdir(parents=True)
                (stub / "__init__.py").write_text('raise ImportError("bench_http: the old node ran on h11")\n')
                env["PYTHONPATH"] = f"{stub.parent}:{env['PYTHONPATH']}"
            port = free_port()
            proc = start_node(work / "before-data", port, "--allow-unsigned-plugins", env=env, cwd=tree)
            procs.append(proc)
            url = f"http://127.0.0.1:{port}"
            wait_up(url, proc)
            targets.append(("before", url, prepare_node(url, work / "before-data")))
        for name, body in requests.items():  # every server gives the same answer (the revisions aside)
            replies = {}
            for target, url, token in targets:
                headers = {**JSON_HEADERS, **({"authorization": f"Bearer {token}"} if token else {})}
                reply = httpx.post(f"{url}/v1/rpc", content=body, headers=headers).json()
                replies[target] = re.sub(r'"(create|mod)_revision": \d+', "", json.dumps(reply, sort_keys=True))
            assert len(set(replies.values())) == 1, replies
        if args.contention:
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))

        per_round: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        loads = [load_average()]
        for round_ in range(args.rounds):
            for name, body in requests.items():
                shift = round_ % len(targets)
                for target, url, token in targets[shift:] + targets[:shift]:
                    per_round.setdefault((name, target), []).append(
                        wrk(url, body, args.connections, args.duration, work, token)
                    )
            loads.append(load_average())
        report(args, requests, targets, per_round, loads)
    finally:
        clean_up(procs, tree, work)


GOALS = {("Echo", "baseline"): 1.5, ("Ping", "baseline"): 1.0, ("ReadKey", "baseline"): 0.9,
         ("Echo", "before"): 2.0, ("Ping", "before"): 2.0}  # fmt: skip


def report(args, requests, targets, per_round, loads) -> None:
    print(f"bench_http: wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} alternating rounds, "
          f"server={server_kind(load_config(http_server=args.http_server))} (uvicorn's http={HTTP_PROTOCOL}) "
          f"loop={new_event_loop.__module__}, {os.cpu_count()} cores"
          f"{', a CPU-bound process beside' if args.contention else ''}; load average before/after each round: "
          f"{' | '.join(loads)}")  # fmt: skip
    print(
        f"{'request':<8} {'server':<22} {'median req/s':>12} {'spread':>13} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}"
    )
    for name in requests:
        for target, _, _ in targets:
            runs = per_round[(name, target)]
            rps = sorted(r[0] for r in runs)
            mid = sorted(runs)[len(runs) // 2]
            errors = sum(r[3] for r in runs)
            print(
                f"{name:<8} {target:<22} {statistics.median(rps):>12.0f} {rps[0]:>6.0f}-{rps[-1]:<6.0f} {mid[1]:>7.2f} {mid[2]:>7.2f} {errors:>6}"
            )
        for target, _, _ in targets:
            if target == "node":
                continue
            ratios = sorted(
                a[0] / b[0] for a, b in zip(per_round[(name, "node")], per_round[(name, target)], strict=True)
            )
            goal = GOALS.get((name, target))
            print(f"{name:<8} node/{target:<17} median {statistics.median(ratios):.2f}x, rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x"
                  + (f" (goal >= {goal}x)" if goal else ""))  # fmt: skip


if __name__ == "__main__":
    main()
