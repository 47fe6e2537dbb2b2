"""Blue/green under load: requests keep flowing while the plugin is
upgraded, rolled back and reloaded over and over; not one fails, and each
reply comes whole from one version."""

from __future__ import annotations

import asyncio
import os
import threading

from aspen.plugins import requests as r
from tests.lifecycle.conftest import ask, signed, vers_manifest

VERSIONS = {"1.0.0", "2.0.0"}


async def churn(node, author, modules, cycles: int) -> None:
    registry = node.rec.registry
    wasm1, wasm2 = modules["1.0.0"], modules["2.0.0"]
    m1 = signed(author, vers_manifest("1.0.0"), wasm1)
    m2 = signed(author, vers_manifest("2.0.0"), wasm2)
    await node.install(r.PluginInstall(manifest=m1, wasm=wasm1), upgrade=False)

    stop = asyncio.Event()
    failures: list[object] = []
    seen: dict[str, int] = {}
    sent = 0

    async def generator(worker: int) -> None:
        nonlocal sent
        seq = worker * 10_000_000
        while not stop.is_set():
            seq += 1
            resp = await ask(registry, seq)
            sent += 1
            body = resp.body
            if resp.type != "VersionEchoResult" or body.get("seq") != seq or body.get("version") not in VERSIONS:
                failures.append((resp.type, body))
                continue
            seen[body["version"]] = seen.get(body["version"], 0) + 1

    workers = [asyncio.create_task(generator(i)) for i in range(4)]
    try:
        for _ in range(cycles):
            up = await node.install(r.PluginInstall(manifest=m2, wasm=wasm2), upgrade=True)
            assert up.status.version == "2.0.0", up.status
            assert (await ask(registry)).body["version"] == "2.0.0"
            back = await node.rollback(r.PluginRollback(name="vers"))
            assert back.status.version == "1.0.0", back.status
            assert (await ask(registry)).body["version"] == "1.0.0"
            reloaded = await node.reload("vers")
            assert reloaded.is_success, reloaded
            assert (await ask(registry)).body["version"] == "1.0.0"
    finally:
        stop.set()
        await asyncio.gather(*workers)
    assert failures == [], failures[:5]
    assert sent > cycles * 3 and set(seen) == VERSIONS
    # every replaced version drained and stopped: only the serving version's workers remain
    await node.rec.drained()
    workers_left = [t for t in threading.enumerate() if t.name == "plugin-vers"]
    assert 1 <= len(workers_left) <= node.rec.get("vers").runtime.limits.concurrency


async def test_upgrade_rollback_reload_under_load(node, author, modules):
    await churn(node, author, modules, int(os.environ.get("ASPEN_RELOAD_CYCLES", "100")))
