"""What is specific to the etcd backend (the shared semantics run in the
conformance suite, tests/storage, against the same 3-member cluster)."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.storage.etcd import EtcdKeyValueStore
from aspen.storage.etcd_endpoints import parse_endpoints
from aspen.storage.limits import MAX_OPERATIONS, MAX_VALUE_BYTES
from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp, RangeOp

pytestmark = pytest.mark.etcd


def test_endpoint_parsing() -> None:
    assert parse_endpoints("http://127.0.0.1:2379, 10.0.0.2:2380,host") == [
        ("127.0.0.1", 2379),
        ("10.0.0.2", 2380),
        ("host", 2379),
    ]
    for bad in ["", " , ", "h:notaport", "h:0", ":2379"]:
        with pytest.raises(AspenError) as err:
            parse_endpoints(bad)
        assert err.value.code == ErrorCode.INVALID_ARGUMENT


async def test_unreachable_etcd_fails_fast() -> None:
    from aspen.cluster.etcd_launcher import free_port

    t0 = time.monotonic()
    with pytest.raises(AspenError) as err:
        await EtcdKeyValueStore.open([f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"], connect_timeout=2.0)
    assert err.value.code == ErrorCode.ETCD_UNREACHABLE
    assert time.monotonic() - t0 < 5.0


async def test_blackholed_endpoint_is_bounded_by_connect_timeout() -> None:
    # a listening socket that never speaks HTTP/2: the connect attempt must time out, not hang
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(AspenError) as err:
            await EtcdKeyValueStore.open(f"127.0.0.1:{port}", connect_timeout=1.0)
        assert err.value.code == ErrorCode.ETCD_UNREACHABLE
        assert time.monotonic() - t0 < 4.0
    finally:
        server.close()


async def test_one_dead_endpoint_in_the_list_is_skipped(etcd_cluster) -> None:
    from aspen.cluster.etcd_launcher import free_port

    store = await EtcdKeyValueStore.open([f"127.0.0.1:{free_port()}", *etcd_cluster.endpoints])
    try:
        rev = await store.put("skip/a", b"1")
        assert (await store.get("skip/a")).mod_revision == rev
    finally:
        await store.close()


async def test_revisions_and_versions_are_etcds(etcd_store: EtcdKeyValueStore) -> None:
    r1 = await etcd_store.put("v/a", b"1")
    r2 = await etcd_store.put("v/a", b"2")
    assert r2 == r1 + 1
    kv = await etcd_store.get("v/a")
    assert (kv.version, kv.create_revision, kv.mod_revision) == (2, r1, r2)
    r3 = await etcd_store.batch_write([PutOp("v/b", b"x"), PutOp("v/c", b"y"), DeleteOp("v/a")])
    assert r3 == r2 + 1
    b, c, a = await etcd_store.batch_read(["v/b", "v/c", "v/a"])
    assert a is None and b.mod_revision == c.mod_revision == r3
    assert await etcd_store.current_revision() == r3


async def test_failed_compare_index_is_reported(etcd_store: EtcdKeyValueStore) -> None:
    await etcd_store.put("t/a", b"1")
    await etcd_store.put("t/b", b"2")
    res = await etcd_store.transaction(
        [
            Compare("t/a", "value", "==", b"1"),
            Compare("t/b", "version", ">", 0),
            Compare("t/missing", "exists", "==", True),
            Compare("t/a", "value", "==", b"nope"),
        ],
        [PutOp("t/never", b"x")],
        [GetOp("t/a"), RangeOp("t/", limit=1)],
    )
    assert not res.succeeded and res.failed_compare == 2
    assert res.results[0].op == "get" and res.results[0].kv.value == b"1"
    assert res.results[1].op == "range" and [kv.key for kv in res.results[1].kvs] == ["t/a"] and res.results[1].more
    assert await etcd_store.get("t/never") is None


async def test_largest_inputs_pass_and_one_more_fails(etcd_store: EtcdKeyValueStore) -> None:
    big = b"v" * MAX_VALUE_BYTES
    await etcd_store.put("big", big)
    assert (await etcd_store.get("big")).value == big
    with pytest.raises(AspenError) as err:
        await etcd_store.put("big", big + b"!")
    assert err.value.code == ErrorCode.VALUE_TOO_LARGE

    ops = [PutOp(f"many/{i:04d}", b"x") for i in range(MAX_OPERATIONS)]
    await etcd_store.batch_write(ops)
    assert len((await etcd_store.scan("many/", limit=MAX_OPERATIONS)).entries) == MAX_OPERATIONS
    with pytest.raises(AspenError) as err:
        await etcd_store.batch_write(ops + [PutOp("many/x", b"x")])
    assert err.value.code == ErrorCode.TOO_MANY_OPERATIONS
    # a full-size transaction whose 1 000 compares fail still names the failed one
    compares = [Compare(f"many/{i:04d}", "value", "==", b"x") for i in range(MAX_OPERATIONS - 1)]
    compares.append(Compare("many/0500", "version", "==", 7))
    res = await etcd_store.transaction(compares)
    assert not res.succeeded and res.failed_compare == MAX_OPERATIONS - 1


async def test_watch_from_a_compacted_revision_raises_compacted(etcd_store: EtcdKeyValueStore) -> None:
    first = await etcd_store.put("c/a", b"1")
    for i in range(3):
        await etcd_store.put("c/a", str(i).encode())
    await etcd_store.compact(first + 2)
    await etcd_store.compact(first + 1)  # already compacted: no-op
    with pytest.raises(AspenError) as err:
        async for _ in etcd_store.watch("c/", start_revision=first):
            pass
    assert err.value.code == ErrorCode.COMPACTED
    # from the compaction point on, history is still there
    it = etcd_store.watch("c/", start_revision=first + 2)
    ev = await asyncio.wait_for(anext(it), 10)
    assert ev.revision == first + 2
    await it.aclose()


async def test_closed_store_refuses_calls_and_ends_watches(etcd_cluster) -> None:
    store = await EtcdKeyValueStore.open(etcd_cluster.endpoints)
    it = store.watch("closed/")
    waiter = asyncio.ensure_future(anext(it))
    await asyncio.sleep(0.2)
    await store.close()
    with pytest.raises(AspenError) as err:
        await asyncio.wait_for(waiter, 10)
    assert err.value.code == ErrorCode.STORE_CLOSED
    with pytest.raises(AspenError) as err:
        await store.get("x")
    assert err.value.code == ErrorCode.STORE_CLOSED


async def test_lease_expiry_deletes_keys_and_emits_deletes(etcd_store: EtcdKeyValueStore) -> None:
    lease = await etcd_store.lease_grant(1)
    rev = await etcd_store.put("exp/a", b"1", lease=lease.id)
    it = etcd_store.watch("exp/", start_revision=rev)
    assert (await asyncio.wait_for(anext(it), 10)).type == "put"
    ev = await asyncio.wait_for(anext(it), 15)
    assert ev.type == "delete" and ev.kv.key == "exp/a"
    await it.aclose()
    assert await etcd_store.get("exp/a") is None
    with pytest.raises(AspenError) as err:
        await etcd_store.lease_time_to_live(lease.id)
    assert err.value.code == ErrorCode.LEASE_NOT_FOUND
