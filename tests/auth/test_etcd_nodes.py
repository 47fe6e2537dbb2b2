"""Two real nodes on one etcd cluster share the root key: a token made
through one works on the other, and a revocation through one is honoured by
the other within a second."""

from __future__ import annotations

import time

import pytest

from aspen.client import SyncClient
from tests.auth.conftest import code_of, rpc
from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
from tests.node.node_process import NodeProcess

pytestmark = pytest.mark.etcd


def test_tokens_and_revocations_cross_nodes(tmp_path, etcd_cluster, etcd_store):  # noqa: F811
    endpoints = ",".join(etcd_cluster.endpoints)
    a = NodeProcess(tmp_path / "a", "--etcd", endpoints)
    b = NodeProcess(tmp_path / "b", "--etcd", endpoints)
    with a, b, SyncClient(a.url) as admin_a:
        assert (tmp_path / "a" / "admin.token").read_text() != (tmp_path / "b" / "admin.token").read_text()
        assert code_of(rpc(b, "Ping", token=a.token)) is None  # one cluster, one root key
        body = {"rights": [{"operation": "kv:read", "resource": "x/"}], "ttl_seconds": 600}
        token = admin_a.call("TokenCreate", body)["token"]
        assert code_of(rpc(b, "ReadKey", {"key": "x/1"}, token=token)) is None
        admin_a.call("TokenRevoke", {"token": token})
        revoked_at = time.monotonic()
        while code_of(rpc(b, "ReadKey", {"key": "x/1"}, token=token)) != "TOKEN_REVOKED":
            assert time.monotonic() - revoked_at < 1.0, "node b still accepts a token revoked through node a"
            time.sleep(0.02)
        print(f"revocation seen on the other node after {time.monotonic() - revoked_at:.3f} s")
