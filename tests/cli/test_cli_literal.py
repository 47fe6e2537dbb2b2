"""The CLI prints data exactly as it is: Rich markup and emoji codes inside
keys, values, tags or error messages are shown literally, so one key cannot
be disguised as another. ``--json`` output is unchanged."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.node.admin_token import admin_token
from tests.node.node_process import ASPEN

TRICKY = ["lit/a:smile:b", "lit/b:[bold]k[/bold]", "lit/c:[red]x", "lit/d\\[bold]y", "lit/e\\"]


def aspen(node, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASPEN_URL": node.url, "COLUMNS": "300"}
    env["ASPEN_TOKEN"] = admin_token(node.data_dir)
    return subprocess.run([ASPEN, *args], check=False, input=input, capture_output=True, env=env, timeout=60)


def ok(node, *args: str) -> str:
    r = aspen(node, *args)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout.decode()


@pytest.fixture(scope="module")
def tricky_keys(node):
    for key in TRICKY:
        ok(node, "kv", "put", key, f"value of {key} :thumbs_up: [italic]v[/italic]")
    return TRICKY


def test_kv_scan_prints_keys_and_values_literally(node, tricky_keys):
    table = ok(node, "kv", "scan", "lit/")
    for key in tricky_keys:
        assert key in table
        assert f"value of {key} :thumbs_up: [italic]v[/italic]"[:60] in table
    assert "😄" not in table and "👍" not in table
    assert "lit/b:k" not in table  # the markup was not applied


def test_kv_scan_json_is_unchanged(node, tricky_keys):
    page = json.loads(ok(node, "kv", "scan", "lit/", "--json"))
    assert [e["key"] for e in page["entries"]] == sorted(tricky_keys, key=str.encode)


def test_kv_get_prints_the_value_literally(node, tricky_keys):
    for key in tricky_keys:
        assert ok(node, "kv", "get", key) == f"value of {key} :thumbs_up: [italic]v[/italic]"
        assert json.loads(ok(node, "kv", "get", key, "--json"))["key"] == key


@pytest.mark.parametrize("key", ["lit/missing:smile:", "lit/missing[bold]k[/bold]"])
def test_error_messages_show_the_key_literally(node, key):
    r = aspen(node, "kv", "get", key)
    assert r.returncode == 1
    err = r.stderr.decode()
    assert f"error: KEY_NOT_FOUND: key {key!r} not found" in err, err
    assert "😄" not in err


def test_an_error_from_the_node_is_printed_literally(node):
    key = "__plugins:[bold]x[/bold]:smile:"  # reserved: the node refuses it and names the key
    r = aspen(node, "kv", "put", key, "v")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "RESERVED_KEY" in err and "[bold]x[/bold]:smile:" in err, err


def test_kv_watch_prints_events_literally(node, tricky_keys):
    rev = json.loads(ok(node, "status", "--json"))["health"]["revision"]
    ok(node, "kv", "put", "lit/w:smile:[bold]w[/bold]", "x:fire:")
    out = ok(node, "kv", "watch", "lit/w", "--from-revision", str(rev + 1), "--count", "1")
    assert "lit/w:smile:[bold]w[/bold] = x:fire:" in out, out


def test_blob_tags_print_literally(node, tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(b"tagged blob for the literal test")
    digest = ok(node, "blob", "add", str(f)).strip()
    assert "protected under 'lit:smile:[bold]t[/bold]'" in ok(
        node, "blob", "protect", digest, "lit:smile:[bold]t[/bold]"
    )
    assert "lit:smile:[bold]t[/bold]" in ok(node, "blob", "ls")
    assert "removed tag 'lit:smile:[bold]t[/bold]'" in ok(node, "blob", "unprotect", "lit:smile:[bold]t[/bold]")
