"""The proxy tokens a forwarding cluster reuses: one per caller *token*,
request type, app and target; never valid past the caller's token; a revoked
caller token stops at once through the proxy, as directly; the cache is
bounded."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from http.server import ThreadingHTTPServer
from types import SimpleNamespace

import biscuit_auth as bz
import httpx
from prometheus_client import CollectorRegistry

import aspen.federation.proxy as proxy_module
from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.apps import AppManifest
from aspen.federation.config import FederationConfig
from aspen.federation.identity import ClusterIdentity
from aspen.federation.proxy import TOKEN_TTL, ProxyService
from aspen.rpc.handler import Request, RequestContext
from tests.federation.conftest import cluster, install_echo
from tests.federation.test_announcements import signed, wait_for
from tests.federation.test_proxy import PROXY, Recorder, call_error, has_echo
from tests.federation.test_trust import key_of
from tests.node.node_process import free_port

ECHO_RIGHT = [{"operation": "plugin:call", "resource": "echo"}]


def expiry_of(token: str, root: ClusterIdentity) -> float:
    """The epoch second in the token's ``check if time($t), $t < …``."""
    key = bz.PublicKey.from_bytes(bytes.fromhex(root.key_hex), bz.Algorithm.Ed25519)
    source = bz.Biscuit.from_base64(token, key).block_source(0)
    stamp = source.split("$t < ")[1].split(";")[0].strip()
    return dt.datetime.fromisoformat(stamp).timestamp()


async def service() -> ProxyService:
    """A ProxyService on a stub cluster: only what minting needs."""
    fed = SimpleNamespace(
        identity=ClusterIdentity(os.urandom(32), "a"),
        config=FederationConfig(),
        verify=True,
        node=SimpleNamespace(metrics=SimpleNamespace(registry=CollectorRegistry())),
    )
    return ProxyService(fed)


def outcome(client: SyncClient) -> str:
    try:
        client.call("Echo", {})
    except AspenError as exc:
        return exc.code
    return "ok"


def ctx(rid: str, expires: float = float("inf"), caller: str = "alice") -> RequestContext:
    """A caller's verified token (the parts the cache reads): ``rid`` its last block's revocation id."""
    facts = SimpleNamespace(revocation_ids=["ancestor", rid])
    return RequestContext(caller=caller, principal=SimpleNamespace(facts=facts, expires_epoch=expires))


async def test_reused_per_caller_token_never_past_its_expiry():
    svc = await service()
    try:
        echo = Request("Echo", {})
        first = svc._token("c" * 64, ctx("token-1"), echo, "echo")
        assert svc._token("c" * 64, ctx("token-1"), echo, "echo") == first  # a hit: C's verification cache hits too
        assert svc._token("c" * 64, ctx("token-2"), echo, "echo") != first  # same subject, another token
        assert svc._token("d" * 64, ctx("token-1"), echo, "echo") != first  # another target
        assert svc._token("c" * 64, ctx("token-1"), Request("EchoRead", {}), "echo") != first  # another type
        assert expiry_of(first, svc.fed.identity) <= time.time() + TOKEN_TTL
        # a caller token that expires in 5 s gets a proxy token that expires with it, reused no longer
        soon = time.time() + 5
        short = svc._token("c" * 64, ctx("short", soon), echo, "echo")
        assert expiry_of(short, svc.fed.identity) <= soon
        assert svc._sent_tokens[("c" * 64, "short", "Echo", "echo", 1)][0] <= soon
    finally:
        await svc.close()


async def test_the_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(proxy_module, "MAX_CACHED", 8)
    svc = await service()
    try:
        for i in range(50):
            svc._token("c" * 64, ctx(f"token-{i}"), Request("Echo", {}), "echo")
            assert len(svc._sent_tokens) <= 8
        assert ("c" * 64, "token-49", "Echo", "echo", 1) in svc._sent_tokens  # the newest stay
        assert ("c" * 64, "token-0", "Echo", "echo", 1) not in svc._sent_tokens
    finally:
        await svc.close()


def test_a_revoked_caller_token_stops_through_the_proxy_at_once(tmp_path, clusters):
    pa, pc = free_port(), free_port()
    a = clusters.enter_context(cluster(tmp_path, "a", f'peers = ["http://127.0.0.1:{pc}"]\n' + PROXY, port=pa))
    c = clusters.enter_context(cluster(tmp_path, "c", f'peers = ["http://127.0.0.1:{pa}"]\n', port=pc))
    with SyncClient(a.url) as ca, SyncClient(c.url) as cc:
        ca.call("TrustCluster", {"cluster_key": key_of(cc)})
        cc.call("TrustCluster", {"cluster_key": key_of(ca)})
        install_echo(cc)
        wait_for(lambda: ca.call("FederationRefresh", {}) is not None and has_echo(ca, "c"), 15, "C's echo at A")
        doomed = ca.call("TokenCreate", {"subject": "alice", "rights": ECHO_RIGHT})["token"]
        sibling = ca.call("TokenCreate", {"subject": "alice", "rights": ECHO_RIGHT})["token"]
        with SyncClient(a.url, token=doomed) as as_doomed, SyncClient(a.url, token=sibling) as as_sibling:
            for _ in range(3):  # the proxy token for it is cached now, at A and verified at C
                assert as_doomed.call("Echo", {"n": 1}) == {"n": 1}
            ca.call("TokenRevoke", {"token": doomed})
            # no wait: A authenticates the caller's token before any cached proxy token is used
            assert call_error(as_doomed, "Echo", {"n": 2}).code == "TOKEN_REVOKED"
            assert as_sibling.call("Echo", {"n": 3}) == {"n": 3}  # the same subject's other token goes on


def test_a_short_caller_token_gets_a_proxy_token_that_ends_with_it(tmp_path, clusters):
    a = clusters.enter_context(cluster(tmp_path, "a", PROXY))
    Recorder.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        remote = ClusterIdentity(os.urandom(32), "b-live")
        app = (AppManifest("echo", "1.0.0", request_types=("Echo",)),)
        raw = signed(remote, name=remote.name, node_urls=(f"http://127.0.0.1:{server.server_port}",), apps=app)
        assert httpx.post(f"{a.url}/v1/federation/announce", content=raw).status_code == 202
        with SyncClient(a.url) as ca:
            ca.call("TrustCluster", {"cluster_key": remote.key_hex})
            made = ca.call("TokenCreate", {"subject": "alice", "rights": ECHO_RIGHT, "ttl_seconds": 3})
            a_identity = SimpleNamespace(key_hex=key_of(ca))
        caller_expiry = time.time() + 3
        with SyncClient(a.url, token=made["token"]) as as_alice:
            assert as_alice.call("Echo", {}) == {"from": "recorder"}
            assert as_alice.call("Echo", {}) == {"from": "recorder"}
            first, second = (seen["envelope"]["token"] for seen in Recorder.seen)
            assert first == second  # reused
            assert expiry_of(first, a_identity) <= caller_expiry + 1  # whole seconds
            wait_for(lambda: outcome(as_alice) == "TOKEN_EXPIRED", 10, "the caller's token expired")
            sent = len(Recorder.seen)
            assert outcome(as_alice) == "TOKEN_EXPIRED" and len(Recorder.seen) == sent  # nothing leaves A now
            assert all(expiry_of(seen["envelope"]["token"], a_identity) <= caller_expiry + 1 for seen in Recorder.seen)
    finally:
        server.shutdown()
        server.server_close()
