"""Cluster-wide hot reload: time from the manifest write to the new version
serving on every node, with requests flowing the whole time.

Two real node processes share one SQLite file and blob directory (or, with
``--etcd``, a local 3-member etcd cluster and a blob store each: the other
node fetches the module from its peer by hash). Load
workers call the ``vers`` plugin on both nodes continuously; the benchmark
alternates the plugin between two versions (``PluginUpgrade`` with
``force``, ``wait_seconds=0``: the call returns right after the record
write) ``--upgrades`` times, and polls each node until it answers with the
new version. Reported: p50/p99 of "on the answering node" and "on every
node", and the failed requests (must be 0).

Baseline, same run: the time for a plain KV write made through node A to
reach a watch (SSE) on node B — the propagation floor every cross-node
change pays, since the reconcilers follow a watch.

Run: ``.venv/bin/python benchmarks/bench_reload.py [--upgrades 50] [--etcd]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aspen.client import Client
from aspen.errors import AspenError
from aspen.plugins import requests as r
from aspen.plugins.signing import public_key_hex
from tests.lifecycle.conftest import build_variant, signed, vers_manifest

ASPEN = str(Path(sys.executable).with_name("aspen"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(data: Path, name: str, work: Path, etcd: list[str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = work / f"{name}.toml"
    cfg.write_text(f'[node]\nnode_id = "{name}"\nlog_level = "warning"\n[plugins]\ndrain_seconds = 5\n')
    log = (work / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [ASPEN, "node", "start", "--data-dir", str(data), "--listen", f"127.0.0.1:{port}", "--config", str(cfg)]
        + (["--etcd", ",".join(etcd)] if etcd else []),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"node {name} did not start; see {work / (name + '.log')}")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


async def version_of(client: Client) -> str | None:
    try:
        return (await client.call("VersionEcho", {"seq": 0}))["version"]
    except AspenError:
        return None


async def until_serves(client: Client, version: str, started: float) -> float:
    while await version_of(client) != version:
        await asyncio.sleep(0.002)
    return time.perf_counter() - started


async def watch_baseline(a: Client, b: Client, samples: int) -> list[float]:
    """KV write through A → event on a watch on B."""
    times: list[float] = []
    arrived: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    async def follow() -> None:
        async for event in b.watch("bench-baseline/"):
            await arrived.put((event.kv.key, time.perf_counter()))

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.5)
    try:
        for i in range(samples):
            key = f"bench-baseline/{i}"
            started = time.perf_counter()
            await a.write_key(key, b"x")
            while True:
                got, at = await asyncio.wait_for(arrived.get(), 10)
                if got == key:
                    times.append(at - started)
                    break
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
    return times


async def main(args: argparse.Namespace) -> None:
    modules = {v: build_variant("vers", v, True) for v in ("1.0.0", "2.0.0")}
    author = Ed25519PrivateKey.generate()
    work = Path(tempfile.mkdtemp(prefix="bench-reload-"))
    procs = []
    etcd = None
    if args.etcd:  # one data directory (blob store) per node; KV in a 3-member etcd cluster
        from aspen.cluster.etcd_launcher import EtcdCluster

        etcd = EtcdCluster(work / "etcd", size=3)
        etcd.start(timeout=60)
    endpoints = etcd.endpoints if etcd else []
    try:
        pa, url_a = start_node(work / ("a" if etcd else "data"), "a", work, endpoints)
        procs.append(pa)
        pb, url_b = start_node(work / ("b" if etcd else "data"), "b", work, endpoints)
        procs.append(pb)
        async with Client(url_a) as a, Client(url_b) as b:
            await a.call("PluginTrustAdd", {"pubkey": public_key_hex(author), "name": "bench"})
            bodies = {}
            for v, wasm in modules.items():
                manifest = signed(author, vers_manifest(v), wasm)
                bodies[v] = r.PluginInstall(manifest=manifest, wasm=wasm, force=True, wait_seconds=0)
            await a.call(
                "PluginInstall", msgspec.to_builtins(msgspec.structs.replace(bodies["1.0.0"], wait_seconds=15))
            )
            await until_serves(b, "1.0.0", time.perf_counter())

            baseline = await watch_baseline(a, b, args.baseline_samples)

            stop = asyncio.Event()
            counts = {"ok": 0, "failed": 0}
            errors: list[str] = []

            async def load(client: Client) -> None:
                while not stop.is_set():
                    try:
                        body = await client.call("VersionEcho", {"seq": 1})
                        ok = body.get("version") in modules
                    except AspenError as exc:
                        ok = False
                        errors.append(f"{exc.code}: {exc.message}")
                    counts["ok" if ok else "failed"] += 1

            loaders = [asyncio.create_task(load(c)) for c in (a, b) for _ in range(args.load_workers)]
            local: list[float] = []
            everywhere: list[float] = []
            current = "1.0.0"
            for i in range(args.upgrades):
                target = "2.0.0" if current == "1.0.0" else "1.0.0"
                via, other = (a, b) if i % 2 == 0 else (b, a)
                started = time.perf_counter()
                await via.call("PluginUpgrade", msgspec.to_builtins(bodies[target]))
                t_via, t_other = await asyncio.gather(
                    until_serves(via, target, started), until_serves(other, target, started)
                )
                local.append(t_via)
                everywhere.append(max(t_via, t_other))
                current = target
                await asyncio.sleep(args.pause)
            stop.set()
            await asyncio.gather(*loaders)
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if etcd is not None:
            etcd.stop()

    ms = lambda x: f"{x * 1000:.1f}"
    b50, b99 = pct(baseline, 0.5), pct(baseline, 0.99)
    backend = "etcd (3 members), a blob store per node" if args.etcd else "one shared SQLite file and blob directory"
    print(f"bench_reload: {args.upgrades} upgrades across 2 nodes on {backend}, {args.load_workers * 2} load workers")
    print(f"  baseline KV write -> watch on other node: p50 {ms(b50)} ms, p99 {ms(b99)} ms ({len(baseline)} samples)")
    print(f"  new version serving on the answering node: p50 {ms(pct(local, 0.5))} ms, p99 {ms(pct(local, 0.99))} ms")
    print(
        f"  new version serving on every node:         p50 {ms(pct(everywhere, 0.5))} ms, "
        f"p99 {ms(pct(everywhere, 0.99))} ms, mean {ms(statistics.mean(everywhere))} ms"
    )
    print(f"  ratio every-node p50 / watch baseline p50: {pct(everywhere, 0.5) / b50:.2f}x")
    print(f"  requests during the run: {counts['ok']} ok, {counts['failed']} failed")
    if errors:
        print("  first errors:", errors[:5])
    if counts["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrades", type=int, default=50)
    parser.add_argument("--load-workers", type=int, default=2, help="per node")
    parser.add_argument("--baseline-samples", type=int, default=50)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between upgrades")
    parser.add_argument("--etcd", action="store_true", help="run the nodes on a local etcd cluster instead")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main(parser.parse_args()))
