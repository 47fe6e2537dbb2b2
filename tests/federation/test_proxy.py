"""Dispatch through another cluster: an app on C only answers a request
sent to A; the caller's token never leaves A; C's policy decides; blocked
and untrusted clusters are not used; loops stop at the hop limit; a dead
target falls back to the next, then to CAPABILITY_UNAVAILABLE in time."""

from __future__ import annotations

import re
import threading
import time
import typing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import biscuit_auth as bz
import httpx
import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.apps import AppManifest
from aspen.federation.identity import ClusterIdentity
from tests.federation.conftest import cluster, install_echo
from tests.federation.test_announcements import peers_of, signed, wait_for
from tests.federation.test_trust import key_of
from tests.node.node_process import free_port

PROXY = "[federation.proxy]\nenabled = true\n"


def has_echo(client: SyncClient, name: str) -> bool:
    peer = peers_of(client).get(name)
    return bool(peer and [a["app_id"] for a in peer["apps"]] == ["echo"])


def proxied(url: str, outcome: str) -> float:
    found = re.findall(
        rf'aspen_federation_proxied_total{{outcome="{outcome}",target="[^"]*"}} ([0-9.e+]+)',
        httpx.get(f"{url}/metrics").text,
    )
    return sum(map(float, found))


def call_error(client: SyncClient, *args, **kw) -> AspenError:
    with pytest.raises(AspenError) as err:
        client.call(*args, **kw)
    return err.value


def test_app_on_c_answers_through_a_with_c_policy(tmp_path, clusters):
    pa, pb, pc = free_port(), free_port(), free_port()
    u = "http://127.0.0.1:{}".format
    a = clusters.enter_context(
        cluster(tmp_path, "a", f'announce_interval = 0.3\npeers = ["{u(pb)}"]\n' + PROXY, port=pa)
    )
    b = clusters.enter_context(
        cluster(tmp_path, "b", f'announce_interval = 0.3\npeers = ["{u(pa)}", "{u(pc)}"]', port=pb)
    )
    c = clusters.enter_context(cluster(tmp_path, "c", f'announce_interval = 0.3\npeers = ["{u(pb)}"]', port=pc))
    with SyncClient(a.url) as ca, SyncClient(b.url) as cb, SyncClient(c.url) as cc:
        ka, kc = key_of(ca), key_of(cc)
        cb.call("TrustCluster", {"cluster_key": ka})  # B relays C's announcement to A
        ca.call("TrustCluster", {"cluster_key": kc})
        cc.call("TrustCluster", {"cluster_key": ka, "callers": ["alice"]})  # C serves only A's alice
        install_echo(cc)
        wait_for(lambda: has_echo(ca, "c"), 15, "C's echo announced at A (through B)")
        assert "c" not in {p["name"] for p in cb.call("FederationPeers", {})["peers"] if p["trust"] == "trusted"}

        # C's policy refuses A's admin: the caller's identity travelled, not its token
        refused = call_error(ca, "Echo", {"x": 1})
        assert refused.code == "UNAUTHORIZED" and "admin" in refused.message
        alice = ca.call(
            "TokenCreate", {"subject": "alice", "rights": [{"operation": "plugin:call", "resource": "echo"}]}
        )
        with SyncClient(a.url, token=alice["token"]) as as_alice:
            assert as_alice.call("Echo", {"x": 1}) == {"x": 1}
            assert as_alice.call("Echo", {"y": 2}, app="echo@>=0.1,<1") == {"y": 2}
            assert call_error(as_alice, "Echo", {}, app="echo@>=2").code == "CAPABILITY_UNAVAILABLE"
        assert proxied(a.url, "ok") >= 2
        # a caller of A without plugin:call on the app is refused at A, nothing travels
        weak = ca.call("TokenCreate", {"subject": "alice", "rights": [{"operation": "kv:read", "resource": "x/"}]})
        with SyncClient(a.url, token=weak["token"]) as as_weak:
            assert call_error(as_weak, "Echo", {}).code == "UNAUTHORIZED"

        # untrusted (public) is not used without proxy.public; the refusal hints at C
        ca.call("UntrustCluster", {"cluster_key": kc})
        with SyncClient(a.url, token=alice["token"]) as as_alice:
            err = call_error(as_alice, "Echo", {})
            assert err.code == "CAPABILITY_UNAVAILABLE" and err.details["required_app"] == "echo"
            assert [h["name"] for h in err.details["hints"]] == ["c"] and err.details["hints"][0][
                "app_version"
            ] == "0.1.0"
            # blocked is never used (nor hinted at)
            ca.call("BlockCluster", {"cluster_key": kc})
            assert call_error(as_alice, "Echo", {}).code == "UNKNOWN_REQUEST"  # no one announces it any more
            err = call_error(as_alice, "Echo", {}, app="echo")
            assert err.code == "CAPABILITY_UNAVAILABLE" and err.details["hints"] == []


def test_a_loop_stops_at_the_hop_limit(tmp_path, clusters):
    pa, pb = free_port(), free_port()
    u = "http://127.0.0.1:{}".format
    slow = "announce_interval = 60\n"  # beliefs outlive the apps: the loop is possible
    a = clusters.enter_context(cluster(tmp_path, "a", slow + f'peers = ["{u(pb)}"]\n' + PROXY, port=pa))
    b = clusters.enter_context(cluster(tmp_path, "b", slow + f'peers = ["{u(pa)}"]\n' + PROXY, port=pb))
    with SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        ca.call("TrustCluster", {"cluster_key": key_of(cb)})
        cb.call("TrustCluster", {"cluster_key": key_of(ca)})
        install_echo(ca)
        install_echo(cb)
        wait_for(lambda: ca.call("AppList", {})["apps"] and cb.call("AppList", {})["apps"], 10, "echo on both")
        ca.call("FederationRefresh", {})
        cb.call("FederationRefresh", {})
        assert has_echo(ca, "b") and has_echo(cb, "a")
        ca.call("PluginDisable", {"name": "echo"})
        cb.call("PluginDisable", {"name": "echo"})
        started = time.monotonic()
        err = call_error(ca, "Echo", {})
        assert err.code == "CAPABILITY_UNAVAILABLE" and time.monotonic() - started < 10
        # it went round: A forwarded to B, B back to A, … until the hop limit (3)
        assert proxied(a.url, "unavailable") >= 1 and proxied(b.url, "unavailable") >= 1


class Recorder(BaseHTTPRequestHandler):
    seen: typing.ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        Recorder.seen.append({"headers": dict(self.headers), "envelope": msgspec.msgpack.decode(body)})
        reply = msgspec.msgpack.encode({"type": "Echo", "body": {"from": "recorder"}})
        self.send_response(200)
        self.send_header("content-type", "application/msgpack")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


def test_dead_target_falls_back_and_the_token_is_a_new_one(tmp_path, clusters):
    a = clusters.enter_context(cluster(tmp_path, "a", PROXY + "timeout = 3\n"))
    Recorder.seen.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dead, live = ClusterIdentity(bz_seed(), "a-dead"), ClusterIdentity(bz_seed(), "b-live")
        app = (AppManifest("echo", "1.0.0", request_types=("Echo",)),)
        for ident, url in ((dead, f"http://127.0.0.1:{free_port()}"), (live, f"http://127.0.0.1:{server.server_port}")):
            raw = signed(ident, name=ident.name, node_urls=(url,), apps=app)
            assert httpx.post(f"{a.url}/v1/federation/announce", content=raw).status_code == 202
        with SyncClient(a.url) as ca:
            for ident in (dead, live):
                ca.call("TrustCluster", {"cluster_key": ident.key_hex})
            assert ca.call("Echo", {"x": 1}) == {"from": "recorder"}
            [got] = Recorder.seen
            env = got["envelope"]
            assert env["proxy_hops"] == 1 and env["type"] == "Echo" and got["headers"]["x-aspen-cluster"] == key_of(ca)
            assert env["token"] != a.token and a.token not in repr(got)
            a_key = bz.PublicKey.from_bytes(bytes.fromhex(key_of(ca)), bz.Algorithm.Ed25519)
            source = bz.Biscuit.from_base64(env["token"], a_key).block_source(0)  # rooted in A's cluster key
            assert 'caller("admin")' in source and 'request_type("Echo")' in source and 'app("echo")' in source
            assert f'audience("{live.key_hex}")' in source and "check if time" in source
            assert proxied(a.url, "unreachable") >= 1 and proxied(a.url, "ok") >= 1
            server.shutdown()
            server.server_close()
            started = time.monotonic()
            err = call_error(ca, "Echo", {})
            assert err.code == "CAPABILITY_UNAVAILABLE" and time.monotonic() - started < 3 + 2
            assert sorted(h["name"] for h in err.details["hints"]) == ["a-dead", "b-live"]
    finally:
        server.server_close()


def bz_seed() -> bytes:
    import os

    return os.urandom(32)


def proxy_token(ident: ClusterIdentity, audience: str, rtype: str = "Echo", app: str = "echo", ttl: int = 30) -> str:
    import datetime as dt

    builder = bz.BiscuitBuilder("cluster({k}); caller({c});", {"k": ident.key_hex, "c": "mallory"})
    builder.add_check(bz.Check("check if request_type({t})", {"t": rtype}))
    builder.add_check(bz.Check("check if app({a})", {"a": app}))
    builder.add_check(bz.Check("check if audience({a})", {"a": audience}))
    expires = dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=ttl)
    builder.add_check(bz.Check("check if time($t), $t < {e}", {"e": expires}))
    return builder.build(ident.biscuit_root).to_base64()


def test_proxy_route_refuses_hostile_requests(tmp_path, clusters):
    c = clusters.enter_context(cluster(tmp_path, "c"))
    friend, stranger = ClusterIdentity(bz_seed(), "friend"), ClusterIdentity(bz_seed(), "stranger")
    with SyncClient(c.url) as cc:
        install_echo(cc)
        kc = key_of(cc)
        cc.call("TrustCluster", {"cluster_key": friend.key_hex, "apps": ["echo"]})
        blocked = ClusterIdentity(bz_seed(), "blocked")
        cc.call("BlockCluster", {"cluster_key": blocked.key_hex})
        wait_for(lambda: cc.call("AppList", {})["apps"], 10, "echo served")

    def send(origin: ClusterIdentity | None, env: dict, raw: bytes | None = None) -> httpx.Response:
        headers = {"content-type": "application/msgpack"}
        if origin is not None:
            headers["x-aspen-cluster"] = origin.key_hex
        return httpx.post(f"{c.url}/v1/federation/proxy", content=raw or msgspec.msgpack.encode(env), headers=headers)

    def env(token: str, rtype: str = "Echo", **kw) -> dict:
        return {"type": rtype, "body": {"x": 1}, "token": token, "proxy_hops": 1, **kw}

    def code(resp: httpx.Response) -> str:
        return msgspec.msgpack.decode(resp.content)["body"].get("code", "ok")

    ok = send(friend, env(proxy_token(friend, kc)))
    assert ok.status_code == 200 and msgspec.msgpack.decode(ok.content)["body"] == {"x": 1}
    assert code(send(None, env(proxy_token(friend, kc)))) == "UNAUTHENTICATED"
    assert code(send(friend, env(""))) == "UNAUTHENTICATED"
    assert code(send(stranger, env(proxy_token(stranger, kc)))) == "UNAUTHORIZED"  # not trusted, not public
    assert code(send(blocked, env(proxy_token(blocked, kc)))) == "FEDERATION_CLUSTER_BLOCKED"
    forged = send(friend, env(proxy_token(stranger, kc)))  # a trusted name, another key's signature
    assert forged.status_code == 401 and code(forged) == "INVALID_SIGNATURE"
    for token in (
        proxy_token(friend, "0" * 64),
        proxy_token(friend, kc, rtype="EchoRead"),
        proxy_token(friend, kc, app="other"),
        proxy_token(friend, kc, ttl=-5),
    ):
        assert code(send(friend, env(token))) == "UNAUTHORIZED"
    assert code(send(friend, env(proxy_token(friend, kc, rtype="ReadKey"), "ReadKey"))) == "UNAUTHORIZED"  # core: never
    assert code(send(friend, env("not-a-biscuit"))) == "INVALID_SIGNATURE"
    assert send(friend, {}, raw=b"\xc1" * 100).status_code == 400
    assert send(friend, {}, raw=b"\x91" * 5000).status_code == 400  # deeply nested msgpack
    assert send(friend, {}, raw=b"x" * (5 << 20)).status_code == 413
    bad_key = httpx.post(f"{c.url}/v1/federation/proxy", content=b"{}", headers={"x-aspen-cluster": "zz"})
    assert bad_key.status_code == 401


def test_an_untrusted_cluster_is_used_only_in_public_mode(tmp_path, clusters):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stranger = ClusterIdentity(bz_seed(), "stranger")
        app = (AppManifest("echo", "1.0.0", request_types=("Echo",)),)
        raw = signed(stranger, name="stranger", node_urls=(f"http://127.0.0.1:{server.server_port}",), apps=app)
        closed = clusters.enter_context(cluster(tmp_path, "closed", PROXY))
        public = clusters.enter_context(cluster(tmp_path, "open", PROXY + "public = true\n"))
        for node in (closed, public):
            assert httpx.post(f"{node.url}/v1/federation/announce", content=raw).status_code == 202
        Recorder.seen.clear()
        with SyncClient(closed.url) as c:
            assert call_error(c, "Echo", {}).code == "CAPABILITY_UNAVAILABLE" and Recorder.seen == []
        with SyncClient(public.url) as c:
            assert c.call("Echo", {}) == {"from": "recorder"} and len(Recorder.seen) == 1
            c.call("BlockCluster", {"cluster_key": stranger.key_hex})
            assert call_error(c, "Echo", {}, app="echo").code == "CAPABILITY_UNAVAILABLE" and len(Recorder.seen) == 1
    finally:
        server.shutdown()
        server.server_close()
