"""The hooks app through real nodes, on SQLite and on etcd: a KV write under
a hook's prefix submits its job exactly once; a failing webhook is retried
with backoff and ends in the job system's dead-letter state, every POST
signed; a hook never shows a value its owner cannot read, nor anything once
the owner's token is revoked."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os

import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from tests.hookapp.conftest import CONFIG, etcd_cluster, mint, until, wipe  # noqa: F401
from tests.lifecycle.test_two_nodes import run
from tests.node.node_process import NodeProcess


def tagged(client: SyncClient, name: str, **filters) -> list[dict]:
    jobs = client.call("JobList", {"limit": 1000, **filters})["jobs"]
    full = [client.call("JobStatus", {"id": j["id"]})["job"] for j in jobs]
    return [j for j in full if f"hook:{name}" in j["tags"]]


def test_a_write_under_the_prefix_runs_the_job_once(node, home):
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config")}
    added = run(
        "hook", "add", "notify", "--prefix", "orders/", "--job", 'shell:echo "event=$ASPEN_HOOK_EVENT"',
        "--url", node.url, env=env,
    )  # fmt: skip
    assert "signing key (shown once):" in added.stdout
    both = run(
        "hook", "add", "x", "--job", "shell:true", "--webhook", "http://a/", "--url", node.url, env=env, ok=False
    )
    assert both.returncode == 1 and "INVALID_ARGUMENT" in both.stderr
    taken = run("hook", "add", "notify", "--job", "shell:true", "--url", node.url, env=env, ok=False)
    assert taken.returncode == 1 and "HOOK_EXISTS" in taken.stderr
    with SyncClient(node.url) as c:
        c.write_key("other/1", b"x")
        c.write_key("orders/1", b"first")
        first = until(lambda: (j := tagged(c, "notify")) and j, what="the hook's job")
        c.write_key("orders/2", b"second")  # delivered after the first, in order: a duplicate would show by now
        jobs = until(lambda: (j := tagged(c, "notify")) and len(j) >= 2 and j, what="the second job")
        assert len(jobs) == 2 and first[0]["id"] in {j["id"] for j in jobs}
        assert {j["type"] for j in jobs} == {"shell"} and len({j["submitter"] for j in jobs}) == 1  # the owner's
        done = until(
            lambda: all(c.call("JobStatus", {"id": j["id"]})["job"]["state"] == "succeeded" for j in jobs) and jobs,
            what="the jobs to succeed",
        )
        logs = sorted(c.call("JobLogs", {"id": j["id"]})["data"] for j in done)
        events = [
            json.loads(line.split("event=", 1)[1]) for log in logs for line in log.splitlines() if "event=" in line
        ]
        assert sorted(e["event"]["key"] for e in events) == ["orders/1", "orders/2"]
        assert {e["event"]["value"] for e in events} == {"first", "second"}  # the admin may read them
        assert all(e["topic"] == "hooks.kv.write_committed" and e["hook"] == "notify" for e in events)
        metrics = until(lambda: (m := c.call("HookMetrics", {"name": "notify"})["hooks"][0])["delivered"] == 2 and m)
        assert metrics["failed"] == 0
        assert run("hook", "metrics", "--url", node.url, env=env).stdout.split() == [
            "notify", "delivered", "2", "failed", "0", "dropped", "0",
        ]  # fmt: skip
        triggered = json.loads(run("hook", "trigger", "notify", "--json", "--url", node.url, env=env).stdout)
        synthetic = c.call("JobStatus", {"id": triggered["result"]["job_id"]})["job"]
        assert "aspen-hook-trigger" in synthetic["payload"]["env"]["ASPEN_HOOK_EVENT"]
        listed = run("hook", "list", "--url", node.url, env=env).stdout
        assert "notify" in listed and "orders/" in listed and "shell:" in listed
        run("hook", "remove", "notify", "--url", node.url, env=env)
        assert c.call("HookList", {})["hooks"] == []


def test_a_failing_webhook_is_retried_then_dead_lettered(node, receiver):
    receiver.status = 500
    with SyncClient(node.url) as c:
        added = c.call(
            "HookAdd",
            {
                "name": "billing", "prefix": "bill/", "action": {"kind": "webhook", "target": receiver.url},
                "mode": "job", "retries": 2, "backoff_ms": 50, "timeout_ms": 2000,
            },
        )  # fmt: skip
        key = added["signing_key"]
        direct = {
            "name": "direct", "prefix": "bill/", "action": {"kind": "webhook", "target": receiver.url}, "backoff_ms": 50,
        }  # fmt: skip
        c.call("HookAdd", direct)
        c.write_key("bill/7", b"42")
        dead = until(lambda: (j := tagged(c, "billing", state="dead")) and j, what="the dead-lettered job")
        assert len(dead) == 1 and dead[0]["type"] == "hook.action" and dead[0]["attempts"] == 3
        assert dead[0]["error_code"] == "HOOK_DELIVERY_FAILED"
        posts = [(h, b) for h, b in receiver.posts if json.loads(b)["hook"] == "billing"]
        assert len(posts) == 3
        assert len({h["x-aspen-event-id"] for h, _ in posts}) == 1  # one event, retried: receivers deduplicate on it
        for headers, body in posts:
            mac = hmac.new(bytes.fromhex(key), headers["x-aspen-timestamp"].encode() + b"." + body, hashlib.sha256)
            assert headers["x-aspen-signature"] == "sha256=" + mac.hexdigest()
        assert json.loads(posts[0][1])["event"]["key"] == "bill/7"
        # Direct mode: the hook's retries (3 by default) on the node, then counted failed (no job, no dead letter).
        failed = until(lambda: (m := c.call("HookMetrics", {"name": "direct"})["hooks"][0])["failed"] == 1 and m)
        assert failed["delivered"] == 0 and not tagged(c, "direct")
        assert len([e for e in receiver.events() if e["hook"] == "direct"]) == 4
        # The job system's redrive: once the receiver works, a retry delivers it.
        receiver.status = 204
        c.call("JobRetry", {"id": dead[0]["id"]})
        until(lambda: c.call("JobStatus", {"id": dead[0]["id"]})["job"]["state"] == "succeeded")
        assert len([e for e in receiver.events() if e["hook"] == "billing"]) == 4
        trigger = c.call("HookTrigger", {"name": "billing"})
        assert trigger["result"] == {"status": 204} and receiver.events()[-1]["event"]["synthetic"] is True


@pytest.mark.parametrize("node", ["sqlite"], indirect=True)  # the timeout is the delivering node's, whatever the store
def test_a_webhook_that_does_not_answer_times_out(node, receiver):
    receiver.delay = 3.0
    with SyncClient(node.url) as c:
        hook = {
            "name": "slow",
            "prefix": "s/",
            "action": {"kind": "webhook", "target": receiver.url},
            "timeout_ms": 200,
            "retries": 0,
        }
        c.call("HookAdd", hook)
        c.write_key("s/1", b"x")
        until(lambda: c.call("HookMetrics", {"name": "slow"})["hooks"][0]["failed"] == 1, timeout=10)
        try:
            c.call("HookTrigger", {"name": "slow"})
            raise AssertionError("a trigger outlived the hook's timeout")
        except AspenError as exc:
            assert exc.code == "TIMEOUT"


def test_a_hook_never_shows_what_its_owner_cannot_read(node, receiver):
    owner = mint(node, ("hook", "*"), ("kv:watch", "orders/"), ("kv:read", "orders/public/"), subject="watcher")
    with SyncClient(node.url) as admin, SyncClient(node.url, token=owner) as c:
        c.call("HookAdd", {"name": "peek", "prefix": "orders/", "action": {"kind": "webhook", "target": receiver.url}})
        assert admin.call("HookAdd", {
            "name": "sentinel", "prefix": "orders/", "action": {"kind": "webhook", "target": receiver.url},
        })  # fmt: skip
        everything = {"name": "everything", "action": {"kind": "webhook", "target": receiver.url}}
        admin.call("HookAdd", everything)  # prefix "": every key the admin may read, but none under __
        admin.write_key("__plugin:someone:state", b"theirs")
        admin.write_key("orders/secret/1", b"hidden")
        admin.write_key("orders/public/1", b"shown")
        admin.write_key("elsewhere/1", b"no")
        got = until(lambda: (e := [x for x in receiver.events() if x["hook"] == "peek"]) and len(e) >= 2 and e)

        def keys_of(hook: str) -> list[str]:
            return [e["event"]["key"] for e in receiver.events() if e["hook"] == hook]

        seen = until(lambda: keys_of("everything")[-1:] == ["elsewhere/1"] and keys_of("everything"))  # in order
        assert seen == ["orders/secret/1", "orders/public/1", "elsewhere/1"]
        by_key = {e["event"]["key"]: e["event"] for e in got}
        assert set(by_key) == {"orders/secret/1", "orders/public/1"}
        assert "value" not in by_key["orders/secret/1"] and "value_b64" not in by_key["orders/secret/1"]
        assert by_key["orders/public/1"]["value"] == "shown"
        assert b"hidden" not in b"".join(body for h, body in receiver.posts if json.loads(body)["hook"] == "peek")

        admin.call("TokenRevoke", {"token": owner})
        until(lambda: _refused(c), what="the revocation to reach the node")
        admin.write_key("orders/public/2", b"after")
        until(lambda: any(e["event"]["key"] == "orders/public/2" for e in receiver.events() if e["hook"] == "sentinel"))
        assert until(lambda: admin.call("HookMetrics", {"name": "sentinel"})["hooks"][0]["delivered"] >= 3)
        assert not [e for e in receiver.events() if e["hook"] == "peek" and e["event"]["key"] == "orders/public/2"]
        assert admin.call("HookMetrics", {"name": "peek"})["hooks"][0]["owner_token"] == "TOKEN_REVOKED"
        assert admin.call("HookMetrics", {"name": "sentinel"})["hooks"][0]["owner_token"] == "valid"
        try:
            admin.call("HookTrigger", {"name": "peek"})
            raise AssertionError("a revoked owner's hook still acts")
        except AspenError as exc:
            assert exc.code == "TOKEN_REVOKED"


def _refused(client: SyncClient) -> bool:
    try:
        client.call("HookList", {})
    except AspenError as exc:
        return exc.code == "TOKEN_REVOKED"
    return False


@pytest.mark.etcd
def test_two_nodes_deliver_each_event_once_and_hand_over(home, receiver, etcd_cluster):  # noqa: F811
    asyncio.run(wipe(etcd_cluster))
    (home / "aspen.toml").write_text(CONFIG)
    common = ("--config", str(home / "aspen.toml"), "--etcd", ",".join(etcd_cluster.endpoints))
    a, b = NodeProcess(home / "a", *common), NodeProcess(home / "b", *common)
    with a, b, SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        ca.call("HookAdd", {"name": "fan", "prefix": "fan/", "action": {"kind": "webhook", "target": receiver.url}})
        for i in range(10):
            (ca if i % 2 else cb).write_key(f"fan/{i}", b"v")
        got = until(lambda: (e := receiver.events()) and len(e) >= 10 and e, what="ten events")
        assert sorted(e["event"]["key"] for e in got) == sorted(f"fan/{i}" for i in range(10))  # once each
        a.terminate()  # whichever node delivered, b delivers now (a resigned as it stopped)
        cb.write_key("fan/after", b"v")
        until(lambda: any(e["event"]["key"] == "fan/after" for e in receiver.events()), what="delivery after a stopped")
    assert len({e["id"] for e in receiver.events()}) == 11
