"""Two real nodes on one etcd cluster, each with its own data directory and
blob store: an install through one is served by the other, which fetches
the module from its peer by hash (the Rust original never moved the bytes)."""

from __future__ import annotations

import time

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.client import SyncClient
from aspen.plugins import requests as r
from aspen.plugins.signing import public_key_hex
from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
from tests.lifecycle.conftest import signed, vers_manifest
from tests.lifecycle.test_two_nodes import version_on, wait_for_version
from tests.node.node_process import NodeProcess

pytestmark = pytest.mark.etcd


def test_install_on_one_etcd_node_is_served_by_the_other(tmp_path, etcd_cluster, etcd_store, modules):  # noqa: F811
    endpoints = ",".join(etcd_cluster.endpoints)
    author = Ed25519PrivateKey.generate()
    a = NodeProcess(tmp_path / "a", "--etcd", endpoints)
    b = NodeProcess(tmp_path / "b", "--etcd", endpoints)
    with a, b, SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        ca.call("PluginTrustAdd", {"pubkey": public_key_hex(author)})
        for version, via, other in (("1.0.0", ca, cb), ("2.0.0", cb, ca)):
            wasm = modules[version]
            body = r.PluginInstall(manifest=signed(author, vers_manifest(version), wasm), wasm=wasm)
            kind = "PluginInstall" if version == "1.0.0" else "PluginUpgrade"
            result = via.call(kind, msgspec.to_builtins(body, builtin_types=(bytes,)))
            assert result["status"]["state"] == "ready", result
            assert version_on(via) == version
            assert wait_for_version(other, version, timeout=15) < 15
        assert not (tmp_path / "b" / "blobs").samefile(tmp_path / "a" / "blobs")
        started = time.monotonic()
        info = ca.call("PluginInfo", {"name": "vers"})
        while sorted(s["version"] for s in info["nodes"]) != ["2.0.0", "2.0.0"]:
            assert time.monotonic() - started < 10, info["nodes"]
            time.sleep(0.2)
            info = ca.call("PluginInfo", {"name": "vers"})
