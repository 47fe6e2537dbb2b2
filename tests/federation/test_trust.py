"""Trust: trusted / public / blocked, trust requests that expire, and the
RPCs and route that change them, against real clusters."""

from __future__ import annotations

import json
import os
import subprocess

import httpx
import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.identity import ClusterIdentity
from aspen.federation.requests import FEDERATION_REQUESTS
from aspen.federation.trust import (
    MAX_PENDING,
    PENDING_PREFIX,
    PendingRequest,
    TrustStore,
)
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.federation.conftest import cluster
from tests.federation.test_announcements import peers_of, signed, wait_for
from tests.node.node_process import ASPEN, free_port

ADMIN_TYPES = ["FederationPeers", "FederationRefresh", "TrustCluster", "UntrustCluster", "BlockCluster",
               "FederationRequests", "AcceptTrust", "RejectTrust", "RequestTrust"]  # fmt: skip


def key_of(client: SyncClient) -> str:
    return client.call("ClusterIdentity", {})["identity"]["document"]["cluster_key"]


def cli(*args: str) -> dict:
    out = subprocess.run([ASPEN, *args, "--json"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_trust_block_untrust_and_requests(tmp_path, clusters):
    pa, pb = free_port(), free_port()
    a = clusters.enter_context(
        cluster(tmp_path, "a", f'announce_interval = 0.3\npeers = ["http://127.0.0.1:{pb}"]', port=pa)
    )
    b = clusters.enter_context(
        cluster(tmp_path, "b", f'announce_interval = 0.3\npeers = ["http://127.0.0.1:{pa}"]', port=pb)
    )
    with SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        ka, kb = key_of(ca), key_of(cb)
        assert wait_for(lambda: peers_of(ca).get("b"), 10, "B at A")["trust"] == "public"
        # A asks B for trust; B's admin sees, accepts
        assert ca.call("RequestTrust", {"url": b.url, "message": "hello"})["status"] == "pending"
        [req] = cli("federation", "requests", "--url", b.url)["requests"]
        assert req["cluster_key"] == ka and req["message"] == "hello" and req["name"] == "a"
        entry = cli("federation", "accept", ka, "--app", "echo", "--url", b.url)["entry"]
        assert entry["level"] == "trusted" and entry["apps"] == ["echo"]
        assert ca.call("RequestTrust", {"url": b.url})["status"] == "trusted"
        assert cb.call("FederationRequests", {})["requests"] == []
        with pytest.raises(AspenError) as err:
            cb.call("RejectTrust", {"cluster_key": ka})
        assert err.value.code == "FEDERATION_CLUSTER_UNKNOWN"
        # B blocks A: A's announcements and trust requests are refused, A vanishes from B's view
        assert cli("federation", "block", ka, "--url", b.url)["entry"]["level"] == "blocked"
        assert peers_of(cb)["a"]["trust"] == "blocked" and peers_of(cb)["a"]["apps"] == []
        with pytest.raises(AspenError) as err:
            ca.call("RequestTrust", {"url": b.url})
        assert err.value.code == "FEDERATION_CLUSTER_BLOCKED"
        wait_for(lambda: 'outcome="blocked"' in httpx.get(f"{b.url}/metrics").text, 10, "blocked announcements counted")
        assert peers_of(cb)["a"].get("expires_at_ms") == 0
        # untrust: public again, announcements taken again
        assert cli("federation", "untrust", ka, "--url", b.url)["removed"] is True
        assert wait_for(lambda: peers_of(cb).get("a", {}).get("expires_at_ms"), 10, "A back at B")
        assert peers_of(cb)["a"]["trust"] == "public"
        # trust directly with a scope; the peers table shows it
        cli("federation", "trust", ka, "--caller", "alice", "--url", b.url)
        assert peers_of(cb)["a"]["trust"] == "trusted"
        text = subprocess.run(
            [ASPEN, "federation", "peers", "--url", b.url], capture_output=True, text=True, check=False
        )
        assert "trusted" in text.stdout and kb[:16] not in text.stdout


def test_trust_rpcs_refuse_strangers_and_bad_input(tmp_path, clusters):
    a = clusters.enter_context(cluster(tmp_path, "a"))
    with SyncClient(a.url) as admin:
        weak = admin.call("TokenCreate", {"rights": [{"operation": "plugin:call", "resource": "*"}]})["token"]
        for rtype in ADMIN_TYPES:
            assert rtype in FEDERATION_REQUESTS
            for token, code in (("", "UNAUTHENTICATED"), (weak, "UNAUTHORIZED")):
                with SyncClient(a.url, token=token) as c, pytest.raises(AspenError) as err:
                    c.call(rtype, {"cluster_key": "0" * 64, "url": "http://127.0.0.1:1"})
                assert err.value.code == code, rtype
        for body, code in (
            ({"cluster_key": "ABC"}, "INVALID_ARGUMENT"),
            ({"cluster_key": "0" * 64, "notes": "n" * 2000}, "INVALID_ARGUMENT"),
            ({"cluster_key": "0" * 64, "apps": []}, "INVALID_ARGUMENT"),
            ({"cluster_key": "0" * 64, "callers": ["c"] * 65}, "INVALID_ARGUMENT"),
            ({"cluster_key": 7}, "VALIDATION_ERROR"),
            ({}, "VALIDATION_ERROR"),
            ({"cluster_key": "0" * 64, "apps": [[[[["x"]]]]]}, "VALIDATION_ERROR"),
        ):
            with pytest.raises(AspenError) as err:
                admin.call("TrustCluster", body)
            assert err.value.code == code, body
        with pytest.raises(AspenError) as err:
            admin.call("RequestTrust", {"url": "file:///etc/passwd"})
        assert err.value.code == "INVALID_ARGUMENT"
        with pytest.raises(AspenError) as err:
            admin.call("RequestTrust", {"url": f"http://127.0.0.1:{free_port()}"})
        assert err.value.code == "PEER_UNAVAILABLE"

    route = f"{a.url}/v1/federation/trust-request"
    other = ClusterIdentity(os.urandom(32), "other")
    forged = msgspec.to_builtins(other.signed_identity())
    forged["document"]["name"] = "mallory"
    r = httpx.post(route, json={"identity": forged})
    assert r.status_code == 401 and r.json()["body"]["code"] == "INVALID_SIGNATURE"
    assert httpx.post(route, content=b"x" * 5000).status_code == 413
    assert httpx.post(route, content=b"[" * 1000).json()["body"]["code"] == "BAD_REQUEST"
    long = httpx.post(route, json={"identity": msgspec.to_builtins(other.signed_identity()), "message": "m" * 2000})
    assert long.status_code == 400
    # an announcement route is not a trust-request route: shapes do not cross
    assert httpx.post(route, content=signed(other)).json()["body"]["code"] == "BAD_REQUEST"


async def test_pending_requests_expire_and_are_bounded(tmp_path):
    kv = await SqliteKeyValueStore.open(tmp_path / "kv.sqlite3")
    try:
        store = TrustStore(kv)
        first = ClusterIdentity(os.urandom(32), "first").signed_identity()
        assert await store.add_request(first, "hi") == "pending"
        old = PendingRequest(first, received_at_ms=1, message="hi")  # an hour and more ago
        await kv.put(PENDING_PREFIX + first.document.cluster_key, msgspec.json.encode(old))
        assert await store.pending() == []
        assert await kv.get(PENDING_PREFIX + first.document.cluster_key) is None  # pruned
        for i in range(MAX_PENDING):
            await store.add_request(ClusterIdentity(os.urandom(32), f"c{i}").signed_identity(), "")
        with pytest.raises(AspenError) as err:
            await store.add_request(ClusterIdentity(os.urandom(32), "one-too-many").signed_identity(), "")
        assert err.value.code == "QUOTA_EXCEEDED" and err.value.details["limit"] == MAX_PENDING
    finally:
        await kv.close()
