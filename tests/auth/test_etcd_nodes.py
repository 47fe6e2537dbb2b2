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
    assert "revocation watch failed" not in b.log()  # seen through the watch, not by reloading after an error


def test_the_shared_root_key_is_never_readable(tmp_path, etcd_cluster, etcd_store):  # noqa: F811
    with NodeProcess(tmp_path / "a", "--etcd", ",".join(etcd_cluster.endpoints)) as a:
        admin = a.token  # holds cluster:admin: reserved space is readable to it, the secrets are not
        for secret in ("__auth:secret:root_key", "__federation:secret:cluster_key"):
            assert code_of(rpc(a, "ReadKey", {"key": secret}, token=admin)) == "RESERVED_KEY", secret
        assert code_of(rpc(a, "ScanKeys", {"prefix": "__federation:secret:"}, token=admin)) == "RESERVED_KEY"
        fed = [e["key"] for e in rpc(a, "ScanKeys", {"prefix": "__federation:"}, token=admin).json()["body"]["entries"]]
        assert not any(k.startswith("__federation:secret:") for k in fed)
        for prefix in ("__auth:secret:", "__auth:secret:root"):
            assert code_of(rpc(a, "ScanKeys", {"prefix": prefix}, token=admin)) == "RESERVED_KEY"
        keys = [e["key"] for e in rpc(a, "ScanKeys", {"prefix": "__auth:"}, token=admin).json()["body"]["entries"]]
        assert "__auth:cluster_id" in keys and not any(k.startswith("__auth:secret:") for k in keys)
        txn = {"conditions": [], "operations": [{"type": "range", "prefix": "__auth:"}]}
        ranged = rpc(a, "ConditionalBatchWrite", txn, token=admin).json()["body"]["results"][0]["kvs"]
        assert ranged and not any(e["key"].startswith("__auth:secret:") for e in ranged)
        compare = {"conditions": [{"key": "__auth:secret:root_key", "target": "exists"}], "operations": []}
        assert code_of(rpc(a, "ConditionalBatchWrite", compare, token=admin)) == "RESERVED_KEY"
        assert code_of(rpc(a, "BatchRead", {"keys": ["__auth:secret:root_key"]}, token=admin)) == "RESERVED_KEY"
