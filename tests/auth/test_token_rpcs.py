"""TokenCreate, TokenRevoke and TokenVerify on a real node, and the CLI that
drives them: creation never widens, revocation reaches everything made from
a token and nothing it was made from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from aspen.auth.tokens import read_facts, unverified
from tests.auth.conftest import code_of, rpc

ASPEN = str(Path(sys.executable).with_name("aspen"))


def aspen(node, *args: str, token: str | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASPEN_URL": node.url}
    env.pop("ASPEN_TOKEN", None)
    if token is not None:
        env["ASPEN_TOKEN"] = token
    return subprocess.run([ASPEN, *args], env=env, capture_output=True, text=True, timeout=60, check=False, input=stdin)


def test_create_never_widens(node, mint):
    delegator = mint(("kv:read", "team/"), ("token:delegate", "*"), ttl=600, subject="lead")
    ok = rpc(node, "TokenCreate", {"rights": [{"operation": "kv:read", "resource": "team/a/"}]}, token=delegator)
    made = ok.json()["body"]
    assert made["subject"] == "lead/" + made["subject"].split("/", 1)[1]  # not an identity of its own choosing
    assert read_facts(unverified(made["token"])).expires_at <= read_facts(unverified(delegator)).expires_at
    for right in ({"operation": "kv:read", "resource": "team"}, {"operation": "kv:write", "resource": "team/"},
                  {"operation": "kv:read", "resource": "*"}):  # fmt: skip
        r = rpc(node, "TokenCreate", {"rights": [right]}, token=delegator)
        assert code_of(r) == "UNAUTHORIZED", right
    r = rpc(node, "TokenCreate", {"rights": [{"operation": "cluster:peer", "resource": "*"}]}, token=node.token)
    assert code_of(r) == "INVALID_ARGUMENT"  # node credentials are minted by nodes only
    r = rpc(
        node,
        "TokenCreate",
        {"rights": [{"operation": "kv:read", "resource": "team/"}]},
        token=mint(("kv:read", "team/")),
    )
    assert (r.status_code, code_of(r)) == (403, "UNAUTHORIZED")  # no token:delegate


def test_revoking_reaches_descendants_and_spares_ancestors(node, mint, admin):
    parent = mint(("kv:read", "rv/"), ("token:delegate", "*"), subject="rv-parent")
    child = rpc(node, "TokenCreate", {"rights": [{"operation": "kv:read", "resource": "rv/"}]}, token=parent).json()
    child = child["body"]["token"]
    grandchild = aspen(node, "token", "delegate", child, "--only-read", "rv/x/", "--ttl", "10m").stdout.strip()
    assert code_of(rpc(node, "ReadKey", {"key": "rv/x/1"}, token=grandchild)) is None
    # revoke the middle one: it and what came from it stop, its parent goes on
    assert aspen(node, "token", "revoke", child, token=parent).returncode == 0
    assert code_of(rpc(node, "ReadKey", {"key": "rv/x/1"}, token=child)) == "TOKEN_REVOKED"
    assert code_of(rpc(node, "ReadKey", {"key": "rv/x/1"}, token=grandchild)) == "TOKEN_REVOKED"
    assert code_of(rpc(node, "ReadKey", {"key": "rv/x/1"}, token=parent)) is None
    # someone else's token is not yours to revoke
    stranger = mint(("kv:read", "zz/"))
    r = rpc(node, "TokenRevoke", {"token": parent}, token=stranger)
    assert code_of(r) == "UNAUTHORIZED"
    revoked = admin.scan_keys("__auth:revoked:").entries
    assert any(e.key.endswith(read_facts(unverified(child)).revocation_ids[-1]) for e in revoked)


def test_verify_and_inspect(node, mint):
    token = mint(("kv:read", "iv/"), ttl=600, subject="inspected")
    body = rpc(node, "TokenVerify", {"token": token}, token=node.token).json()["body"]
    assert body["is_valid"] and body["subject"] == "inspected" and len(body["public_key"]) == 64
    shown = aspen(node, "token", "inspect", "-", token=node.token, stdin=token)
    assert (
        shown.returncode == 0 and 'right("kv:read", "iv/")' in shown.stdout and "valid on this cluster" in shown.stdout
    )
    bad = rpc(node, "TokenVerify", {"token": "garbage"}, token=node.token).json()["body"]
    assert not bad["is_valid"] and bad["code"] == "UNAUTHENTICATED"


def test_cli_create_with_flags_and_global_options(node):
    made = aspen(node, "--token", node.token, "token", "create", "--read", "cli/", "--write", "cli/", "--ttl", "1h")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    put = subprocess.run(
        [ASPEN, "--url", node.url, "--token", token, "kv", "put", "cli/a", "b"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert put.returncode == 0, put.stderr
    denied = aspen(node, "kv", "put", "elsewhere", "b", token=token)
    assert denied.returncode == 1 and "error: UNAUTHORIZED: WriteKey needs kv:write on 'elsewhere'" in denied.stderr
