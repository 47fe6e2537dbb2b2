"""The ``aspen`` command against a real node, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess

from tests.node.node_process import ASPEN, free_port


def aspen(node, *args: str, input: bytes | None = None, url: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASPEN_URL": url or node.url, "COLUMNS": "200"}
    return subprocess.run([ASPEN, *args], input=input, capture_output=True, env=env, timeout=60)


def ok(node, *args: str, **kw) -> str:
    r = aspen(node, *args, **kw)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return r.stdout.decode()


def test_kv_put_get_delete(node):
    assert "OK revision" in ok(node, "kv", "put", "cli/a", "hello")
    assert ok(node, "kv", "get", "cli/a") == "hello"
    kv = json.loads(ok(node, "kv", "get", "cli/a", "--json"))
    assert kv["key"] == "cli/a" and kv["version"] == 1
    ok(node, "kv", "put", "cli/bin", "-", input=b"\x00\x01binary")
    assert aspen(node, "kv", "get", "cli/bin").stdout == b"\x00\x01binary"
    assert "deleted" in ok(node, "kv", "delete", "cli/a")
    r = aspen(node, "kv", "get", "cli/a")
    assert r.returncode == 1 and b"KEY_NOT_FOUND" in r.stderr


def test_kv_scan_and_json(node):
    for i in range(5):
        ok(node, "kv", "put", f"scan/{i}", f"v{i}")
    table = ok(node, "kv", "scan", "scan/")
    assert "scan/0" in table and "v4" in table
    page = json.loads(ok(node, "kv", "scan", "scan/", "--limit", "2", "--json"))
    assert [e["key"] for e in page["entries"]] == ["scan/0", "scan/1"] and page["is_truncated"]
    everything = json.loads(ok(node, "kv", "scan", "scan/", "--limit", "2", "--all", "--json"))
    assert len(everything["entries"]) == 5 and not everything["is_truncated"]


def test_kv_cas(node):
    ok(node, "kv", "cas", "cas/k", "one", "--create")
    r = aspen(node, "kv", "cas", "cas/k", "two", "--create")
    assert r.returncode == 1 and b"COMPARE_FAILED" in r.stderr
    ok(node, "kv", "cas", "cas/k", "two", "--expected", "one")
    assert ok(node, "kv", "get", "cas/k") == "two"
    r = aspen(node, "kv", "cas", "cas/k", "three")
    assert r.returncode == 1 and b"INVALID_ARGUMENT" in r.stderr


def test_kv_watch_prints_changes(node):
    rev = json.loads(ok(node, "status", "--json"))["health"]["revision"]
    ok(node, "kv", "put", "watch/a", "1")
    ok(node, "kv", "delete", "watch/a")
    out = ok(node, "kv", "watch", "watch/", "--from-revision", str(rev + 1), "--count", "2", "--json")
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["type"], e["kv"]["key"]) for e in events] == [("put", "watch/a"), ("delete", "watch/a")]


def test_blob_commands(node, tmp_path):
    src = tmp_path / "file.bin"
    src.write_bytes(os.urandom(3_000_000))
    digest = ok(node, "blob", "add", str(src)).strip()
    assert len(digest) == 64
    assert digest in ok(node, "blob", "ls")
    listed = json.loads(ok(node, "blob", "ls", "--json"))
    assert any(b["hash"] == digest and b["size"] == 3_000_000 for b in listed["blobs"])
    out = tmp_path / "copy.bin"
    ok(node, "blob", "get", digest, "-o", str(out))
    assert out.read_bytes() == src.read_bytes()
    ok(node, "blob", "protect", digest, "keep")
    r = aspen(node, "blob", "rm", digest)
    assert r.returncode == 1 and b"BLOB_PROTECTED" in r.stderr
    ok(node, "blob", "unprotect", "keep")
    ok(node, "blob", "rm", digest)
    r = aspen(node, "blob", "get", digest, "-o", str(tmp_path / "gone"))
    assert r.returncode == 1 and b"BLOB_NOT_FOUND" in r.stderr


def test_status(node):
    status = json.loads(ok(node, "status", "--json"))
    assert status["health"]["status"] == "ok" and status["node"]["endpoint_addr"] == f"127.0.0.1:{node.port}"
    assert "node id" in ok(node, "status")


def test_errors_print_code_and_exit_non_zero(node):
    r = aspen(node, "kv", "get", "x", url=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 1 and b"UNAVAILABLE" in r.stderr
    r = aspen(node, "kv", "get", "k" * 2000)
    assert r.returncode == 1 and b"KEY_TOO_LARGE" in r.stderr
    r = aspen(node, "kv", "put", "k")
    assert r.returncode == 1 and b"INVALID_ARGUMENT" in r.stderr


def test_node_start_rejects_a_bad_listen_address(tmp_path):
    r = subprocess.run(
        [ASPEN, "node", "start", "--data-dir", str(tmp_path), "--listen", "nonsense"], capture_output=True, timeout=60
    )
    assert r.returncode == 1 and b"INVALID_ARGUMENT" in r.stderr and b"HOST:PORT" in r.stderr


def test_kv_fails_over_from_a_dead_node_to_a_live_one(node):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    both = f"{dead},{node.url}"
    env = {k: v for k, v in os.environ.items() if k != "ASPEN_URL"}
    for args in (
        ["kv", "put", "failover/k", "through-live", "--url", both],
        ["kv", "get", "failover/k", "--url", both],
    ):
        r = subprocess.run([ASPEN, *args], capture_output=True, env=env, timeout=60)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
    assert r.stdout == b"through-live"
    # the dead node alone really is dead: the success above came from fail-over
    r = subprocess.run([ASPEN, "kv", "get", "failover/k", "--url", dead], capture_output=True, env=env, timeout=60)
    assert r.returncode == 1 and b"UNAVAILABLE" in r.stderr, r.stderr
