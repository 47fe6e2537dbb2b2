"""Every shipped plugin: built from source, its ``plugin_info`` matches its
``plugin.json``, and the build skips modules that are up to date."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import extism
import pytest

from aspen.errors import AspenError
from aspen.plugins.build import REPO, find_plugins, is_stale
from aspen.plugins.extism_bridge import HOST_FUNCTIONS
from aspen.plugins.host import PluginHost

PLUGIN_DIRS = [d for d, _ in find_plugins(REPO / "plugins")]
# The impostor's whole point is a plugin_info that contradicts its manifest.
MATCHING = [d for d in PLUGIN_DIRS if d.name != "impostor"]


def test_corpus_is_complete():
    names = {str(d.relative_to(REPO / "plugins")) for d in PLUGIN_DIRS}
    assert {"echo", "kv-counter", "cpu-burn", "hostile/faults", "hostile/snoop", "hostile/noperm",
            "hostile/impostor"} <= names  # fmt: skip


@pytest.mark.parametrize("directory", MATCHING, ids=lambda d: d.name)
def test_plugin_info_matches_plugin_json(built, directory):
    manifest = json.loads((directory / "plugin.json").read_text())
    plugin = extism.Plugin((directory / "plugin.wasm").read_bytes(), functions=HOST_FUNCTIONS)
    info = json.loads(plugin.call("plugin_info", b""))
    for field in ("name", "version", "handles", "priority"):
        assert info[field] == manifest[field], field
    assert info.get("app_id") == manifest.get("app_id")
    assert info.get("kv_prefixes", []) == manifest.get("kv_prefixes", [])
    assert info.get("description", "") == manifest.get("description", "")


def test_build_skips_fresh_modules_and_rebuilds_stale(built, tmp_path):
    echo = REPO / "plugins" / "echo"
    sdk = REPO / "sdk" / "zig"
    assert not is_stale(echo, sdk)
    # A copy of the tree with a touched source is rebuilt, the rest is not.
    root = tmp_path / "repo"
    for rel in ("plugins/echo", "plugins/cpu-burn", "sdk/zig"):
        src, dst = REPO / rel, root / rel
        dst.mkdir(parents=True)
        for f in src.iterdir():
            (dst / f.name).write_bytes(f.read_bytes())
            os.utime(dst / f.name, (f.stat().st_atime, f.stat().st_mtime))
    later = (root / "plugins/echo/plugin.wasm").stat().st_mtime + 10
    os.utime(root / "plugins/echo/plugin.zig", (later, later))
    out = subprocess.run(
        [sys.executable, "-m", "aspen.plugins.build", str(root)], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["built", "plugins/echo/plugin.wasm"]


def test_build_failure_is_reported(tmp_path):
    bad = tmp_path / "plugins" / "bad"
    bad.mkdir(parents=True)
    (bad / "plugin.json").write_text("{}")
    (bad / "plugin.zig").write_text("this is not zig")
    (tmp_path / "sdk" / "zig").mkdir(parents=True)
    (tmp_path / "sdk" / "zig" / "aspen.zig").write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "aspen.plugins.build", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "bad/plugin.zig" in result.stderr
    assert not (bad / "plugin.wasm").exists()


async def test_load_from_files(host, built):
    errors = []
    for rel in ("echo", "hostile/impostor", "missing", "kv-counter"):
        try:
            await host.load_files(built / rel / "plugin.json", built / rel / "plugin.wasm")
        except AspenError as exc:
            errors.append(exc)
    assert [e.code for e in errors] == ["PLUGIN_LOAD_FAILED", "PLUGIN_LOAD_FAILED"]
    assert [h.name for h in host.handlers()] == ["kv-counter", "echo"]  # by priority


async def test_plugin_count_limit(kv, built):
    small = PluginHost(kv=kv, max_plugins=1)
    try:
        await small.load_files(built / "echo/plugin.json", built / "echo/plugin.wasm")
        with pytest.raises(AspenError) as err:
            await small.load_files(built / "kv-counter/plugin.json", built / "kv-counter/plugin.wasm")
        assert err.value.code == "PLUGIN_TOO_MANY_PLUGINS"
    finally:
        await small.close()
