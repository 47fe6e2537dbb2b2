"""What a client sees while a node drains after SIGTERM.

``/healthz`` answers 503 ``draining`` once the node is stopping, but over
HTTP that answer can only be seen in a window of at most ~100 ms: uvicorn
(0.54) notices the signal on its next 100 ms tick, then closes the listening
socket (new connections are refused) and closes every idle keep-alive
connection (a busy one is closed after its current response), so no new
request is read while in-flight requests drain. What a load balancer can rely
on, and what these tests assert: from the signal on, ``/healthz`` never
answers 200 again (503 or refused); requests already in flight finish; the
node exits 0 only after them. The 503 itself is asserted in-process.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import blake3
import httpx
import pytest

from aspen.node.config import load_config
from aspen.node.server import open_node
from tests.node.node_process import HTTP_SERVERS, NodeProcess, admin_headers

CHUNK = b"d" * 65536


async def probe(url: str) -> int | str:
    """One ``/healthz`` on a fresh connection: the status, or why none came."""
    try:
        async with httpx.AsyncClient(timeout=2) as h:
            return (await h.get(f"{url}/healthz")).status_code
    except httpx.TransportError as exc:
        return type(exc).__name__


@pytest.mark.parametrize("server", HTTP_SERVERS)
async def test_sigterm_drains_an_in_flight_upload_and_healthz_stops_answering_200(tmp_path, server):
    data = tmp_path / "data"
    proc = NodeProcess(data, "--http-server", server).start()
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_body():
        yield CHUNK
        started.set()
        await release.wait()  # the request stays in flight until the test says so
        for _ in range(3):
            yield CHUNK

    try:
        assert await probe(proc.url) == 200
        async with httpx.AsyncClient(timeout=60) as h:
            upload = asyncio.ensure_future(
                h.put(f"{proc.url}/v1/blobs", content=slow_body(), headers=proc.auth_headers)
            )
            await asyncio.wait_for(started.wait(), 10)
            await asyncio.sleep(0.3)  # the node is reading the body
            os.kill(proc.proc.pid, signal.SIGTERM)
            seen: list[int | str] = []
            t_end = time.monotonic() + 1.5
            while time.monotonic() < t_end:
                seen.append(await probe(proc.url))
                await asyncio.sleep(0.02)
            assert proc.proc.poll() is None, "the node exited with a request in flight"
            assert 200 not in seen, seen
            # a probe accepted just before the listener closed may be dropped unanswered
            assert all(s in (503, "ConnectError", "RemoteProtocolError", "ReadError") for s in seen), seen
            assert "ConnectError" in seen, seen  # the listener was closed while draining
            release.set()
            resp = await asyncio.wait_for(upload, 30)
        assert resp.status_code == 201, resp.text
        assert resp.json()["hash"] == blake3.blake3(CHUNK * 4).hexdigest()
        code = await asyncio.to_thread(proc.proc.wait, 30)
        assert code == 0, proc.log()
        print(f"healthz during drain: {sorted(set(map(str, seen)))}")
    finally:
        release.set()
        proc.kill()

    with NodeProcess(data, port=proc.port) as again:  # the drained upload was kept
        async with httpx.AsyncClient(timeout=10) as h:
            r = await h.get(f"{again.url}/v1/blobs/{blake3.blake3(CHUNK * 4).hexdigest()}", headers=again.auth_headers)
            assert r.status_code == 200 and r.content == CHUNK * 4


async def test_healthz_and_get_health_say_draining_once_stopping(tmp_path):
    node = await open_node(load_config(data_dir=str(tmp_path)))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=node.app), base_url="http://localhost") as h:
            r = await h.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            node.services.stopping.set()  # what the SIGTERM handler does first
            r = await h.get("/healthz")
            assert r.status_code == 503
            assert r.json() == {"status": "draining", "node_id": node.services.node_id}
            r = await h.post("/v1/rpc", json={"type": "GetHealth"}, headers=admin_headers(tmp_path))
            assert r.json()["body"]["status"] == "draining"
    finally:
        await node.close()
