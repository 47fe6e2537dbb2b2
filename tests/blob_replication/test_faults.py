"""Misbehaving and dying peers: corrupt bytes are never stored, a transfer
cut off mid-way never leaves a partial blob visible."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import httpx
import pytest
from blake3 import blake3
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from aspen.cluster.blob_replication import BlobLocation, encode_location, location_key
from aspen.cluster.membership import node_key
from aspen.errors import AspenError, ErrorCode
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.segments import SEGMENT_SIZE
from tests.blob_replication.conftest import Server, bound_socket, register
from tests.blobs.conftest import pseudo_random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rogue_routes(payload: bytes) -> list[Route]:
    """A peer that answers every blob request with ``payload``."""

    async def get_blob(request: Request) -> Response:
        return Response(payload, media_type="application/octet-stream")

    return [Route("/v1/blobs/{hash}", get_blob, methods=["GET"])]


async def record(kv, h, node_id, url, size):
    await kv.put(location_key(h, node_id), encode_location(BlobLocation(url=url, size=size)))


def tmp_files(local):
    return list((local.root / "tmp").iterdir())


@pytest.mark.parametrize("payload_size", ["same", "longer", "shorter"])
async def test_corrupt_peer_detected_then_next_peer(cluster, kv, payload_size):
    good, b = await cluster(2)
    data = pseudo_random(2 * SEGMENT_SIZE + 3)
    h = blake3(data).hexdigest()
    lie = {"same": pseudo_random(len(data), seed=b"lie"), "longer": data + b"!", "shorter": data[:-1]}[payload_size]
    rogue = Server(rogue_routes(lie))
    await rogue.start()
    try:
        await register(kv, "rogue", rogue.url)
        await record(kv, h, "rogue", rogue.url, len(data))
        with pytest.raises(AspenError) as exc:
            await b.store.get_bytes(h)
        assert exc.value.code == ErrorCode.BLOB_NOT_FOUND
        assert not await b.local.has(h) and (await b.local.list()).blobs == [] and tmp_files(b.local) == []
        # a good holder appears (not registered, so the rogue is still tried first)
        await good.local.add_bytes(data)
        await kv.delete(node_key(good.node_id))
        await record(kv, h, good.node_id, good.url, len(data))
        assert await b.store.get_bytes(h) == data
        assert [x.hash for x in (await b.local.list()).blobs] == [h]
    finally:
        await rogue.stop()


async def test_peer_with_rotted_disk_aborts_mid_stream(cluster, kv):
    a, b, c = await cluster(3)
    data = pseudo_random(8 * SEGMENT_SIZE)
    h = (await a.store.add_bytes(data)).hash
    path = a.local.root / "objects" / h[:2] / h[2:]
    raw = bytearray(path.read_bytes())
    raw[6 * SEGMENT_SIZE] ^= 1  # past the first chunk: headers are already out
    path.write_bytes(bytes(raw))
    with pytest.raises(AspenError) as exc:
        await b.store.get_bytes(h)
    assert exc.value.code == ErrorCode.PEER_UNAVAILABLE  # the body was cut short
    assert tmp_files(b.local) == [] and not await b.local.has(h)
    assert not await a.local.has(h)  # the holder quarantined its copy
    await c.local.add_bytes(data)
    await record(kv, h, c.node_id, c.url, len(data))
    assert await b.store.get_bytes(h) == data


SERVE = textwrap.dedent(
    """
    import asyncio, sys, uvicorn
    from starlette.applications import Starlette
    from aspen.auth.service import AuthService
    from aspen.cluster.blob_routes import blob_http_routes
    from aspen.storage.blobs import LocalBlobStore
    from aspen.storage.sqlite import SqliteKeyValueStore

    async def main():
        kv = await SqliteKeyValueStore.open(sys.argv[3], durable=False)  # shared: the cluster's keys
        auth = await AuthService.open(sys.argv[1] + "-auth", kv, "victim", shared=True)
        store = LocalBlobStore(sys.argv[1])
        config = uvicorn.Config(Starlette(routes=blob_http_routes(store, auth)), host="127.0.0.1",
                                port=int(sys.argv[2]), log_level="warning", lifespan="off")
        await uvicorn.Server(config).serve()

    asyncio.run(main())
    """
)


def admin_headers(root) -> dict[str, str]:
    """The node process's admin token (its auth keeps it beside the blob root)."""
    return {"authorization": "Bearer " + (root.parent / f"{root.name}-auth" / "admin.token").read_text().strip()}


async def start_node_process(root, port):
    kv_path = root.parent / "kv.sqlite3"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(root), str(port), str(kv_path)], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient() as client:
        for _ in range(600):
            try:
                await client.get(f"{url}/v1/blobs/{'0' * 64}")
                return proc, url
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("node process did not start")


def free_port():
    sock = bound_socket()
    port = sock.getsockname()[1]
    sock.close()
    return port


async def test_serving_node_killed_mid_transfer(cluster, kv, tmp_path):
    (b,) = await cluster(1)
    proc, url = await start_node_process(tmp_path / "victim", free_port())
    try:
        data_size = 48 << 20
        async with httpx.AsyncClient(headers=admin_headers(tmp_path / "victim")) as client:

            async def chunks():
                for i in range(0, data_size, 1 << 20):
                    yield pseudo_random(1 << 20, offset=i)

            r = await client.put(f"{url}/v1/blobs", content=chunks(), timeout=120)
        h = r.json()["hash"]
        await record(kv, h, "victim", url, data_size)

        async def kill_on_headers(response):
            if response.request.method == "GET" and os.path.basename(response.request.url.path) == h:
                os.kill(proc.pid, signal.SIGKILL)

        b.store._http.event_hooks["response"] = [kill_on_headers]
        with pytest.raises(AspenError) as exc:
            await b.store.get_bytes(h)
        assert exc.value.code == ErrorCode.PEER_UNAVAILABLE
        assert not await b.local.has(h) and (await b.local.list()).blobs == []
        assert tmp_files(b.local) == []
    finally:
        proc.kill()
        proc.wait()


async def test_receiving_node_killed_mid_put(tmp_path):
    root = tmp_path / "receiver"
    port = free_port()
    proc, url = await start_node_process(root, port)
    sent = 0
    try:

        async def slow_chunks():
            nonlocal sent
            for i in range(1000):
                yield pseudo_random(1 << 16, offset=i << 16)
                sent += 1
                if sent == 40:
                    os.kill(proc.pid, signal.SIGKILL)
                await asyncio.sleep(0.005)

        async with httpx.AsyncClient(headers=admin_headers(root)) as client:
            with pytest.raises(httpx.TransportError):
                await client.put(f"{url}/v1/blobs", content=slow_chunks(), timeout=60)
    finally:
        proc.kill()
        proc.wait()
    assert 40 <= sent < 1000
    partial = list((root / "tmp").iterdir())
    assert len(partial) == 1 and partial[0].stat().st_size > 0  # the evidence of the cut
    proc, url = await start_node_process(root, port)  # restart on the same directory
    try:
        store = await LocalBlobStore.open(root)
        assert (await store.list()).blobs == []
        await store.close()
        async with httpx.AsyncClient(headers=admin_headers(root)) as client:
            full = blake3()
            for i in range(1000):
                full.update(pseudo_random(1 << 16, offset=i << 16))
            r = await client.get(f"{url}/v1/blobs/{full.hexdigest()}")
            assert r.status_code == 404
    finally:
        proc.kill()
        proc.wait()
