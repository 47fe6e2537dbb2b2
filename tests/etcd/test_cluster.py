"""Membership, etcd status, ``aspen cluster status``, ``aspen dev cluster``
and node-level faults, on real etcd and real node subprocesses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import msgspec
import pytest

from aspen.client import Client
from aspen.cluster.dev_cluster import DevCluster
from aspen.cluster.etcd_launcher import free_port
from aspen.cluster.etcd_status import etcd_cluster_status
from aspen.cluster.membership import NodeRegistration, list_nodes, node_key
from aspen.storage.etcd import EtcdKeyValueStore

pytestmark = pytest.mark.etcd
ASPEN = [sys.executable, "-c", "from aspen.cli.main import app; app()"]


async def test_registration_lists_refreshes_and_deregisters(etcd_store: EtcdKeyValueStore) -> None:
    reg = NodeRegistration(etcd_store, "n1", "http://127.0.0.1:1", "0.1.0", ttl=3)
    await reg.start()
    try:
        [rec] = await list_nodes(etcd_store)
        assert (rec.node_id, rec.url, rec.version) == ("n1", "http://127.0.0.1:1", "0.1.0")
        first_seen = rec.last_seen
        await asyncio.sleep(2.5)  # past one refresh (ttl/3) and most of the TTL
        [rec] = await list_nodes(etcd_store)
        assert rec.last_seen > first_seen
        # the lease is lost (etcd revoked it): the next refresh registers again
        await etcd_store.lease_revoke(reg.lease_id)
        assert await list_nodes(etcd_store) == []
        deadline = time.monotonic() + 10
        while not await list_nodes(etcd_store):
            assert time.monotonic() < deadline, "did not re-register"
            await asyncio.sleep(0.2)
    finally:
        await reg.stop()
    assert await etcd_store.get(node_key("n1")) is None


async def test_a_node_that_stops_refreshing_drops_out_within_its_ttl(etcd_store: EtcdKeyValueStore) -> None:
    reg = NodeRegistration(etcd_store, "dying", "http://127.0.0.1:2", "0.1.0", ttl=2)
    await reg.start()
    reg._task.cancel()  # the process "dies": no keep-alive, no revoke
    t0 = time.monotonic()
    while await list_nodes(etcd_store):
        assert time.monotonic() - t0 < 8, "dead node still listed"
        await asyncio.sleep(0.2)


async def test_malformed_records_are_ignored(etcd_store: EtcdKeyValueStore) -> None:
    await etcd_store.put(node_key("junk"), b"{not json")
    assert await list_nodes(etcd_store) == []


async def test_etcd_status_names_members_health_and_leader(etcd_cluster, etcd_store: EtcdKeyValueStore) -> None:
    st = await etcd_cluster_status(etcd_store.pool)
    assert [m.name for m in st.members] == ["etcd0", "etcd1", "etcd2"]
    assert all(m.healthy and m.version.startswith("3.") for m in st.members)
    assert sum(m.is_leader for m in st.members) == 1 and st.leader in {"etcd0", "etcd1", "etcd2"}


def test_node_against_unreachable_etcd_fails_fast(tmp_path) -> None:
    t0 = time.monotonic()
    out = subprocess.run(
        [*ASPEN, "node", "start", "--data-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}",
         "--etcd", f"127.0.0.1:{free_port()},127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0
    assert "ETCD_UNREACHABLE" in out.stderr
    assert time.monotonic() - t0 < 20


def cli_json(*args: str) -> dict:
    out = subprocess.run([*ASPEN, *args, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.3)


async def test_three_nodes_on_etcd_status_failover_and_rejoin(tmp_path) -> None:
    dev = DevCluster(tmp_path / "dev", nodes=3)
    await asyncio.to_thread(dev.start)
    try:
        urls = ",".join(dev.urls)
        status = await asyncio.to_thread(cli_json, "cluster", "status", "--url", urls)
        assert status["backend"] == "etcd"
        assert sorted(n["url"] for n in status["nodes"]) == sorted(dev.urls)
        assert len(status["etcd"]["members"]) == 3 and all(m["healthy"] for m in status["etcd"]["members"])
        assert status["etcd"]["leader"]

        async with Client(dev.urls) as client:
            # a write through one node is read through another: one shared store
            await client.write_key("dev/a", b"1")
            async with Client(dev.urls[2]) as other:
                assert (await other.read_key("dev/a")).kv.value == b"1"

            # a blob added through one node is read by another from the dev cluster's SeaweedFS
            src = tmp_path / "blob.bin"
            src.write_bytes(os.urandom(3 << 20))
            async with Client(dev.urls[0]) as first, Client(dev.urls[1]) as second:
                added = await first.upload_blob(src)
                assert (await second.has_blob(added.hash)).does_exist
                out = tmp_path / "fetched.bin"
                assert await second.download_blob(added.hash, out) == src.stat().st_size
                assert out.read_bytes() == src.read_bytes()
                local = tmp_path / "dev" / "node1" / "blobs" / "objects"
                assert not any(local.glob("*/*")), "the bytes come from the bucket, not a node's copy"

            # SIGKILL the node the client uses: it fails over
            dev.members[0].process.send_signal(signal.SIGKILL)
            dev.members[0].process.wait()
            await client.write_key("dev/b", b"2")
            assert (await client.read_key("dev/b")).kv.value == b"2"

            # SIGKILL an etcd member: status reports it, the rest keep serving
            dev.etcd.kill_member(2)
            body = await client.call("ClusterStatus", {})
            health = {m["name"]: m["healthy"] for m in body["etcd"]["members"]}
            assert health == {"etcd0": True, "etcd1": True, "etcd2": False}
            await client.write_key("dev/c", b"3")

            # the node restarts on its data dir: same id, registered again
            old_id = (tmp_path / "dev" / "node0" / "node_id").read_text().strip()
            await asyncio.to_thread(dev.start_node, 0)
            await asyncio.to_thread(dev.wait_node, 0)

            async def registered() -> bool:
                body = await client.call("ClusterStatus", {})
                return any(n["node_id"] == old_id and n["url"] == dev.urls[0] for n in body["nodes"])

            await wait_for(registered, 20, "restarted node did not re-register")
            async with Client(dev.urls[0]) as first:
                assert (await first.read_key("dev/c")).kv.value == b"3"
    finally:
        await asyncio.to_thread(dev.stop)
    assert all(not n.running() for n in dev.members)
    assert all(not m.running() for m in dev.etcd.members)
    assert all(not p.running() for p in dev.seaweed.procs)


def test_dev_cluster_command_starts_and_stops_cleanly_on_sigterm(tmp_path) -> None:
    proc = subprocess.Popen(
        [*ASPEN, "dev", "cluster", "--nodes", "2", "--etcd-members", "1", "--base-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any(line.startswith("export ASPEN_URL=") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(lines)
            lines.append(proc.stdout.readline())
        urls = next(line for line in lines if line.startswith("export ASPEN_URL=")).split("=", 1)[1].strip()
        assert len(urls.split(",")) == 2
        status = msgspec.json.decode(
            subprocess.run(
                [*ASPEN, "cluster", "status", "--url", urls, "--json"], capture_output=True, timeout=60
            ).stdout
        )
        assert len(status["nodes"]) == 2
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, rest
        assert "stopped" in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # nothing left listening
    for url in urls.split(","):
        with pytest.raises(OSError):
            import urllib.request

            urllib.request.urlopen(url + "/healthz", timeout=1)
