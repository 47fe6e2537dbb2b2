"""On etcd every node of a cluster signs with one cluster key (kept in
``__federation:``, created once) and lists the same apps."""

from __future__ import annotations

import time

import pytest

from aspen.client import SyncClient
from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
from tests.federation.conftest import install_echo
from tests.federation.test_trust import key_of
from tests.node.node_process import NodeProcess

pytestmark = pytest.mark.etcd


def test_nodes_share_the_cluster_key_and_the_app_list(tmp_path, etcd_cluster, etcd_store):  # noqa: F811
    endpoints = ",".join(etcd_cluster.endpoints)
    a = NodeProcess(tmp_path / "a", "--etcd", endpoints, "--allow-unsigned-plugins")
    b = NodeProcess(tmp_path / "b", "--etcd", endpoints, "--allow-unsigned-plugins")
    with a, b, SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        assert key_of(ca) == key_of(cb)
        assert not (tmp_path / "a" / "federation" / "cluster.key").exists()  # in etcd, not on disk
        install_echo(ca)
        deadline = time.monotonic() + 20
        while True:
            apps = cb.call("AppList", {})["apps"]
            if apps and len(apps[0]["nodes"]) == 2:
                break
            assert time.monotonic() < deadline, f"both nodes never listed echo: {apps}"
            time.sleep(0.1)
        assert apps[0]["app_id"] == "echo" and ca.call("AppList", {})["apps"] == apps
