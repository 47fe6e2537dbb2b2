"""Cluster identity: one Ed25519 key per cluster (0600 in the data dir),
a bounded name, a signed document with one encoding."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.config import federation_config
from aspen.federation.identity import IDENTITY_DOMAIN, SignedIdentity, canonical, verify
from tests.federation.conftest import cluster
from tests.node.node_process import ASPEN


def test_identity_is_signed_stable_and_kept_secret(tmp_path, clusters):
    node = clusters.enter_context(cluster(tmp_path, "alpha"))
    with SyncClient(node.url) as client:
        first = msgspec.convert(client.call("ClusterIdentity", {})["identity"], SignedIdentity)
    assert first.is_valid() and first.document.name == "alpha" and len(first.document.cluster_key) == 64
    key_file = node.data_dir / "federation" / "cluster.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    # deterministic encoding: decode and re-encode gives the bytes that were signed
    raw = canonical(first.document)
    assert canonical(msgspec.json.decode(raw, type=type(first.document))) == raw
    # a changed name no longer verifies under the old signature
    forged = msgspec.structs.replace(first.document, name="mallory")
    assert not verify(forged.cluster_key, IDENTITY_DOMAIN, canonical(forged), first.signature)
    # the key survives a restart; the CLI shows it
    node.terminate()
    node.start()
    out = subprocess.run(
        [ASPEN, "cluster", "identity", "--json", "--url", node.url], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    again = json.loads(out.stdout)
    assert again["identity"]["document"]["cluster_key"] == first.document.cluster_key and again["valid"] is True
    text = subprocess.run(
        [ASPEN, "cluster", "identity", "--url", node.url], capture_output=True, text=True, check=False
    )
    assert first.document.cluster_key in text.stdout and "valid" in text.stdout


def test_identity_needs_a_token(tmp_path, clusters):
    node = clusters.enter_context(cluster(tmp_path, "alpha"))
    with SyncClient(node.url, token="") as client, pytest.raises(AspenError) as err:
        client.call("ClusterIdentity", {})
    assert err.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "section, needle",
    [
        ({"name": "x" * 129}, "name must be 1-128 bytes"),
        ({"name": ""}, "name must be 1-128 bytes"),
        ({"peer": ["http://x"]}, "unknown field"),
        ({"proxy": {"max_hops": 99}}, "max_hops"),
        ({"announce_interval": 0}, "announce_interval"),
        ({"peers": "http://x"}, "Expected `array`"),
    ],
)
def test_bad_federation_config_is_a_clear_error(section, needle):
    with pytest.raises(AspenError) as err:
        federation_config({"federation": section})
    assert err.value.code == "INVALID_ARGUMENT" and needle in err.value.message
