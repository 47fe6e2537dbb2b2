"""Blobs across real nodes: locations in KV, fetch on a miss, replication factor."""

from __future__ import annotations

import asyncio

import pytest
from blake3 import blake3

from aspen.cluster.blob_replication import (
    BLOBS_PREFIX,
    BlobLocation,
    ReplicatedBlobStore,
    decode_location,
    location_key,
)
from aspen.cluster.membership import node_key
from aspen.errors import AspenError, ErrorCode
from aspen.storage.segments import SEGMENT_SIZE
from tests.blobs.conftest import pseudo_random


async def locations(kv, h):
    page = await kv.scan(f"{BLOBS_PREFIX}{h}:")
    return {e.key.rsplit(":", 1)[1]: decode_location(e.value) for e in page.entries}


async def test_add_records_location(cluster, kv):
    (a,) = await cluster(1)
    res = await a.store.add_bytes(b"hello cluster")
    assert await locations(kv, res.hash) == {"n1": BlobLocation(url=a.url, size=13)}


async def test_miss_fetches_verifies_and_keeps_copy(cluster, kv):
    a, b = await cluster(2)
    data = pseudo_random(3 * SEGMENT_SIZE + 11)
    h = (await a.store.add_bytes(data)).hash
    assert not await b.local.has(h)
    assert await b.store.has(h)  # answers for the cluster
    assert await b.store.size(h) == len(data)
    assert await b.store.get_bytes(h, offset=5, length=10) == data[5:15]
    assert await b.local.has(h) and await b.local.verify(h)
    assert set(await locations(kv, h)) == {"n1", "n2"}
    # served from the local copy now, even with the first node gone
    await a.server.stop()
    assert await b.store.get_bytes(h) == data


async def test_stream_read_fetches(cluster):
    a, b = await cluster(2)
    data = pseudo_random(2 << 20)
    h = (await a.store.add_bytes(data)).hash
    got = b"".join([c async for c in b.store.get_stream(h, chunk_size=1 << 19)])
    assert got == data


async def test_concurrent_misses_fetch_once(cluster):
    a, b = await cluster(2)
    data = pseudo_random(1 << 20)
    h = (await a.store.add_bytes(data)).hash
    results = await asyncio.gather(*(b.store.get_bytes(h) for _ in range(5)))
    assert all(r == data for r in results)
    assert len((await b.local.list()).blobs) == 1


async def test_replication_factor_pushes_without_cascade(cluster, kv):
    nodes = await cluster(4, replication_factor=3)
    data = pseudo_random(SEGMENT_SIZE * 2 + 1)
    res = await nodes[0].store.add_bytes(data)
    holders = [n.node_id for n in nodes if await n.local.has(res.hash)]
    assert len(holders) == 3 and "n1" in holders
    assert set(await locations(kv, res.hash)) == set(holders)
    for n in nodes:
        if n.node_id in holders:
            assert await n.local.get_bytes(res.hash) == data
    # adding again is idempotent: still three copies
    await nodes[0].store.add_bytes(data)
    assert len([n for n in nodes if await n.local.has(res.hash)]) == 3


async def test_replication_skips_dead_node(cluster, kv):
    a, b, c = await cluster(3, replication_factor=2)
    await b.server.stop()  # still registered (its lease has not expired yet)
    await c.server.stop()
    res = await a.store.add_bytes(b"nobody to push to")
    assert set(await locations(kv, res.hash)) == {"n1"}  # the add still succeeds
    (d,) = await cluster(1)
    res2 = await a.store.add_bytes(b"one live peer")
    assert set(await locations(kv, res2.hash)) == {"n1", d.node_id}
    assert await d.local.has(res2.hash)


async def test_not_found_anywhere(cluster):
    (_a, b) = await cluster(2)
    missing = blake3(b"never added").hexdigest()
    for call in (b.store.get_bytes(missing), b.store.size(missing), b.store.protect(missing, "t")):
        with pytest.raises(AspenError) as exc:
            await call
        assert exc.value.code == ErrorCode.BLOB_NOT_FOUND
    assert await b.store.has(missing) is False


async def test_stale_location_dropped(cluster, kv):
    a, b = await cluster(2)
    h = (await a.store.add_bytes(b"soon gone")).hash
    await a.local.delete(h)  # behind the replicated store's back: the location is stale
    with pytest.raises(AspenError) as exc:
        await b.store.get_bytes(h)
    assert exc.value.code == ErrorCode.BLOB_NOT_FOUND
    assert await locations(kv, h) == {}


async def test_unreachable_holder(cluster, kv):
    a, b = await cluster(2)
    h = (await a.store.add_bytes(b"on a dead node")).hash
    await a.server.stop()
    with pytest.raises(AspenError) as exc:
        await b.store.get_bytes(h)
    assert exc.value.code == ErrorCode.PEER_UNAVAILABLE and exc.value.details["nodes"] == ["n1"]
    assert "n1" in await locations(kv, h)  # a node that is down may come back


async def test_rotted_local_copy_replaced_from_peer(cluster, kv):
    a, b = await cluster(2)
    data = pseudo_random(2 * SEGMENT_SIZE)
    h = (await a.store.add_bytes(data)).hash
    await b.store.get_bytes(h)
    path = b.local.root / "objects" / h[:2] / h[2:]
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert await b.store.get_bytes(h) == data
    assert await b.local.verify(h)


async def test_delete_and_gc_drop_own_location(cluster, kv):
    a, b = await cluster(2)
    h = (await a.store.add_bytes(b"shared")).hash
    await b.store.get_bytes(h)
    assert await b.store.delete(h)
    assert set(await locations(kv, h)) == {"n1"}
    assert await b.store.has(h)  # still on n1
    assert await a.store.gc(grace_seconds=0) == [h]
    assert await locations(kv, h) == {}
    assert not await b.store.has(h)


async def test_bad_arguments(cluster, kv):
    (a,) = await cluster(1)
    for kwargs in ({"replication_factor": 0}, {"replication_factor": 6}, {"node_id": ""}, {"node_id": "a:b"}):
        args = {"node_id": "x", "url": "http://127.0.0.1:1", **kwargs}
        with pytest.raises(AspenError) as exc:
            ReplicatedBlobStore(a.local, kv, **args)
        assert exc.value.code == ErrorCode.INVALID_ARGUMENT
    with pytest.raises(AspenError) as exc:
        await a.store.get_bytes("zz")
    assert exc.value.code == ErrorCode.INVALID_HASH


async def test_location_survives_unregistered_url(cluster, kv):
    """A holder not (or no longer) registered is still tried at its recorded URL."""
    (a,) = await cluster(1, registered=False)
    (b,) = await cluster(1)
    h = (await a.store.add_bytes(b"unregistered holder")).hash
    assert await b.store.get_bytes(h) == b"unregistered holder"


MALFORMED = [b"not json", b"[]", b'{"url": "http://127.0.0.1:1"}', b'{"url": "http://127.0.0.1:1", "size": -1}']


async def test_malformed_records_are_ignored(cluster, kv):
    """Garbage under the node or location prefix is skipped (and logged), never
    a crash: reads and replication go on with the valid records."""
    a, b, c = await cluster(3, replication_factor=2)
    for i, raw in enumerate(MALFORMED + [b'{"node_id": "x", "url": "http://127.0.0.1:1"}']):
        await kv.put(node_key(f"bad{i}"), raw)  # the last: a registration that is no NodeRecord
    data = pseudo_random(SEGMENT_SIZE + 5)
    h = (await a.store.add_bytes(data)).hash
    assert len(await locations(kv, h)) == 2  # pushed to a valid node, not to a malformed one
    reader = c if not await c.local.has(h) else b
    for i, raw in enumerate(MALFORMED):
        await kv.put(location_key(h, f"bad{i}"), raw)
    assert await reader.store.size(h) == len(data)
    assert await reader.store.get_bytes(h) == data
    lone = blake3(b"only garbage recorded").hexdigest()
    await kv.put(location_key(lone, "bad"), b"not json")
    assert await reader.store.has(lone) is False
    with pytest.raises(AspenError) as exc:
        await reader.store.get_bytes(lone)
    assert exc.value.code == ErrorCode.BLOB_NOT_FOUND
