"""The Python clients against a real node process, in both encodings."""

from __future__ import annotations

import pytest

from aspen import AspenError, Client, ErrorCode, SyncClient
from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp
from tests.node.node_process import free_port


@pytest.fixture(params=["json", "msgpack"])
async def client(request, node):
    async with Client(node.url, encoding=request.param) as c:
        yield c


async def test_node_status(client, node):
    assert await client.ping() is not None
    health = await client.get_health()
    assert health.status == "ok" and health.node_id
    info = await client.get_node_info()
    assert info.endpoint_addr == f"127.0.0.1:{node.port}"
    assert {"ReadKey", "WriteKey", "AddBlob", "LeaseGrant", "PluginReload"} <= set(info.request_types)


async def test_kv_round_trip_with_binary_values(client):
    key = f"e2e/{client._msgpack}/bin"
    value = bytes(range(256))
    w = await client.write_key(key, value)
    r = await client.read_key(key)
    assert r.was_found and r.value == value
    assert r.kv.mod_revision == w.revision and r.kv.version == 1
    assert (await client.delete_key(key)).was_deleted
    assert not (await client.read_key(key)).was_found
    assert not (await client.delete_key(key)).was_deleted


async def test_scan_pages_through_every_key(client):
    prefix = f"scan/{client._msgpack}/"
    await client.batch_write([PutOp(f"{prefix}{i:03}", b"v%d" % i) for i in range(25)])
    seen, token = [], None
    while True:
        page = await client.scan_keys(prefix, limit=10, continuation_token=token)
        assert page.count == len(page.entries) <= 10
        seen += [kv.key for kv in page.entries]
        if not page.is_truncated:
            break
        token = page.continuation_token
    assert seen == [f"{prefix}{i:03}" for i in range(25)]


async def test_compare_and_swap_and_delete(client):
    key = f"cas/{client._msgpack}"
    assert (await client.compare_and_swap_key(key, None, b"one")).is_success
    failed = await client.compare_and_swap_key(key, None, b"two")
    assert not failed.is_success and failed.actual.value == b"one"
    assert (await client.compare_and_swap_key(key, b"one", b"two")).is_success
    assert not (await client.compare_and_delete_key(key, b"one")).is_success
    assert (await client.compare_and_delete_key(key, b"two")).is_success
    assert not (await client.read_key(key)).was_found


async def test_batches_and_transactions(client):
    p = f"batch/{client._msgpack}/"
    await client.write_key(p + "b", b"old")
    applied = await client.batch_write([PutOp(p + "a", b"1"), PutOp(p + "z", b"2"), DeleteOp(p + "b")])
    assert applied.operations_applied == 3
    got = await client.batch_read([p + "a", p + "b"])
    assert got.entries[0].value == b"1" and got.entries[1] is None

    ok = await client.conditional_batch_write(
        [Compare(p + "a", "value", "==", b"1")], [PutOp(p + "c", b"3"), GetOp(p + "a")], [PutOp(p + "d", b"no")]
    )
    assert ok.is_success and ok.failed_condition_index is None
    assert ok.results[1].kv.value == b"1"
    bad = await client.conditional_batch_write(
        [Compare(p + "a", "exists", "==", True), Compare(p + "a", "version", ">", 5)],
        [PutOp(p + "e", b"x")],
        [PutOp(p + "d", b"else")],
    )
    assert not bad.is_success and bad.failed_condition_index == 1
    assert (await client.read_key(p + "d")).value == b"else"
    assert not (await client.read_key(p + "e")).was_found


async def test_leases(client):
    lease = await client.lease_grant(60)
    key = f"lease/{client._msgpack}"
    await client.write_key(key, b"v", lease_id=lease.lease_id)
    ttl = await client.lease_time_to_live(lease.lease_id, include_keys=True)
    assert ttl.lease.keys == [key] and 0 < ttl.lease.remaining_ttl <= 60
    assert (await client.lease_keepalive(lease.lease_id)).lease_id == lease.lease_id
    assert lease.lease_id in [l.id for l in (await client.lease_list()).leases]
    assert (await client.lease_revoke(lease.lease_id)).keys_deleted == 1
    assert not (await client.read_key(key)).was_found
    with pytest.raises(AspenError) as err:
        await client.lease_keepalive(lease.lease_id)
    assert err.value.code == ErrorCode.LEASE_NOT_FOUND


async def test_blobs_over_rpc(client):
    data = b"blob over rpc " + client._msgpack.to_bytes(1, "big") * 1000
    added = await client.add_blob(data, tag=f"t-{client._msgpack}")
    assert added.size == len(data)
    assert (await client.has_blob(added.hash)).does_exist
    got = await client.get_blob(added.hash, offset=5, length=4)
    assert got.data == data[5:9] and got.size == len(data)
    assert added.hash in [b.hash for b in (await client.list_blobs()).blobs]
    with pytest.raises(AspenError) as err:
        await client.delete_blob(added.hash)
    assert err.value.code == ErrorCode.BLOB_PROTECTED
    await client.unprotect_blob(f"t-{client._msgpack}")
    assert (await client.delete_blob(added.hash)).was_deleted
    missing = await client.get_blob(added.hash)
    assert not missing.was_found and missing.data is None


async def test_large_blob_streams_with_ranges(client, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 40_000)  # ~10 MiB, more than one message
    progress = []
    added = await client.upload_blob(src, progress=progress.append)
    assert progress[-1] == src.stat().st_size
    with pytest.raises(AspenError) as err:
        await client.get_blob(added.hash)
    assert err.value.code == ErrorCode.BLOB_TOO_LARGE
    out = tmp_path / "out.bin"
    assert await client.download_blob(added.hash, out) == src.stat().st_size
    assert out.read_bytes() == src.read_bytes()
    part = tmp_path / "part.bin"
    await client.download_blob(added.hash, part, offset=1000, length=300)
    assert part.read_bytes() == src.read_bytes()[1000:1300]
    empty = tmp_path / "empty.bin"
    assert await client.download_blob(added.hash, empty, offset=5, length=0) == 0
    assert empty.read_bytes() == b""
    with pytest.raises(AspenError) as err:
        await client.download_blob("0" * 64, empty, length=0)
    assert err.value.code == ErrorCode.BLOB_NOT_FOUND
    with pytest.raises(AspenError) as err:
        await client.download_blob(added.hash, empty, offset=-1)
    assert err.value.code == ErrorCode.INVALID_RANGE
    with pytest.raises(AspenError) as err:
        await client.download_blob("0" * 64, tmp_path / "none")
    assert err.value.code == ErrorCode.BLOB_NOT_FOUND


async def test_generic_call_and_missing_capabilities(client):
    body = await client.call("WriteKey", {"key": f"call/{client._msgpack}", "value": b"raw"})
    assert body["is_success"] is True
    with pytest.raises(AspenError) as err:
        await client.call("PijulRepoInit", {"name": "x"})  # in the catalog, provided by no layer here
    assert err.value.code == ErrorCode.CAPABILITY_UNAVAILABLE and err.value.details["required_app"] == "pijul"
    with pytest.raises(AspenError) as err:
        await client.call("Whatever", {}, app="forge")
    assert err.value.code == ErrorCode.CAPABILITY_UNAVAILABLE and "'forge'" in err.value.message
    with pytest.raises(AspenError) as err:
        await client.call("NoSuchRequest")
    assert err.value.code == ErrorCode.UNKNOWN_REQUEST
    assert (await client.plugin_reload()).is_success  # the plugin reconciler answers it


async def test_fails_over_to_a_live_node(node):
    dead = f"http://127.0.0.1:{free_port()}"
    async with Client([dead, node.url], retry_delay=0.01) as c:
        await c.write_key("failover/k", b"v")
        assert (await c.read_key("failover/k")).value == b"v"
    async with Client([dead], retries=2, retry_delay=0.01) as c:
        with pytest.raises(AspenError) as err:
            await c.ping()
    assert err.value.code == ErrorCode.UNAVAILABLE


def test_sync_client_uses_environment(node, monkeypatch):
    monkeypatch.setenv("ASPEN_URL", node.url)
    monkeypatch.setenv("ASPEN_TOKEN", node.token)
    with SyncClient() as c:
        assert c.token == node.token
        c.write_key("sync/k", b"v")
        assert c.read_key("sync/k").value == b"v"
        with pytest.raises(AspenError) as err:
            c.read_key("")
        assert err.value.code == ErrorCode.INVALID_KEY
