"""Hostile callers of every hooks-app request, against a real node: no
token, a token without the rights, a prefix beyond the owner's, another
owner's hook, bad names, bad URLs (and the SSRF guard), malformed, oversized
and deeply nested bodies, the quotas, and the reserved ``__hooks:`` space.
Each gets its stable code."""

from __future__ import annotations

import json

import pytest

from aspen.client import SyncClient
from aspen.plugins.build import REPO
from tests.auth.conftest import code_of, rpc
from tests.hookapp.conftest import mint, until
from tests.node.node_process import NodeProcess

TYPES = ("HookAdd", "HookList", "HookRemove", "HookMetrics", "HookTrigger")
EXTERNAL = "http://93.184.215.14/hook"  # a global address, so allowed; never contacted here


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("hookapp")
    (root / "aspen.toml").write_text("[hooks]\nmax_hooks_per_owner = 2\n")
    with NodeProcess(root / "data", "--config", str(root / "aspen.toml"), "--allow-unsigned-plugins") as proc:
        yield proc


@pytest.fixture(scope="module")
def alice(node):
    return mint(node, ("hook", "*"), ("kv:read", "orders/"), subject="alice")


def add(node: NodeProcess, token: str | None, **body) -> str | None:
    body.setdefault("action", {"kind": "webhook", "target": EXTERNAL})
    return code_of(rpc(node, "HookAdd", body, token=token))


def test_no_token_and_no_rights(node):
    for t in TYPES:
        assert code_of(rpc(node, t, {"name": "x"})) == "UNAUTHENTICATED", t
    reader = mint(node, ("kv:read", "orders/"), subject="reader")
    for t in TYPES:
        assert code_of(rpc(node, t, {"name": "x"}, token=reader)) == "UNAUTHORIZED", t
    one = mint(node, ("hook", "only-this"), ("kv:read", "orders/"), subject="one")
    assert add(node, one, name="another", prefix="orders/") == "UNAUTHORIZED"


def test_a_prefix_beyond_the_owner_or_reserved(node, alice):
    for prefix in ("payments/", "", "order", "__hooks:", "__", "_", "__mine/"):
        assert add(node, alice, name="p", prefix=prefix) == "HOOK_PREFIX_DENIED", prefix
    for prefix in ("__jobs:", "__mine/"):  # even for the admin: what starts with __ is never a hook's
        assert add(node, node.token, name="p", prefix=prefix) == "HOOK_PREFIX_DENIED", prefix
    assert add(node, alice, name="p", prefix="o" * 600) == "HOOK_PREFIX_DENIED"


def test_bad_names(node, alice):
    for name in ("", "Bad", "-x", "a" * 64, "a/b", "a b", "é", "a\nb", ".hidden"):
        assert add(node, alice, name=name, prefix="orders/") == "HOOK_NAME_INVALID", name
    assert add(node, alice, name=123, prefix="orders/") == "VALIDATION_ERROR"
    for t in ("HookRemove", "HookMetrics", "HookTrigger"):
        assert code_of(rpc(node, t, {"name": "../x"}, token=alice)) == "HOOK_NAME_INVALID", t


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("ftp://example.com/x", "HOOK_WEBHOOK_INVALID"),
        ("http://", "HOOK_WEBHOOK_INVALID"),
        ("not a url", "HOOK_WEBHOOK_INVALID"),
        ("http://user:pw@93.184.215.14/", "HOOK_WEBHOOK_INVALID"),
        ("http://93.184.215.14:99999/", "HOOK_WEBHOOK_INVALID"),
        ("http://93.184.215.14/" + "a" * 3000, "HOOK_WEBHOOK_INVALID"),
        ("http://127.0.0.1:8080/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://localhost/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://[::1]/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://[::ffff:127.0.0.1]/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://0.0.0.0/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://10.1.2.3/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://192.168.0.1/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://169.254.169.254/latest/meta-data/", "HOOK_WEBHOOK_FORBIDDEN"),
        ("http://224.0.0.1/", "HOOK_WEBHOOK_FORBIDDEN"),
    ],
)
def test_bad_and_forbidden_webhook_urls(node, alice, url, code):
    assert add(node, alice, name="w", prefix="orders/", action={"kind": "webhook", "target": url}) == code


def test_malformed_oversized_and_nested_bodies(node, alice):
    def act(kind, target):
        return {"kind": kind, "target": target}

    cases = {
        "VALIDATION_ERROR": [
            {"name": "m"},  # no action
            {"name": "m", "action": act("ftp", "x")},
            {"name": "m", "action": {"kind": "webhook"}},
            {"name": "m", "action": act("webhook", EXTERNAL), "surprise": 1},
            {"name": "m", "action": act("webhook", EXTERNAL), "mode": "later"},
            {"name": "m", "action": act("webhook", {"nested": [1]})},
            {"name": "m", "action": act("webhook", EXTERNAL), "timeout_ms": "soon"},
        ],
        "HOOK_ACTION_INVALID": [
            {"name": "m", "action": act("webhook", EXTERNAL), "timeout_ms": 0},
            {"name": "m", "action": act("webhook", EXTERNAL), "timeout_ms": 10**9},
            {"name": "m", "action": act("webhook", EXTERNAL), "retries": 1000},
            {"name": "m", "action": act("webhook", EXTERNAL), "backoff_ms": -1},
            {"name": "m", "action": act("job", "nix:hello")},
            {"name": "m", "action": act("job", "shell:")},
            {"name": "m", "action": act("job", "shell")},
            {"name": "m", "action": act("call", "Bad Type!")},
            {"name": "m", "action": act("call", "x" * 100_000)},
        ],
        "HOOK_PATTERN_INVALID": [{"name": "m", "action": act("webhook", EXTERNAL), "pattern": "a..b"}],
    }
    for code, bodies in cases.items():
        for body in bodies:
            assert code_of(rpc(node, "HookAdd", {"prefix": "orders/", **body}, token=alice)) == code, body
    deep: dict = {"kind": "webhook", "target": EXTERNAL}
    for _ in range(200):
        deep = {"kind": "webhook", "target": deep}
    assert code_of(rpc(node, "HookAdd", {"name": "m", "action": deep}, token=alice)) == "VALIDATION_ERROR"
    huge = {"name": "m", "action": act("webhook", "http://93.184.215.14/" + "a" * (20 << 20))}
    assert code_of(rpc(node, "HookAdd", huge, token=alice)) == "MESSAGE_TOO_LARGE"
    for t in ("HookList", "HookMetrics"):
        assert code_of(rpc(node, t, {"surprise": True}, token=alice)) == "VALIDATION_ERROR", t


def test_actions_the_owner_may_not_take(node, alice):
    shell = {"kind": "job", "target": "shell:./notify.sh"}
    assert add(node, alice, name="j", prefix="orders/", action=shell) == "UNAUTHORIZED"  # no job:submit shell
    admin_only = {"kind": "call", "target": "ClusterStatus"}
    assert add(node, alice, name="c", prefix="orders/", action=admin_only) == "UNAUTHORIZED"
    assert add(node, alice, name="c", prefix="orders/", pattern="hooks.job.>") == "UNAUTHORIZED"  # admin's topics


def test_a_call_action_sends_the_event_as_its_owner(node):
    wasm = (REPO / "plugins" / "echo" / "plugin.wasm").read_bytes()
    manifest = json.loads((REPO / "plugins" / "echo" / "plugin.json").read_text())
    carol = mint(node, ("hook", "*"), ("kv:read", "calls/"), subject="carol")
    with SyncClient(node.url) as admin, SyncClient(node.url, token=carol) as c:
        admin.call("PluginInstall", {"manifest": manifest, "wasm": wasm})
        echo = {"kind": "call", "target": "Echo"}
        assert add(node, carol, name="echo", prefix="calls/", action=echo) == "UNAUTHORIZED"  # no plugin:call echo
        dave = mint(node, ("hook", "*"), ("kv:read", "calls/"), ("plugin:call", "echo"), subject="dave")
        assert add(node, dave, name="echo", prefix="calls/", action=echo) is None
        assert c.call("HookList", {})["hooks"] == []
        assert rpc(node, "HookTrigger", {"name": "echo"}, token=dave).json()["body"]["result"]["response"] != "Error"
        as_job = {"name": "echo-job", "prefix": "calls/", "action": echo, "mode": "job"}
        admin.call("HookAdd", as_job)  # the admin may call anything: a call through the job system
        admin.write_key("calls/1", b"hi")
        until(lambda: rpc(node, "HookMetrics", {"name": "echo"}, token=dave).json()["body"]["hooks"][0]["delivered"])
        jobs = until(
            lambda: [j for j in admin.call("JobList", {"state": "succeeded"})["jobs"] if j["type"] == "hook.action"]
        )
        done = admin.call("JobStatus", {"id": jobs[0]["id"]})
        assert done["job"]["payload"]["hook"] == "echo-job" and done["result"] == {"response": "Echo"}


def test_quota_duplicates_and_other_owners(node, alice):
    bob = mint(node, ("hook", "*"), ("kv:read", "orders/"), subject="bob")
    assert add(node, alice, name="a1", prefix="orders/") is None
    assert add(node, bob, name="a1", prefix="orders/") == "HOOK_EXISTS"
    assert add(node, alice, name="a2", prefix="orders/") is None
    body = rpc(node, "HookAdd", {"name": "a3", "prefix": "orders/", "action": {"kind": "webhook", "target": EXTERNAL}},
               token=alice).json()["body"]  # fmt: skip
    assert body["code"] == "HOOK_QUOTA_EXCEEDED" and body["details"] == {"quota": "max_hooks_per_owner", "limit": 2}
    assert add(node, bob, name="b1", prefix="orders/") is None  # bob's own count
    for t in ("HookRemove", "HookMetrics", "HookTrigger"):
        assert code_of(rpc(node, t, {"name": "a1"}, token=bob)) == "HOOK_NOT_FOUND", t
        assert code_of(rpc(node, t, {"name": "missing"}, token=alice)) == "HOOK_NOT_FOUND", t
    listed = rpc(node, "HookList", {}, token=bob).json()["body"]["hooks"]
    assert [h["name"] for h in listed] == ["b1"]
    with SyncClient(node.url) as admin:
        assert {"a1", "a2", "b1"} <= {h["name"] for h in admin.call("HookList", {})["hooks"]}
        assert "signing_key" not in str(admin.call("HookList", {}))
        admin.call("HookRemove", {"name": "b1"})
    assert code_of(rpc(node, "HookRemove", {"name": "a2"}, token=alice)) is None
    assert add(node, alice, name="a3", prefix="orders/") is None  # a removed hook frees its slot


def test_the_hooks_space_is_reserved_and_its_secrets_unreadable(node, alice):
    assert add(node, alice, name="r1", prefix="orders/") in (None, "HOOK_QUOTA_EXCEEDED")
    admin = node.token
    assert code_of(rpc(node, "WriteKey", {"key": "__hooks:records:evil", "value": "eA=="}, token=admin)) == (
        "RESERVED_KEY"
    )
    assert code_of(rpc(node, "ReadKey", {"key": "__hooks:secret:a1"}, token=admin)) == "RESERVED_KEY"
    keys = [e["key"] for e in rpc(node, "ScanKeys", {"prefix": "__hooks:"}, token=admin).json()["body"]["entries"]]
    assert "__hooks:records:a1" in keys and not any(k.startswith("__hooks:secret:") for k in keys)
    assert code_of(rpc(node, "ScanKeys", {"prefix": "__hooks:"}, token=alice)) == "UNAUTHORIZED"
