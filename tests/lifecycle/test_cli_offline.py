"""``aspen plugin`` commands that need no node: keys, signing, verifying,
and how install builds its manifest from plugin.json and flags."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aspen.cli.main import app
from aspen.cli.plugin_files import build_manifest
from aspen.errors import AspenError, ErrorCode

runner = CliRunner()


def aspen(*args: str, env: dict):
    return runner.invoke(app, ["plugin", *args], env=env)


@pytest.fixture
def env(tmp_path):
    return {"XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_keygen_sign_verify(tmp_path, env, modules):
    out = aspen("keygen", env=env)
    assert out.exit_code == 0, out.output
    pub = out.output.strip().splitlines()[-1]
    assert len(pub) == 64
    assert aspen("keygen", env=env).exit_code == 1  # never overwrites

    wasm = tmp_path / "plugin.wasm"
    wasm.write_bytes(modules["1.0.0"])
    manifest = tmp_path / "plugin.json"
    manifest.write_text(json.dumps({"name": "vers", "version": "1.0.0", "handles": ["VersionEcho"]}))
    assert aspen("sign", str(wasm), "--manifest", str(manifest), env=env).exit_code == 0
    doc = json.loads(manifest.read_text())
    assert doc["signature"]["author_pubkey"] == pub and doc["name"] == "vers"

    ok = aspen("verify", str(wasm), "--manifest", str(manifest), "--author", pub, env=env)
    assert ok.exit_code == 0 and pub in ok.output
    other = aspen("verify", str(wasm), "--manifest", str(manifest), "--author", "ab" * 32, env=env)
    assert other.exit_code == 1 and ErrorCode.PLUGIN_SIGNATURE_INVALID in other.output
    wasm.write_bytes(modules["1.0.0"] + b"\x00")
    tampered = aspen("verify", str(wasm), "--manifest", str(manifest), env=env)
    assert tampered.exit_code == 1 and ErrorCode.PLUGIN_HASH_MISMATCH in tampered.output
    manifest.write_text(json.dumps({"name": "vers"}))
    unsigned = aspen("verify", str(wasm), "--manifest", str(manifest), env=env)
    assert unsigned.exit_code == 1 and ErrorCode.PLUGIN_SIGNATURE_MISSING in unsigned.output


def test_flags_override_the_manifest(tmp_path):
    manifest = tmp_path / "plugin.json"
    manifest.write_text(json.dumps({"name": "a", "version": "1.0.0", "handles": ["X"], "priority": 950}))
    flags = {"handles": ["Y", "Z"], "priority": 910, "kv_prefixes": ["a:"], "permissions": {"kv_read": True}}
    m = build_manifest(b"wasm", manifest, flags, None)
    assert (m.name, m.version, m.handles, m.priority, m.kv_prefixes) == ("a", "1.0.0", ("Y", "Z"), 910, ("a:",))
    assert m.permissions.kv_read and not m.permissions.kv_write and m.signature is None
    m = build_manifest(b"wasm", None, {"name": "b", "handles": ["X"]}, None)
    assert m.version == "0.1.0" and m.priority == 950


@pytest.mark.parametrize(
    "flags",
    [
        {"handles": ["X"]},
        {"name": "a"},
        {"name": "a", "handles": ["X"], "priority": "high"},
        {"name": "a", "handles": ["X"], "kv_raed": True},
    ],
)
def test_bad_manifest_input(flags):
    with pytest.raises(AspenError) as info:
        build_manifest(b"wasm", None, flags, None)
    assert info.value.code == ErrorCode.INVALID_MANIFEST
