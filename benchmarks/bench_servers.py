"""bench_servers: which ASGI server the node should run on. The same bare
Starlette app (Ping: fixed bytes; Echo: the echo plugin's ``echo.wasm``
through a ``ThreadPoolExecutor`` of Extism instances, as bench_http's
baseline) under each server, wrk -t1 -c32, rounds alternating the servers;
every ratio is against the node's stack (uvicorn + httptools + uvloop)
measured in the same round.

Servers that are not installed are reported and left out; to compare them
all: ``.venv/bin/pip install granian hypercorn`` first (neither is a
dependency of Aspen).

    .venv/bin/python benchmarks/bench_servers.py [--duration 4] [--rounds 5] [--contention]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from http_load import REPO, VENV_BIN, clean_up, free_port, load_average, require_wrk, wait_up, wrk

from aspen.plugins.build import build_all
from aspen.plugins.manifest import NodePluginLimits

REQUESTS = {
    "Ping": b'{"type":"Ping","body":{}}',
    "Echo": b'{"type":"Echo","body":{"message":"' + b"x" * 64 + b'","n":1}}',
}
APP = textwrap.dedent(
    """
    import asyncio, threading
    from concurrent.futures import ThreadPoolExecutor
    import extism
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from aspen.plugins.extism_bridge import HOST_FUNCTIONS

    manifest = {{"wasm": [{{"path": {wasm!r}}}]}}
    local = threading.local()
    pool = ThreadPoolExecutor({workers})

    def echo(body: bytes) -> bytes:
        plugin = getattr(local, "plugin", None)
        if plugin is None:
            plugin = local.plugin = extism.Plugin(manifest, functions=HOST_FUNCTIONS)
        return bytes(plugin.call("handle_request", body, parse=None))

    async def rpc(request: Request) -> Response:
        body = await request.body()
        if b'"Ping"' in body:
            return Response(b'{{"type":"PingResult","body":{{}}}}', media_type="application/json")
        out = await asyncio.get_running_loop().run_in_executor(pool, echo, body)
        return Response(out, media_type="application/json")

    app = Starlette(routes=[Route("/v1/rpc", rpc, methods=["POST"])])
    """
)
# name → (module that must be importable, command line after the port is known)
SERVERS = {
    "uvicorn-httptools-uvloop": ("uvicorn", "uvicorn app:app --port {port} --http httptools --loop uvloop"),
    "uvicorn-h11-asyncio": ("uvicorn", "uvicorn app:app --port {port} --http h11 --loop asyncio"),
    "granian-asgi-uvloop": ("granian", "granian --interface asgi --loop uvloop --http 1 --no-ws --port {port} app:app"),
    "hypercorn-uvloop": ("hypercorn", "hypercorn -k uvloop -b 127.0.0.1:{port} app:app"),
}
QUIET = {"uvicorn": "--log-level warning --no-access-log", "granian": "--log-level warning", "hypercorn": ""}


def start(name: str, work: Path) -> tuple[subprocess.Popen, str]:
    module, command = SERVERS[name]
    port = free_port()
    argv = [str(VENV_BIN / command.split()[0]), *command.format(port=port).split()[1:], *QUIET[module].split()]
    proc = subprocess.Popen(argv, cwd=work)
    url = f"http://127.0.0.1:{port}"
    wait_up(url, proc)
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--contention", action="store_true", help="a CPU-bound process runs beside everything")
    args = ap.parse_args()
    require_wrk()
    build_all(REPO)
    work = Path(tempfile.mkdtemp(prefix="bench-servers-"))
    wasm = REPO / "plugins" / "echo" / "plugin.wasm"
    (work / "app.py").write_text(APP.format(wasm=str(wasm), workers=NodePluginLimits().concurrency))
    names = [n for n, (module, _) in SERVERS.items() if importlib.util.find_spec(module) is not None]
    for missing in SERVERS.keys() - set(names):
        print(f"{missing}: not installed, left out")
    procs: list[subprocess.Popen] = []
    try:
        urls = {}
        for name in names:
            proc, urls[name] = start(name, work)
            procs.append(proc)
        if args.contention:
            procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        runs: dict[tuple[str, str], list[float]] = {}
        loads = [load_average()]
        for round_ in range(args.rounds):
            for request, body in REQUESTS.items():
                shift = round_ % len(names)
                for name in names[shift:] + names[:shift]:
                    runs.setdefault((request, name), []).append(wrk(urls[name], body, 32, args.duration, work)[0])
            loads.append(load_average())
        print(f"bench_servers: wrk -t1 -c32 -d{args.duration}s, {args.rounds} rounds"
              f"{', a CPU-bound process beside' if args.contention else ''}; load: {' | '.join(loads)}")  # fmt: skip
        ours = names[0]
        for request in REQUESTS:
            for name in names:
                rps = runs[(request, name)]
                ratios = sorted(a / b for a, b in zip(rps, runs[(request, ours)], strict=True))
                print(f"{request:<5} {name:<26} median {statistics.median(rps):>7.0f} req/s "
                      f"({min(rps):.0f}-{max(rps):.0f}); vs {ours}: median {statistics.median(ratios):.2f}x "
                      f"({ratios[0]:.2f}-{ratios[-1]:.2f})")  # fmt: skip
    finally:
        clean_up(procs, None, work)


if __name__ == "__main__":
    main()
