"""Fixtures for the plugin tests: every plugin is built from source once per
session, and each test gets a real SQLite KV store and blob directory."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.plugins.build import REPO, build_all
from aspen.plugins.host import PluginHost
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.rules import parse_manifest

PLUGINS = REPO / "plugins"


@pytest.fixture(scope="session")
def built() -> Path:
    build_all(REPO)
    return PLUGINS


def plugin_files(built: Path, rel: str) -> tuple[PluginManifest, bytes]:
    d = built / rel
    return parse_manifest((d / "plugin.json").read_bytes()), (d / "plugin.wasm").read_bytes()


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
async def host(kv, blobs, signing_key):
    h = PluginHost(kv=kv, blobs=blobs, signing_key=signing_key, node_info={"node_id": "node-1", "cluster": "test"})
    yield h
    await h.close()


@pytest.fixture
def load(host, built):
    """``await load("echo", **manifest_overrides)`` loads a shipped plugin."""

    async def _load(rel: str, **overrides):
        manifest, wasm = plugin_files(built, rel)
        if overrides:
            manifest = msgspec.structs.replace(manifest, **overrides)
        return await host.load(manifest, wasm)

    return _load
