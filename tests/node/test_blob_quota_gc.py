"""Blob quotas from the node config, through both ways in (PUT /v1/blobs and
the AddBlob RPC), and the node's periodic GC of unprotected blobs."""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from aspen.plugins.build import REPO
from tests.blobs.conftest import pseudo_random
from tests.node.admin_token import auth_headers, envelope
from tests.node.node_process import NodeProcess

LIMIT = 200_000


def rpc(node, type_: str, body: dict) -> dict:
    r = httpx.post(f"{node.url}/v1/rpc", json=envelope(node.data_dir, type_, body), headers=auth_headers(node.data_dir))
    assert r.status_code < 500, r.text
    return r.json()


def add_blob(node, data: bytes, tag: str | None = None) -> dict:
    return rpc(node, "AddBlob", {"data": base64.b64encode(data).decode(), **({"tag": tag} if tag else {})})


def start_node(tmp_path, gc: str) -> NodeProcess:
    config = tmp_path / "aspen.toml"
    config.write_text(f"[blobs]\nmax_total_bytes = {LIMIT}\nmax_blob_bytes = 150000\n{gc}\n")
    return NodeProcess(tmp_path / "data", "--config", str(config)).start()


@pytest.fixture
def quota_node(tmp_path):
    node = start_node(tmp_path, "gc_interval_seconds = 0")  # no GC: the use must stay put
    yield node
    node.__exit__()


@pytest.fixture
def gc_node(tmp_path):
    node = start_node(tmp_path, "gc_interval_seconds = 0.2\ngc_grace_seconds = 1.0\n\n[plugins]\nallow_unsigned = true")
    yield node
    node.__exit__()


def test_the_total_quota_is_enforced_through_rpc_and_http(quota_node):
    first = add_blob(quota_node, pseudo_random(120_000, b"one"))
    assert first["type"] == "AddBlobResult", first
    refused = add_blob(quota_node, pseudo_random(100_000, b"two"))
    assert refused["type"] == "Error" and refused["body"]["code"] == "QUOTA_EXCEEDED", refused
    assert refused["body"]["details"] == {"quota": "max_total_bytes", "limit": LIMIT, "used": 120_000}
    r = httpx.put(
        f"{quota_node.url}/v1/blobs",
        content=pseudo_random(100_000, b"three"),
        headers=auth_headers(quota_node.data_dir),
    )
    assert r.status_code == 413, r.text
    body = r.json()["body"]
    assert body["code"] == "QUOTA_EXCEEDED" and body["details"]["quota"] == "max_total_bytes"
    assert body["details"]["limit"] == LIMIT and body["details"]["used"] == 120_000
    # the per-blob limit comes from the same table
    too_big = add_blob(quota_node, pseudo_random(150_001, b"four"))
    assert too_big["body"]["code"] == "BLOB_TOO_LARGE" and too_big["body"]["details"]["max"] == 150_000
    # re-adding a stored blob takes no room; what still fits is accepted
    again = add_blob(quota_node, pseudo_random(120_000, b"one"))
    assert again["type"] == "AddBlobResult" and not again["body"]["was_new"]
    assert add_blob(quota_node, pseudo_random(80_000, b"five"))["type"] == "AddBlobResult"


def test_gc_removes_old_unprotected_blobs_and_keeps_protected_ones(gc_node):
    echo = REPO / "plugins" / "echo"
    installed = rpc(gc_node, "PluginInstall", {
        "manifest": json.loads((echo / "plugin.json").read_text()),
        "wasm": base64.b64encode((echo / "plugin.wasm").read_bytes()).decode(),
    })  # fmt: skip
    assert installed["type"] == "PluginChangeResult", installed
    module = installed["body"]["wasm_hash"]
    kept = add_blob(gc_node, pseudo_random(1000, b"kept"), tag="test:keep")["body"]["hash"]
    doomed = add_blob(gc_node, pseudo_random(1000, b"doomed"))["body"]["hash"]
    deadline = time.monotonic() + 30
    while rpc(gc_node, "HasBlob", {"hash": doomed})["body"]["does_exist"]:
        assert time.monotonic() < deadline, "GC never removed the unprotected blob"
        time.sleep(0.2)
    assert rpc(gc_node, "HasBlob", {"hash": kept})["body"]["does_exist"]  # older than the one removed
    assert rpc(gc_node, "HasBlob", {"hash": module})["body"]["does_exist"]  # a plugin module is never collected
    assert rpc(gc_node, "Echo", {"hello": "after gc"}) == {"type": "Echo", "body": {"hello": "after gc"}}


def test_the_blobs_table_holds_quota_gc_and_object_store_keys_and_refuses_typos():
    from aspen.errors import AspenError
    from aspen.node.blob_gc import blobs_config
    from aspen.node.config import NodeConfig

    both = NodeConfig(sections={"blobs": {"backend": "s3", "bucket": "b", "max_total_bytes": 5, "gc_grace_seconds": 1}})
    assert blobs_config(both).max_total_bytes == 5
    with pytest.raises(AspenError) as err:
        blobs_config(NodeConfig(sections={"blobs": {"max_total_byte": 5}}))
    assert err.value.code == "INVALID_ARGUMENT" and "max_total_byte" in err.value.message
