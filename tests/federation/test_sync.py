"""Sync of opaque objects: pulled from a trusted cluster, every object
BLAKE3-verified, heads written last; a peer serving wrong bytes is refused;
the sync routes refuse unsigned, foreign, stale and untrusted requests."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from blake3 import blake3

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.identity import ClusterIdentity
from aspen.federation.sync import signed_headers
from tests.federation.conftest import cluster
from tests.federation.test_announcements import peers_of, signed, wait_for
from tests.federation.test_trust import key_of
from tests.node.node_process import ASPEN, free_port

OBJECTS = [b"tree one", b"commit two", os.urandom(100_000)]


def test_pull_verifies_and_writes_heads_last(tmp_path, clusters):
    pa, pc = free_port(), free_port()
    a = clusters.enter_context(
        cluster(tmp_path, "a", f'announce_interval = 0.3\npeers = ["http://127.0.0.1:{pc}"]', port=pa)
    )
    c = clusters.enter_context(
        cluster(tmp_path, "c", f'announce_interval = 0.3\npeers = ["http://127.0.0.1:{pa}"]', port=pc)
    )
    with SyncClient(a.url) as ca, SyncClient(c.url) as cc:
        ka, kc = key_of(ca), key_of(cc)
        hashes = cc.call("ResourcePublish", {"name": "repo", "objects": OBJECTS})["hashes"]
        assert hashes == [blake3(o).hexdigest() for o in OBJECTS]
        cc.call("ResourcePublish", {"name": "repo", "heads": {"refs/heads/main": hashes[1]}})
        wait_for(lambda: peers_of(ca).get("c"), 10, "C announced at A")
        with pytest.raises(AspenError) as err:  # A does not trust C yet
            ca.call("FederationSync", {"resource": "repo", "from_cluster": "c"})
        assert err.value.code == "UNAUTHORIZED"
        ca.call("TrustCluster", {"cluster_key": kc})
        with pytest.raises(AspenError) as err:  # C does not trust A and the resource is not public
            ca.call("FederationSync", {"resource": "repo", "from_cluster": "c"})
        assert err.value.code == "UNAUTHORIZED"
        cc.call("TrustCluster", {"cluster_key": ka})
        first = ca.call("FederationSync", {"resource": "repo", "from_cluster": kc})
        assert first["fetched"] == 3 and first["heads"] == {"refs/heads/main": hashes[1]}
        [res] = ca.call("ResourceList", {})["resources"]
        assert res["origin"] == kc and sorted(res["objects"]) == sorted(hashes) and res["heads"] == first["heads"]
        argv = [ASPEN, "federation", "sync", "repo", "--from", "c", "--url", a.url, "--json"]
        again = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout)
        assert again["fetched"] == 0 and again["skipped"] == 3
        # A's own resource of that name cannot be overwritten by another origin, and vice versa
        with pytest.raises(AspenError) as err:
            ca.call("ResourcePublish", {"name": "repo", "objects": [b"mine"]})
        assert err.value.code == "INVALID_STATE"

        # the routes: unsigned, foreign-audience, stale, untrusted, bad input
        path = "/v1/federation/sync/repo/heads"
        assert httpx.get(c.url + path).status_code == 401
        stranger = ClusterIdentity(os.urandom(32), "stranger")
        assert httpx.get(c.url + path, headers=signed_headers(stranger, kc, "GET", path)).status_code == 403
        a_like = ClusterIdentity(os.urandom(32), "x")
        forged = signed_headers(a_like, kc, "GET", path) | {"x-aspen-cluster": ka}
        assert httpx.get(c.url + path, headers=forged).json()["body"]["code"] == "INVALID_SIGNATURE"
        other_audience = signed_headers(stranger, "0" * 64, "GET", path)
        assert httpx.get(c.url + path, headers=other_audience).status_code == 401
        stale = signed_headers(stranger, kc, "GET", path) | {"x-aspen-time": "1000"}
        assert httpx.get(c.url + path, headers=stale).json()["body"]["code"] == "TOKEN_EXPIRED"
        for bad in ("/v1/federation/sync/..%2F/heads", "/v1/federation/sync/repo/objects?limit=99999",
                    "/v1/federation/sync/repo/object/zz", "/v1/federation/sync/nope/heads"):  # fmt: skip
            r = httpx.get(c.url + bad, headers=signed_headers(stranger, kc, "GET", bad))
            assert r.status_code in (400, 403, 404), bad


class WrongBytes(BaseHTTPRequestHandler):
    digest = blake3(b"the real object").hexdigest()

    def do_GET(self) -> None:
        if self.path.endswith("/heads"):
            body = json.dumps({"heads": {"main": self.digest}}).encode()
        elif "/objects" in self.path:
            body = json.dumps({"objects": [self.digest], "more": False}).encode()
        else:
            body = b"something else entirely"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_a_peer_serving_wrong_bytes_is_refused(tmp_path, clusters):
    a = clusters.enter_context(cluster(tmp_path, "a"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), WrongBytes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        evil = ClusterIdentity(os.urandom(32), "evil")
        raw = signed(evil, name="evil", node_urls=(f"http://127.0.0.1:{server.server_port}",), apps=())
        assert httpx.post(f"{a.url}/v1/federation/announce", content=raw).status_code == 202
        with SyncClient(a.url) as ca:
            ca.call("TrustCluster", {"cluster_key": evil.key_hex})
            with pytest.raises(AspenError) as err:
                ca.call("FederationSync", {"resource": "repo", "from_cluster": "evil"})
            assert err.value.code == "BLOB_CORRUPT"
            [res] = ca.call("ResourceList", {})["resources"]
            assert res["heads"] == {} and res["objects"] == []  # nothing of it kept
    finally:
        server.shutdown()
        server.server_close()
