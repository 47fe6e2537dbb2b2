"""The two blob routes over real HTTP: status codes, ranges, error bodies."""

from __future__ import annotations

import httpx
import pytest
from blake3 import blake3

from aspen.cluster.blob_routes import parse_range
from aspen.errors import AspenError, ErrorCode
from tests.blobs.conftest import pseudo_random


@pytest.fixture
async def node(cluster):
    (n,) = await cluster(1)
    async with httpx.AsyncClient(base_url=n.url, headers=n.headers) as client:
        yield n, client


async def test_put_then_get(node):
    _n, client = node
    data = pseudo_random(700_000)
    r = await client.put("/v1/blobs", content=data)
    assert r.status_code == 201
    body = r.json()
    assert body == {"hash": blake3(data).hexdigest(), "size": len(data), "was_new": True}
    r = await client.put("/v1/blobs", content=data)
    assert r.status_code == 200 and r.json()["was_new"] is False
    r = await client.get(f"/v1/blobs/{body['hash']}")
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-length"] == str(len(data)) and r.headers["accept-ranges"] == "bytes"


async def test_put_streamed_chunked_body(node):
    n, client = node

    async def chunks():
        for i in range(8):
            yield pseudo_random(100_000, offset=i * 100_000)

    r = await client.put("/v1/blobs", content=chunks())
    assert r.status_code == 201 and r.json()["size"] == 800_000
    assert await n.local.get_bytes(r.json()["hash"]) == pseudo_random(800_000)


async def test_ranges(node):
    n, client = node
    data = pseudo_random(1000)
    h = (await n.local.add_bytes(data)).hash
    for header, status, want, content_range in [
        ("bytes=0-9", 206, data[:10], "bytes 0-9/1000"),
        ("bytes=990-", 206, data[990:], "bytes 990-999/1000"),
        ("bytes=-5", 206, data[-5:], "bytes 995-999/1000"),
        ("bytes=500-5000", 206, data[500:], "bytes 500-999/1000"),
    ]:
        r = await client.get(f"/v1/blobs/{h}", headers={"range": header})
        assert (r.status_code, r.content, r.headers["content-range"]) == (status, want, content_range), header
    for header in ("bytes=1000-", "bytes=5-2", "bytes=0-1,5-6", "items=0-1", "bytes=x-", "bytes=-0", "bytes=-"):
        r = await client.get(f"/v1/blobs/{h}", headers={"range": header})
        assert r.status_code == 416, header
        assert r.json()["body"]["code"] == ErrorCode.INVALID_RANGE
        assert r.headers["content-range"] == "bytes */1000"


async def test_error_statuses(node):
    _n, client = node
    r = await client.get("/v1/blobs/nothex")
    assert (r.status_code, r.json()["type"], r.json()["body"]["code"]) == (400, "Error", "INVALID_HASH")
    r = await client.get(f"/v1/blobs/{'0' * 64}")
    assert (r.status_code, r.json()["body"]["code"]) == (404, "BLOB_NOT_FOUND")


async def test_too_large_put(tmp_path, kv):
    from aspen.cluster.blob_routes import blob_http_routes
    from aspen.storage.blobs import LocalBlobStore
    from tests.blob_replication.conftest import Server, open_auth

    store = await LocalBlobStore.open(tmp_path / "tiny", max_blob_size=1000)
    auth = await open_auth(kv, tmp_path / "auth", "tiny")
    server = Server(blob_http_routes(store, auth))
    await server.start()
    headers = {"authorization": "Bearer " + auth.admin_token_path.read_text().strip()}
    try:
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            r = await client.put("/v1/blobs", content=b"x" * 1001)
        assert (r.status_code, r.json()["body"]["code"]) == (413, "BLOB_TOO_LARGE")
        assert list((store.root / "tmp").iterdir()) == []
    finally:
        await server.stop()
        await store.close()
        await auth.close()


def test_parse_range_unit():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=2-4", 10) == (2, 3)
    assert parse_range("bytes=-20", 10) == (0, 10)
    with pytest.raises(AspenError) as exc:
        parse_range("bytes=0-0", 0)
    assert exc.value.code == ErrorCode.INVALID_RANGE
