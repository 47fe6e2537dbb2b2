"""Every refusal code, over HTTP and through the CLI, on a real node; and a
batch, a transaction and a scan each smuggling one key they may not touch
are refused whole."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from pathlib import Path

import biscuit_auth as bz
import pytest

from aspen.auth.tokens import Right, mint
from tests.auth.conftest import code_of, rpc

ASPEN = str(Path(sys.executable).with_name("aspen"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def cli(node, *args: str, token: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASPEN_URL": node.url, "ASPEN_CREDENTIALS": os.devnull}
    if token is not None:
        args = ("--token", token, *args)
    return subprocess.run([ASPEN, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def refusals(node, mint_token) -> list[tuple[str | None, str, int]]:
    """(token, code, HTTP status) for each refusal, in the documented order."""
    expired = mint_token(("kv:read", "auth/"), ttl=1)
    revoked = mint_token(("kv:read", "auth/"))
    rpc(node, "TokenRevoke", {"token": revoked}, token=node.token)
    foreign = mint(bz.KeyPair().private_key, subject="mallory", rights=[Right("kv:read", "auth/")])
    elsewhere = mint_token(("kv:read", "auth/"), audience="another-cluster")
    narrow = mint_token(("kv:read", "other/"))
    deadline = time.monotonic() + 10
    while code_of(rpc(node, "ReadKey", {"key": "auth/x"}, token=expired)) != "TOKEN_EXPIRED":
        assert time.monotonic() < deadline, "a 1 s token never expired"
        time.sleep(0.2)
    return [
        (None, "UNAUTHENTICATED", 401),
        ("bm90IGEgdG9rZW4", "UNAUTHENTICATED", 401),
        (foreign, "INVALID_SIGNATURE", 401),
        (expired, "TOKEN_EXPIRED", 401),
        (revoked, "TOKEN_REVOKED", 401),
        (elsewhere, "WRONG_AUDIENCE", 401),
        (narrow, "UNAUTHORIZED", 403),
    ]


def test_every_refusal_over_http_and_the_cli(node, mint):
    for token, code, status in refusals(node, mint):
        r = rpc(node, "ReadKey", {"key": "auth/x"}, token=token)
        assert (r.status_code, code_of(r)) == (status, code), (token, r.text)
        assert r.json()["body"]["message"]
        done = cli(node, "kv", "get", "auth/x", token=token)
        assert done.returncode == 1 and f"error: {code}:" in done.stderr, (code, done.stderr)
    r = rpc(node, "ReadKey", {"key": "auth/x"}, token=mint(("kv:read", "other/")))
    assert r.json()["body"]["details"] == {"operation": "kv:read", "resource": "auth/x"}


def test_the_envelope_token_is_accepted_too(node, mint):
    import httpx

    token = mint(("kv:read", "auth/"))
    r = httpx.post(f"{node.url}/v1/rpc", json={"type": "ReadKey", "body": {"key": "auth/k"}, "token": token})
    assert r.status_code == 200 and r.json()["type"] == "ReadResult"


def test_a_batch_smuggling_one_key_is_refused_whole(node, mint, admin):
    token = mint(("kv:write", "mine/"), ("kv:read", "mine/"))
    ops = [{"type": "put", "key": "mine/a", "value": b64(b"1")}, {"type": "put", "key": "theirs/b", "value": b64(b"2")}]
    r = rpc(node, "BatchWrite", {"operations": ops}, token=token)
    assert r.status_code == 403 and r.json()["body"]["details"]["resource"] == "theirs/b"
    assert not admin.read_key("mine/a").was_found  # nothing of it was applied
    r = rpc(node, "BatchRead", {"keys": ["mine/a", "theirs/b"]}, token=token)
    assert code_of(r) == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "txn, smuggled",
    [
        ({"conditions": [{"key": "theirs/c", "target": "exists"}], "operations": []}, "theirs/c"),
        (
            {
                "conditions": [],
                "operations": [],
                "else_operations": [{"type": "delete", "key": "theirs/", "prefix": True}],
            },
            "theirs/",
        ),
        ({"conditions": [], "operations": [{"type": "range", "prefix": "the"}]}, "the"),
    ],
    ids=["compare", "else-branch-prefix-delete", "range"],
)
def test_a_transaction_smuggling_one_key_is_refused_whole(node, mint, txn, smuggled):
    token = mint(("kv:write", "mine/"), ("kv:read", "mine/"), ("kv:delete", "mine/"))
    txn = {**txn, "operations": [{"type": "put", "key": "mine/t", "value": b64(b"1")}, *txn["operations"]]}
    r = rpc(node, "ConditionalBatchWrite", txn, token=token)
    assert r.status_code == 403 and r.json()["body"]["details"]["resource"] == smuggled, r.text
    assert code_of(rpc(node, "ReadKey", {"key": "mine/t"}, token=token)) is None


def test_a_scan_must_be_covered_whole(node, mint):
    token = mint(("kv:read", "mine/x/"))
    assert code_of(rpc(node, "ScanKeys", {"prefix": "mine/x/"}, token=token)) is None
    assert code_of(rpc(node, "ScanKeys", {"prefix": "mine/"}, token=token)) == "UNAUTHORIZED"
    assert code_of(rpc(node, "WatchCreate", {"prefix": "mine/"}, token=token)) == "UNAUTHORIZED"


def test_reserved_space_is_readable_only_with_cluster_admin(node, mint):
    everything = mint(("kv:read", "*"))
    for body in ({"prefix": "__jobs:"}, {"prefix": ""}, {"prefix": "__"}):
        r = rpc(node, "ScanKeys", body, token=everything)
        assert r.status_code == 403 and r.json()["body"]["details"]["operation"] == "cluster:admin", body
    assert code_of(rpc(node, "ReadKey", {"key": "__auth:root_key"}, token=everything)) == "UNAUTHORIZED"
    assert code_of(rpc(node, "ScanKeys", {"prefix": "__jobs:"}, token=node.token)) is None


def test_health_and_metrics_stay_open(node):
    import httpx

    assert httpx.get(f"{node.url}/healthz").status_code == 200
    assert httpx.get(f"{node.url}/metrics").status_code == 200


def test_first_start_says_where_the_admin_token_is(node):
    assert f"admin token written to {node.token_path}" in node.log()
    assert node.token_path.stat().st_mode & 0o777 == 0o600
    assert (node.data_dir / "auth" / "root.key").stat().st_mode & 0o777 == 0o600
