"""Faults on a real 3-member etcd cluster (its own, so the shared session
cluster is never disturbed): a member SIGKILLed while clients write and
watch, then restarted on its data dir."""

from __future__ import annotations

import asyncio
import time

import pytest
from aetcd import rpc

from aspen.cluster.etcd_launcher import EtcdCluster
from aspen.storage.etcd import EtcdKeyValueStore
from aspen.storage.records import PutOp

pytestmark = pytest.mark.etcd

WRITERS = 8


@pytest.fixture
def cluster(tmp_path):
    c = EtcdCluster(tmp_path / "etcd", size=3)
    try:
        c.start(timeout=60)
        yield c
    finally:
        c.stop()


async def leader_index(cluster: EtcdCluster) -> int:
    store = await EtcdKeyValueStore.open(cluster.endpoints)
    try:
        for i, _ in enumerate(cluster.members):
            if not cluster.members[i].running():
                continue
            st = await store.pool.stubs(i).maintenance.Status(rpc.StatusRequest(), timeout=5)
            if st.leader == st.header.member_id:
                return i
    finally:
        await store.close()
    raise AssertionError("no leader")


async def write_until(store: EtcdKeyValueStore, writer: int, stop: asyncio.Event, acked: dict, acked_at: list) -> None:
    i = 0
    while not stop.is_set():
        key, value = f"f/{writer}/{i:06d}", f"{writer}:{i}".encode()
        if i % 5 == 4:  # batches fail over too
            await store.batch_write([PutOp(key, value), PutOp(key + "b", value)])
            acked[key + "b"] = value
        else:
            await store.put(key, value)
        acked[key] = value
        acked_at.append(time.monotonic())
        i += 1


@pytest.mark.parametrize("victim", ["connected", "leader"])
async def test_sigkill_member_while_writing(cluster: EtcdCluster, victim: str) -> None:
    store = await EtcdKeyValueStore.open(cluster.endpoints, request_timeout=2.0)
    watched: list = []
    start_rev = await store.current_revision() + 1
    acked: dict[str, bytes] = {}
    acked_at: list[float] = []
    stop = asyncio.Event()

    async def watch() -> None:
        async for ev in store.watch("f/", start_revision=start_rev):
            watched.append(ev)

    watcher = asyncio.ensure_future(watch())
    try:
        writers = [asyncio.ensure_future(write_until(store, w, stop, acked, acked_at)) for w in range(WRITERS)]
        await asyncio.sleep(1.0)
        index = store.pool.current if victim == "connected" else await leader_index(cluster)
        killed_at = time.monotonic()
        cluster.kill_member(index)
        await asyncio.sleep(5.0)  # election (~1 s) + in-flight requests timing out (2 s)
        after_kill = sum(1 for t in acked_at if t > killed_at)
        cluster.start_member(index)  # same data dir: it rejoins
        await asyncio.to_thread(cluster.wait_healthy, 60)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers), 30)  # no writer failed

        assert after_kill > 20, f"only {after_kill} writes were acknowledged after the kill"
        # every acknowledged write is readable
        for key, value in acked.items():
            kv = await store.get(key)
            assert kv is not None and kv.value == value, key
        # the watch resumed across the failover with no gap and no duplicate
        deadline = time.monotonic() + 20
        while len({e.kv.key for e in watched}) < len(acked) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        seen = [(e.revision, e.kv.key) for e in watched]
        assert seen == sorted(seen) and len(set(seen)) == len(seen)  # in order, nothing delivered twice
        assert {e.kv.key for e in watched} == set(acked)
        # a key has two events only when a put whose reply was lost was retried (same value)
        for e in watched:
            assert e.kv.value == acked[e.kv.key]
        assert len(watched) - len(acked) <= WRITERS * 2
    finally:
        stop.set()
        watcher.cancel()
        await store.close()

    # the restarted member caught up: read through it alone
    rejoined = await EtcdKeyValueStore.open(cluster.members[index].endpoint)
    try:
        found: dict[str, bytes] = {}
        token = None
        while True:
            page = await rejoined.scan("f/", limit=5_000, continuation=token)
            found.update((kv.key, kv.value) for kv in page.entries)
            if not page.is_truncated:
                break
            token = page.continuation_token
        assert found == acked
    finally:
        await rejoined.close()


async def test_writes_with_quorum_lost_fail_with_a_clear_code_not_a_hang(cluster: EtcdCluster) -> None:
    from aspen.errors import AspenError, ErrorCode

    store = await EtcdKeyValueStore.open(cluster.endpoints, request_timeout=1.0, failover_timeout=3.0)
    try:
        await store.put("q/a", b"1")
        cluster.kill_member(1)
        cluster.kill_member(2)
        t0 = time.monotonic()
        with pytest.raises(AspenError) as err:
            await store.put("q/b", b"2")
        assert err.value.code == ErrorCode.STORAGE_UNAVAILABLE, err.value.message
        assert time.monotonic() - t0 < 10
        with pytest.raises(AspenError) as err:
            await store.compare_and_swap("q/a", b"1", b"3")
        assert err.value.code == ErrorCode.STORAGE_UNAVAILABLE, err.value.message
    finally:
        await store.close()
