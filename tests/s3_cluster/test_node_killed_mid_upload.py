"""A real node on SeaweedFS SIGKILLed in the middle of a large streaming ``PUT /v1/blobs``:
its own GC (every half second, ``cleanup_seconds=1``) never aborted the upload while it ran;
nothing of the cut upload is ever readable; and once the dead node's upload lease expired,
a restarted node's GC removes the abandoned multipart upload while a blob that completed
before the kill is still served."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import httpx
from blake3 import blake3

from aspen.storage.s3_client import PART_SIZE, S3Objects
from aspen.storage.s3_settings import settings_from_url
from tests.blobs.conftest import pseudo_random
from tests.federation.test_announcements import wait_for
from tests.node.node_process import NodeProcess

MiB = 1 << 20


async def bucket_state(url: str) -> tuple[list[str], list[str]]:
    """(object keys, keys of unfinished multipart uploads) under the URL's prefix."""
    objects = await S3Objects.open(settings_from_url(url))
    try:
        keys = [k async for k, _ in objects.list_objects("")]
        uploads = [k async for k, _, _ in objects.list_uploads("")]
        return keys, uploads
    finally:
        await objects.close()


def stream_until_killed(url: str, headers: dict[str, str], sent: list[int], outcome: list[object]) -> None:
    """PUT an endless body (1 MiB chunks) until the node dies under it."""

    def chunks():
        for i in range(100_000):
            yield pseudo_random(MiB, seed=b"cut", offset=i * MiB)
            sent[0] += MiB
            time.sleep(0.005)

    try:
        outcome.append(httpx.put(f"{url}/v1/blobs", content=chunks(), headers=headers, timeout=120))
    except httpx.HTTPError as exc:
        outcome.append(exc)


def test_node_killed_mid_upload_leaves_nothing_readable_and_nothing_leaked(tmp_path, blob_store_url):
    data_dir = tmp_path / "node"
    busy = tmp_path / "gc.toml"  # both nodes clean up every half second
    busy.write_text("[blobs]\ngc_interval_seconds = 0.5\ngc_grace_seconds = 3600\n")
    kept = pseudo_random(PART_SIZE + 3 * MiB, seed=b"kept")

    node = NodeProcess(data_dir, "--blob-store", blob_store_url, "--config", str(busy)).start()
    try:
        resp = httpx.put(f"{node.url}/v1/blobs", content=kept, headers=node.auth_headers, timeout=60)
        assert resp.status_code == 201, resp.text
        kept_hash = resp.json()["hash"]
        sent, outcome = [0], []
        writer = threading.Thread(target=stream_until_killed, args=(node.url, node.auth_headers, sent, outcome))
        writer.start()
        started = time.monotonic()
        # parts of the cut upload are in the bucket, and the node's GC ran past cleanup_seconds under it
        wait_for(lambda: sent[0] >= 3 * PART_SIZE and time.monotonic() - started > 3, 60, "a long upload")
        assert len(asyncio.run(bucket_state(blob_store_url))[1]) == 1  # still running, not aborted
        os.kill(node.proc.pid, signal.SIGKILL)
        node.proc.wait(10)
        writer.join(60)
        assert not writer.is_alive()
        assert isinstance(outcome[0], httpx.HTTPError), outcome  # never acknowledged
    finally:
        node.kill()

    keys, uploads = asyncio.run(bucket_state(blob_store_url))
    assert len(uploads) == 1 and len(keys) == 1, (keys, uploads)  # the kept blob's object, the cut upload
    partial = pseudo_random(sent[0], seed=b"cut")
    with NodeProcess(data_dir, "--blob-store", blob_store_url, "--config", str(busy), port=node.port) as node:
        for n in {PART_SIZE, 2 * PART_SIZE, 3 * PART_SIZE, sent[0]}:  # no prefix of the cut body became a blob
            got = httpx.get(f"{node.url}/v1/blobs/{blake3(partial[:n]).hexdigest()}", headers=node.auth_headers)
            assert got.status_code == 404, (n, got.status_code)
        wait_for(lambda: asyncio.run(bucket_state(blob_store_url)) == (keys, []), 90, "GC to abort the cut upload")
        got = httpx.get(f"{node.url}/v1/blobs/{kept_hash}", headers=node.auth_headers, timeout=60)
        assert got.status_code == 200 and got.content == kept
        blobs = httpx.post(
            f"{node.url}/v1/rpc", json={"type": "ListBlobs", "body": {}, "proxy_hops": 0}, headers=node.auth_headers
        ).json()
        assert [b["hash"] for b in blobs["body"]["blobs"]] == [kept_hash], blobs
