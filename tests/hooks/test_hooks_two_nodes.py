"""Hook events on two real nodes sharing one real etcd cluster: the hook
subscriber (the probe process plugin, installed once, running on both
nodes) gets each event exactly once from the cluster, not once per node.
Nothing is killed here: duplicates are allowed only across a failover."""

from __future__ import annotations

import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from tests.etcd_fixtures import etcd_store  # noqa: F401
from tests.hooks.real_nodes import config, install, until
from tests.hooks.test_plugin_hooks import kv_events, probe
from tests.node.node_process import NodeProcess

pytestmark = pytest.mark.etcd
WRITES = 200


def serving(client: SyncClient) -> bool:
    try:
        client.call("ProbeXEvents", {})
        return True
    except AspenError:
        return False


def test_each_event_is_delivered_once_by_the_cluster(home, etcd_cluster, etcd_store):  # noqa: F811
    endpoints = ",".join(etcd_cluster.endpoints)
    nodes = [
        NodeProcess(home / f"data-{n}", "--etcd", endpoints, "--config", config(home, n), "--allow-unsigned-plugins")
        for n in ("a", "b")
    ]
    with nodes[0], nodes[1], SyncClient(nodes[0].url) as a, SyncClient(nodes[1].url) as b:
        install(nodes[0], probe(home, "probe-x", "ProbeX", ["px:"], "hooks.kv.>"), home)
        until(lambda: serving(a) and serving(b), what="the probe serving on both nodes")
        written = set()
        for i in range(WRITES):  # through both nodes
            key = f"px:{i % 7}"
            written.add((key, (a if i % 2 else b).write_key(key, f"v{i}".encode()).revision))
        last = a.write_key("px:last", b"end").revision  # delivered in revision order: after every one above

        def delivered() -> list[list[dict]] | None:
            got = [kv_events(a, "ProbeX"), kv_events(b, "ProbeX")]
            return got if any(e["key"] == "px:last" for events in got for e in events) else None

        per_node = until(delivered, what="the last write delivered")
        events = [(e["key"], e["revision"]) for node_events in per_node for e in node_events]
        assert len(events) == len(set(events)), "an event was delivered twice"
        assert set(events) == written | {("px:last", last)}
        assert sorted(len(e) for e in per_node) == [0, WRITES + 1]  # one node delivered, the other none
        stats = a.call("ProbeXCall", {"method": "hook_list"})["ok"]
        assert stats["dropped"] == 0 and stats["failed"] == 0, stats
