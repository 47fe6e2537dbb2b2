"""Three real nodes on etcd + SeaweedFS: what one node stores, every node serves, from the
object store (no node keeps a copy of its own)."""

from __future__ import annotations

import httpx
import msgspec
import pytest
from blake3 import blake3
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.client import SyncClient
from aspen.errors import AspenError, ErrorCode
from aspen.plugins import requests as r
from aspen.plugins.signing import public_key_hex
from tests.blobs.conftest import pseudo_random
from tests.lifecycle.conftest import signed, vers_manifest
from tests.lifecycle.test_two_nodes import version_on, wait_for_version
from tests.node.node_process import NodeProcess


def local_objects(node: NodeProcess) -> list:
    return sorted((node.data_dir / "blobs" / "objects").glob("*/*"))


def test_blob_and_plugin_added_on_node1_are_served_by_node3(
    tmp_path, etcd_cluster, etcd_store, blob_store_url, modules
):
    args = ("--etcd", ",".join(etcd_cluster.endpoints), "--blob-store", blob_store_url)
    n1, n2, n3 = (NodeProcess(tmp_path / name, *args) for name in ("n1", "n2", "n3"))
    with n1, n2, n3, SyncClient(n1.url) as c1, SyncClient(n3.url) as c3:
        data = pseudo_random(3 * 256 * 1024 + 77)
        h = c1.add_blob(data).hash
        assert h == blake3(data).hexdigest()
        got = c3.get_blob(h)
        assert got.was_found and got.data == data
        # a ranged read through node 3's HTTP route: a ranged GET on the bucket, verified
        resp = httpx.get(f"{n3.url}/v1/blobs/{h}", headers={**n3.auth_headers, "range": "bytes=300000-300099"})
        assert resp.status_code == 206 and resp.content == data[300000:300100]
        big = tmp_path / "big.bin"
        big.write_bytes(pseudo_random(12 << 20, seed=b"big"))
        up = c1.upload_blob(big)  # PUT /v1/blobs streams into a multipart upload
        out = tmp_path / "out.bin"
        c3.download_blob(up.hash, out)
        assert out.read_bytes() == big.read_bytes()
        # tags are cluster state: protected through node 1, refused for deletion on node 3
        c1.protect_blob(h, "keep")
        assert {b.hash: b.tags for b in c3.list_blobs().blobs}[h] == ["keep"]
        with pytest.raises(AspenError) as exc:
            c3.delete_blob(h)
        assert exc.value.code == ErrorCode.BLOB_PROTECTED

        author = Ed25519PrivateKey.generate()
        c1.call("PluginTrustAdd", {"pubkey": public_key_hex(author)})
        wasm = modules["1.0.0"]
        body = r.PluginInstall(manifest=signed(author, vers_manifest("1.0.0"), wasm), wasm=wasm)
        result = c1.call("PluginInstall", msgspec.to_builtins(body, builtin_types=(bytes,)))
        assert result["status"]["state"] == "ready", result
        assert version_on(c1) == "1.0.0"
        wait_for_version(c3, "1.0.0", timeout=20)
        assert c3.has_blob(blake3(wasm).hexdigest()).does_exist
        for node in (n1, n2, n3):
            assert local_objects(node) == []  # every byte came from the bucket
