"""Announcements between real clusters over HTTP: pushed each interval,
pulled on demand, relayed onward; forged, replayed, older, expired,
oversized and malformed ones are refused and counted."""

from __future__ import annotations

import asyncio
import os
import re
import time

import httpx
import msgspec
import pytest

from aspen.client import SyncClient
from aspen.clock import now_ms
from aspen.federation.announcements import (
    ANNOUNCE_DOMAIN,
    ClusterAnnouncement,
    SignedAnnouncement,
)
from aspen.federation.apps import AppManifest
from aspen.federation.identity import ClusterIdentity, canonical
from tests.federation.conftest import cluster, install_echo
from tests.node.node_process import free_port

INTERVAL = 0.4


def peers_of(client: SyncClient) -> dict[str, dict]:
    return {p["name"]: p for p in client.call("FederationPeers", {})["peers"]}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_apps_travel_and_disappear_within_two_intervals(tmp_path, clusters):
    pa, pb, pc = free_port(), free_port(), free_port()
    url = "http://127.0.0.1:{}".format
    common = f"announce_interval = {INTERVAL}\n"
    a = clusters.enter_context(cluster(tmp_path, "a", common + f'peers = ["{url(pb)}"]', port=pa))
    b = clusters.enter_context(cluster(tmp_path, "b", common + f'peers = ["{url(pa)}", "{url(pc)}"]', port=pb))
    c = clusters.enter_context(cluster(tmp_path, "c", common + f'peers = ["{url(pb)}"]', port=pc))
    with SyncClient(a.url) as ca, SyncClient(b.url) as cb, SyncClient(c.url) as cc:
        a_key = ca.call("ClusterIdentity", {})["identity"]["document"]["cluster_key"]
        cb.call("TrustCluster", {"cluster_key": a_key})  # B relays only to clusters it trusts
        install_echo(cc)
        # C's announcement reaches A only through B, which relays it
        seen = wait_for(lambda: (peers_of(ca).get("c") or {"apps": []})["apps"] and peers_of(ca)["c"], 10, "echo at A")
        assert [app["app_id"] for app in seen["apps"]] == ["echo"] and seen["via"].startswith("push:")
        assert "b" in peers_of(ca)
        cc.call("PluginDisable", {"name": "echo"})
        gone_at = time.monotonic()
        wait_for(lambda: peers_of(ca).get("c", {"apps": [1]})["apps"] == [], 2 * INTERVAL + 2.0, "echo gone at A")
        assert time.monotonic() - gone_at <= 2 * INTERVAL + 2.0
        # pull on demand
        result = cb.call("FederationRefresh", {})
        assert len(result["pulled"]) == 2 and result["errors"] == []


def test_peers_rpcs_need_cluster_admin(tmp_path, clusters):
    a = clusters.enter_context(cluster(tmp_path, "a"))
    with SyncClient(a.url) as admin:
        weak = admin.call("TokenCreate", {"rights": [{"operation": "kv:read", "resource": "x/"}]})["token"]
    for rtype in ("FederationPeers", "FederationRefresh"):
        with SyncClient(a.url, token=weak) as client, pytest.raises(Exception) as err:
            client.call(rtype, {})
        assert err.value.code == "UNAUTHORIZED"
        with SyncClient(a.url, token="") as client, pytest.raises(Exception) as err:
            client.call(rtype, {})
        assert err.value.code == "UNAUTHENTICATED"


def signed(identity: ClusterIdentity, **changes) -> bytes:
    now = now_ms()
    fields = {"name": "mallory", "node_urls": ("http://127.0.0.1:1",), "apps": (AppManifest("echo", "1.0.0"),)}
    fields |= {"issued_at_ms": now, "expires_at_ms": now + 60_000, "hlc": now << 16}
    a = ClusterAnnouncement(cluster_key=identity.key_hex, **(fields | changes))
    return msgspec.json.encode(SignedAnnouncement(a, identity.sign(ANNOUNCE_DOMAIN, canonical(a))))


def test_hostile_announcements_are_refused_and_counted(tmp_path, clusters):
    node = clusters.enter_context(cluster(tmp_path, "a"))
    post = lambda raw, **kw: httpx.post(f"{node.url}/v1/federation/announce", content=raw, **kw)
    other = ClusterIdentity(os.urandom(32), "other")
    good = signed(other)
    assert post(good).status_code == 202
    replay = post(good)
    assert replay.status_code == 409 and replay.json()["body"]["code"] == "FEDERATION_ANNOUNCEMENT_STALE"
    older = post(signed(other, hlc=1))
    assert older.status_code == 409
    # forged: another key's signature over an announcement naming `other`
    impostor = ClusterIdentity(os.urandom(32), "impostor")
    forged = msgspec.json.decode(signed(impostor))
    forged["announcement"]["cluster_key"] = other.key_hex
    forged["announcement"]["hlc"] += 1 << 20
    r = post(msgspec.json.encode(forged))
    assert r.status_code == 401 and r.json()["body"]["code"] == "INVALID_SIGNATURE"
    expired = post(signed(ClusterIdentity(os.urandom(32), "x"), issued_at_ms=1000, expires_at_ms=2000))
    assert expired.status_code == 410 and expired.json()["body"]["code"] == "FEDERATION_ANNOUNCEMENT_EXPIRED"
    big = post(b"{" + b" " * 5000 + b"}")
    assert big.status_code == 413 and big.json()["body"]["code"] == "MESSAGE_TOO_LARGE"
    chunked = post(iter([b"[" * 3000, b"]" * 3000]))  # no Content-Length: counted as it streams
    assert chunked.status_code == 413
    for bad in (
        b"not json",
        b"[" * 2000 + b"]" * 2000,
        b"{}",
        msgspec.json.encode({"announcement": {}, "signature": 1}),
    ):
        r = post(bad)
        assert r.status_code == 400 and r.json()["body"]["code"] == "FEDERATION_ANNOUNCEMENT_INVALID", bad[:20]
    too_many = post(
        signed(ClusterIdentity(os.urandom(32), "y"), apps=tuple(AppManifest(f"a{i}", "1") for i in range(33)))
    )
    assert too_many.status_code in (400, 413)
    assert post(good, headers={"x-aspen-hops": "-1"}).status_code == 400
    metrics = httpx.get(f"{node.url}/metrics").text
    for outcome in ("accepted", "replayed", "stale", "forged", "expired", "oversized", "invalid"):
        assert re.search(rf'aspen_federation_announcements_total{{outcome="{outcome}"}} [1-9]', metrics), outcome

    # a flood from one sender is cut off before anything is decoded
    async def flood() -> list[int]:  # concurrent, so a slow machine cannot pace it under the refill rate
        async with httpx.AsyncClient(base_url=node.url) as http:
            posts = [http.post("/v1/federation/announce", content=b"x") for _ in range(150)]
            return [r.status_code for r in await asyncio.gather(*posts)]

    codes = asyncio.run(flood())  # burst 30, then 10/s
    assert codes.count(429) >= 50, codes

    # nor does naming another address in X-Forwarded-For buy a fresh per-sender bucket
    async def spoofed_flood() -> list[int]:
        async with httpx.AsyncClient(base_url=node.url) as http:
            posts = [
                http.post(
                    "/v1/federation/announce", content=b"x", headers={"x-forwarded-for": f"10.9.{i // 256}.{i % 256}"}
                )
                for i in range(150)
            ]
            return [r.status_code for r in await asyncio.gather(*posts)]

    time.sleep(2.5)  # the global bucket (200, 100/s) refills; this sender's (30, 10/s) only partly
    codes = asyncio.run(spoofed_flood())
    assert codes.count(429) >= 50, codes
    # the node's own announcement is served, signed and under 4 KiB
    own = httpx.get(f"{node.url}/v1/federation/announcement")
    assert own.status_code in (200, 429)
