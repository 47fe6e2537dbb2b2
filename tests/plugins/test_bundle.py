"""The process plugin's manifest rules and its bundle: deterministic, and
refusing every name that could land outside its directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgspec
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle
from aspen.plugins.rules import FILE, MAX_ARGV, MAX_ENV, check_manifest, parse_manifest

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "plugins" / "echo-process"
MANIFEST = parse_manifest((ECHO / "plugin.json").read_bytes())


def code_of(**changes) -> str | None:
    try:
        check_manifest(msgspec.structs.replace(MANIFEST, **changes), at=FILE)
    except AspenError as exc:
        return exc.code
    return None


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"command": ()}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"command": ("python3",) * (MAX_ARGV + 1)}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"command": ("python3", "x" * 5000)}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"command": ("python3", "a\0b")}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"command": ("/usr/bin/curl", "x")}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"command": ("../bin/evil",)}, ErrorCode.PLUGIN_COMMAND_INVALID),
        ({"env": {f"V{i}": "" for i in range(MAX_ENV + 1)}}, ErrorCode.PLUGIN_ENV_INVALID),
        ({"env": {"1BAD": "x"}}, ErrorCode.PLUGIN_ENV_INVALID),
        ({"env": {"OK": "x" * 5000}}, ErrorCode.PLUGIN_ENV_INVALID),
        ({"cwd": "/etc"}, ErrorCode.PLUGIN_CWD_INVALID),
        ({"cwd": "a/../.."}, ErrorCode.PLUGIN_CWD_INVALID),
        ({"runtime": "docker"}, ErrorCode.INVALID_MANIFEST),
        ({"runtime": "wasm"}, ErrorCode.PLUGIN_COMMAND_INVALID),  # a WASM plugin has no command
        ({"command": ("bin/run", "--flag"), "cwd": "sub/dir", "env": {"MODE": "x"}}, None),
    ],
)
def test_the_process_rules_and_their_codes(changes, code):
    assert code_of(**changes) == code


def test_a_bundle_is_the_same_bytes_for_the_same_files(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(ECHO, copy, ignore=shutil.ignore_patterns("__pycache__"))
    os.utime(copy / "plugin.py", (1, 1))
    (copy / ".hidden").write_text("not shipped")
    first, second = bundle.pack(ECHO, MANIFEST), bundle.pack(copy, MANIFEST)
    assert first == second
    read = bundle.check(first, MANIFEST)
    assert sorted(read.files) == ["plugin.py"] and read.command == MANIFEST.command


def test_unpack_writes_read_only_files_inside_its_directory(tmp_path):
    files = {"plugin.py": bundle.BundleFile(b"print(1)"), "bin/run": bundle.BundleFile(b"#!/bin/sh", True)}
    b = bundle.Bundle(("bin/run",), ("Echo",), files)
    bundle.unpack(bundle.read(msgspec.msgpack.encode(b), "p"), tmp_path / "out")
    assert (tmp_path / "out" / "bin" / "run").stat().st_mode & 0o777 == 0o555
    assert (tmp_path / "out" / "plugin.py").stat().st_mode & 0o777 == 0o444


@pytest.mark.parametrize("name", ["../x", "/abs", "a/../../x", "a//b", "./x", "a\\b", "x\0", "", "y" * 300])
def test_a_name_outside_the_bundle_is_refused(name):
    b = bundle.Bundle(("python3",), ("Echo",), {name: bundle.BundleFile(b"x")})
    with pytest.raises(AspenError) as err:
        bundle.read(msgspec.msgpack.encode(b), "p")
    assert err.value.code == ErrorCode.PLUGIN_BUNDLE_INVALID


def test_a_link_or_a_missing_program_is_refused(tmp_path):
    linked = tmp_path / "linked"
    shutil.copytree(ECHO, linked, ignore=shutil.ignore_patterns("__pycache__"))
    (linked / "sub").mkdir()
    (linked / "sub" / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(AspenError) as err:
        bundle.pack(linked, MANIFEST)
    assert err.value.code == ErrorCode.PLUGIN_BUNDLE_INVALID
    missing = bundle.Bundle(("bin/run",), ("Echo",), {})
    with pytest.raises(AspenError) as err:
        bundle.read(msgspec.msgpack.encode(missing), "p")
    assert err.value.code == ErrorCode.PLUGIN_BUNDLE_INVALID and "not in the bundle" in err.value.message
