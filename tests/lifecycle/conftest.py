"""Fixtures for the lifecycle tests: the ``vers`` plugin compiled from
source in several versions (and one whose ``plugin_init`` refuses), a real
SQLite KV store and blob directory, a registry, and a signing author the
cluster trusts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aspen.plugins.admin import PluginAdmin
from aspen.plugins.build import REPO, compile_command
from aspen.plugins.manifest import PluginManifest, PluginPermissions
from aspen.plugins.reconciler import PluginReconciler
from aspen.plugins.signing import public_key_hex, sign_wasm
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry

TEMPLATE = Path(__file__).with_name("versioned_plugin.zig")
BUILD = REPO / "build" / "lifecycle"
# module key -> (guest name, version, plugin_init succeeds)
VARIANTS = {
    "1.0.0": ("vers", "1.0.0", True),
    "2.0.0": ("vers", "2.0.0", True),
    "3.0.0": ("vers", "3.0.0", False),
    "user": ("user", "1.0.0", True),
}


def build_variant(name: str, version: str, init_ok: bool) -> bytes:
    """Compile the template with its name, version and init result replaced; cached by source."""
    source = TEMPLATE.read_text().replace('"0.0.0"', f'"{version}"').replace('.name = "vers"', f'.name = "{name}"')
    if not init_ok:
        source = source.replace("const init_ok = true;", "const init_ok = false;")
    out_dir = BUILD / f"{name}-{version}-{'ok' if init_ok else 'fail'}"
    out_dir.mkdir(parents=True, exist_ok=True)
    src, wasm = out_dir / "plugin.zig", out_dir / "plugin.wasm"
    sdk = REPO / "sdk" / "zig"
    fresh = (
        wasm.exists()
        and src.exists()
        and src.read_text() == source
        and wasm.stat().st_mtime > (sdk / "aspen.zig").stat().st_mtime
    )
    if not fresh:
        src.write_text(source)
        result = subprocess.run(
            compile_command(src, wasm, sdk, REPO / "build" / "zig-cache"), capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
    return wasm.read_bytes()


@pytest.fixture(scope="session")
def modules() -> dict[str, bytes]:
    return {key: build_variant(*variant) for key, variant in VARIANTS.items()}


def vers_manifest(version: str, **overrides) -> PluginManifest:
    base = PluginManifest(
        name="vers",
        version=version,
        handles=("VersionEcho",),
        priority=950,
        permissions=PluginPermissions(),
        description="answers with its own version",
    )
    return msgspec.structs.replace(base, **overrides) if overrides else base


@pytest.fixture
def author() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def signed(key: Ed25519PrivateKey, manifest: PluginManifest, wasm: bytes) -> PluginManifest:
    return msgspec.structs.replace(manifest, signature=sign_wasm(key, wasm))


async def start_reconciler(kv, blobs, registry=None, *, node_id="node-1", **kwargs) -> PluginReconciler:
    rec = PluginReconciler(
        kv=kv,
        blobs=blobs,
        registry=registry or HandlerRegistry(),
        node_id=node_id,
        drain_seconds=kwargs.pop("drain_seconds", 5.0),
        **kwargs,
    )
    await rec.start()
    return rec


@pytest.fixture
async def node(kv, blobs, author):
    """A reconciler on a fresh store that trusts ``author``, and its admin."""
    rec = await start_reconciler(kv, blobs)
    await rec.trust.add(public_key_hex(author), "test author")
    yield PluginAdmin(rec)
    await rec.stop()


async def ask(registry: HandlerRegistry, seq: int = 0):
    return await registry.dispatch(Request("VersionEcho", {"seq": seq}), RequestContext())
