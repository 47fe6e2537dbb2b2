"""The ``[blobs]`` quotas of a node whose blobs live on S3: ``max_total_bytes`` and
``max_blob_bytes`` hold through both ways in (the AddBlob RPC and ``PUT /v1/blobs``), with
their own errors, and a refused upload leaves nothing in the bucket."""

from __future__ import annotations

import asyncio

import httpx

from tests.blobs.conftest import pseudo_random
from tests.node.node_process import NodeProcess
from tests.node.test_blob_quota_gc import add_blob
from tests.s3_cluster.test_node_killed_mid_upload import bucket_state

LIMIT = 200_000


def test_total_and_per_blob_quotas_on_s3(tmp_path, blob_store_url):
    config = tmp_path / "aspen.toml"
    config.write_text(f"[blobs]\nmax_total_bytes = {LIMIT}\nmax_blob_bytes = 150000\ngc_interval_seconds = 0\n")
    with NodeProcess(tmp_path / "data", "--blob-store", blob_store_url, "--config", str(config)) as node:
        r = httpx.put(f"{node.url}/v1/blobs", content=pseudo_random(150_001, b"big"), headers=node.auth_headers)
        assert r.status_code == 413 and r.json()["body"]["code"] == "BLOB_TOO_LARGE", r.text
        first = add_blob(node, pseudo_random(120_000, b"one"))
        assert first["type"] == "AddBlobResult", first
        refused = add_blob(node, pseudo_random(100_000, b"two"))
        assert refused["type"] == "Error" and refused["body"]["code"] == "QUOTA_EXCEEDED", refused
        assert refused["body"]["details"] == {"quota": "max_total_bytes", "limit": LIMIT, "used": 120_000}
        r = httpx.put(f"{node.url}/v1/blobs", content=pseudo_random(100_000, b"three"), headers=node.auth_headers)
        assert r.status_code == 413 and r.json()["body"]["code"] == "QUOTA_EXCEEDED", r.text
        assert add_blob(node, pseudo_random(120_000, b"one"))["body"]["was_new"] is False  # a re-add is free
        keys, uploads = asyncio.run(bucket_state(blob_store_url))
        assert len(keys) == 1 and uploads == [], (keys, uploads)  # only the stored blob's object
