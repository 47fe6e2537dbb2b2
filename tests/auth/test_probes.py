"""Each probe that once worked against an open node, as a regression test
that now fails the attacker (the auth issue's "Why")."""

from __future__ import annotations

import base64
import time

import httpx
import pytest

from tests.auth.conftest import code_of, rpc


def test_a_shell_job_without_a_token_never_runs(node, admin, mint):
    shell = {"type": "shell", "payload": {"command": "id; head /etc/shadow"}}
    r = rpc(node, "JobSubmit", shell)
    assert (r.status_code, code_of(r)) == (401, "UNAUTHENTICATED")
    # "*" does not imply shell: it must be named
    r = rpc(node, "JobSubmit", shell, token=mint(("job:submit", "*"), ("job:read", "*")))
    assert (r.status_code, code_of(r)) == (403, "UNAUTHORIZED")
    assert r.json()["body"]["details"] == {"operation": "job:submit", "resource": "shell"}
    assert admin.call("JobList", {"type": "shell"})["jobs"] == []


def test_trusting_a_plugin_key_needs_plugin_admin(node, mint):
    body = {"pubkey": "11" * 32, "name": "mallory"}
    assert rpc(node, "PluginTrustAdd", body).status_code == 401
    r = rpc(node, "PluginTrustAdd", body, token=mint(("kv:write", "*"), ("plugin:call", "*")))
    assert (r.status_code, code_of(r)) == (403, "UNAUTHORIZED")
    r = rpc(node, "PluginReload", {}, token=mint(("kv:read", "x/")))
    assert (r.status_code, code_of(r)) == (403, "UNAUTHORIZED")
    trusted = rpc(node, "PluginTrustList", {}, token=node.token).json()["body"]["authors"]
    assert all(a["pubkey"] != "11" * 32 for a in trusted)


def test_system_leases_are_invisible_and_unrevokable(node, admin, mint):
    user = mint(("lease", "*"), ("kv:write", "l/"))
    listed = rpc(node, "LeaseList", {}, token=user).json()["body"]["leases"]
    assert listed == []  # the node's own registration lease is not the caller's
    records = admin.scan_keys("__cluster:nodes:").entries
    assert records and records[0].lease, "the node registers on a lease"
    system_lease = records[0].lease
    for rtype in ("LeaseRevoke", "LeaseKeepalive", "LeaseTimeToLive"):
        for token in (user, node.token):  # not even the admin
            r = rpc(node, rtype, {"lease_id": system_lease}, token=token)
            assert code_of(r) == "LEASE_NOT_FOUND", (rtype, r.text)
    assert admin.scan_keys("__cluster:nodes:").entries, "the registration is still there"
    # attaching a key to someone else's lease is refused the same way
    r = rpc(node, "WriteKey", {"key": "l/k", "value": "", "lease_id": system_lease}, token=user)
    assert code_of(r) == "LEASE_NOT_FOUND"


def test_leases_belong_to_their_granter(node, mint):
    alice, bob = mint(("lease", "*"), subject="alice-l"), mint(("lease", "*"), subject="bob-l")
    granted = rpc(node, "LeaseGrant", {"ttl_seconds": 60}, token=alice).json()["body"]
    lease_id = granted["lease_id"]
    assert [x["id"] for x in rpc(node, "LeaseList", {}, token=alice).json()["body"]["leases"]] == [lease_id]
    assert rpc(node, "LeaseList", {}, token=bob).json()["body"]["leases"] == []
    assert code_of(rpc(node, "LeaseRevoke", {"lease_id": lease_id}, token=bob)) == "LEASE_NOT_FOUND"
    ttl = rpc(node, "LeaseTimeToLive", {"lease_id": lease_id, "include_keys": True}, token=alice).json()["body"]
    assert ttl["lease"]["keys"] == []  # the ownership record is not shown as one of its keys
    assert rpc(node, "LeaseRevoke", {"lease_id": lease_id}, token=alice).json()["body"]["keys_deleted"] == 0


def test_plugin_modules_cannot_be_deleted_or_unpinned(node, admin, echo):
    wasm_hash = echo["wasm_hash"]
    for token in (node.token,):
        r = rpc(node, "DeleteBlob", {"hash": wasm_hash, "is_force": True}, token=token)
        assert code_of(r) == "BLOB_PROTECTED", r.text
        tag = f"plugin:echo:{echo['version']}"
        assert code_of(rpc(node, "UnprotectBlob", {"tag": tag}, token=token)) == "BLOB_PROTECTED"
        assert code_of(rpc(node, "ProtectBlob", {"hash": wasm_hash, "tag": "plugin:squat:1"}, token=token)) == (
            "BLOB_PROTECTED"
        )
    assert admin.has_blob(wasm_hash).does_exist
    assert admin.call("PluginReload", {"name": "echo"})["is_success"]
    assert admin.call("Echo", {"hi": 1}) == {"hi": 1}


def test_blob_admin_is_needed_to_delete_or_pin(node, mint):
    user = mint(("blob:write", "*"), ("blob:read", "*"))
    added = rpc(node, "AddBlob", {"data": "aGk="}, token=user).json()["body"]
    for rtype, body in (
        ("DeleteBlob", {"hash": added["hash"]}),
        ("ProtectBlob", {"hash": added["hash"], "tag": "keep"}),
        ("UnprotectBlob", {"tag": "keep"}),
        ("AddBlob", {"data": "aGk=", "tag": "keep"}),
    ):
        r = rpc(node, rtype, body, token=user)
        assert r.json()["body"]["details"]["operation"] == "blob:admin", rtype


def test_blob_routes_need_tokens_and_peers_need_the_node_credential(node, mint):
    assert httpx.put(f"{node.url}/v1/blobs", content=b"abc").status_code == 401
    reader = mint(("blob:read", "*"))
    r = httpx.put(f"{node.url}/v1/blobs", content=b"abc", headers={"authorization": f"Bearer {reader}"})
    assert r.status_code == 403 and r.json()["body"]["details"]["operation"] == "blob:write"
    put = httpx.put(f"{node.url}/v1/blobs", content=b"abc", headers=node.auth_headers).json()
    assert httpx.get(f"{node.url}/v1/blobs/{put['hash']}").status_code == 401
    peer = {**node.auth_headers, "x-aspen-peer": "1"}  # the admin is not a cluster member
    assert httpx.get(f"{node.url}/v1/blobs/{put['hash']}", headers=peer).status_code == 403
    assert httpx.put(f"{node.url}/v1/blobs", content=b"x", headers=peer).status_code == 403


def test_job_records_are_the_submitters(node, admin, mint):
    alice = mint(("job:submit", "shell"), ("job:read", "*"), subject="alice-j")
    bob = mint(("job:read", "*"), subject="bob-j")
    r = rpc(node, "JobSubmit", {"type": "shell", "payload": {"command": "true"}}, token=alice)
    assert code_of(r) is None, r.text
    job_id = r.json()["body"]["job"]["id"]
    assert rpc(node, "JobStatus", {"id": job_id}, token=alice).json()["body"]["job"]["submitter"] == "alice-j"
    for rtype in ("JobStatus", "JobLogs", "JobCancel", "JobRetry"):
        assert code_of(rpc(node, rtype, {"id": job_id}, token=bob)) == "JOB_NOT_FOUND", rtype
    listed = rpc(node, "JobList", {}, token=bob).json()["body"]["jobs"]
    assert job_id not in [j["id"] for j in listed]
    assert job_id in [j["id"] for j in rpc(node, "JobList", {}, token=alice).json()["body"]["jobs"]]
    assert admin.call("JobStatus", {"id": job_id})["job"]["id"] == job_id  # the admin holds job:admin
    assert code_of(rpc(node, "JobWorkers", {}, token=bob)) == "UNAUTHORIZED"


def test_a_wasm_job_naming_a_plugin_needs_plugin_call(node, mint, echo):
    token = mint(("job:submit", "wasm"))
    r = rpc(node, "JobSubmit", {"type": "wasm", "payload": {"plugin": "echo", "input": {}}}, token=token)
    assert r.json()["body"]["details"] == {"operation": "plugin:call", "resource": "echo"}


def test_plugin_requests_need_plugin_call(node, mint, echo):
    assert code_of(rpc(node, "Echo", {"a": 1}, token=mint(("plugin:call", "other")))) == "UNAUTHORIZED"
    assert rpc(node, "Echo", {"a": 1}, token=mint(("plugin:call", "echo"))).json() == {"type": "Echo", "body": {"a": 1}}


def test_foreign_watches_cannot_be_cancelled_or_read(node, mint):
    alice, bob = mint(("kv:watch", "w/"), subject="alice-w"), mint(("kv:watch", "w/"), subject="bob-w")
    created = rpc(node, "WatchCreate", {"prefix": "w/"}, token=alice).json()["body"]
    r = rpc(node, "WatchCancel", {"watch_id": created["watch_id"]}, token=bob)
    assert code_of(r) == "WATCH_NOT_FOUND"
    stream = httpx.get(node.url + created["stream_path"], headers={"authorization": f"Bearer {bob}"})
    assert stream.status_code == 404 and stream.json()["body"]["code"] == "WATCH_NOT_FOUND"
    assert rpc(node, "WatchCancel", {"watch_id": created["watch_id"]}, token=alice).json()["body"]["was_cancelled"]


@pytest.mark.timeout(60)
def test_an_expiring_token_ends_its_watch_stream(node, mint, admin):
    token = mint(("kv:watch", "exp/"), ttl=3)
    started = time.monotonic()
    headers = {"authorization": f"Bearer {token}"}
    with httpx.stream("GET", f"{node.url}/v1/watch", params={"prefix": "exp/"}, headers=headers, timeout=30) as resp:
        assert resp.status_code == 200
        admin.write_key("exp/a", b"1")
        lines = list(resp.iter_lines())
    assert any(line.startswith("data:") and "exp/a" in line for line in lines), lines
    assert "event: error" in lines and any("TOKEN_EXPIRED" in line for line in lines), lines
    assert time.monotonic() - started < 10


def test_a_manifest_can_make_request_types_public(node, admin, mint, echo):
    import json

    from aspen.plugins.build import REPO

    manifest = json.loads((REPO / "plugins" / "echo" / "plugin.json").read_text())
    wasm = base64.b64encode((REPO / "plugins" / "echo" / "plugin.wasm").read_bytes()).decode()
    bad = {**manifest, "version": "0.1.1", "public": ["NotHandled"]}
    r = rpc(node, "PluginUpgrade", {"manifest": bad, "wasm": wasm}, token=node.token)
    assert code_of(r) == "INVALID_MANIFEST"
    upgrade = {**manifest, "version": "0.1.1", "public": ["EchoRead"]}
    r = rpc(node, "PluginUpgrade", {"manifest": upgrade, "wasm": wasm}, token=node.token)
    assert r.json()["body"]["status"]["state"] == "ready", r.text
    anyone = mint(("kv:read", "nothing/"))
    r = rpc(node, "EchoRead", {"key": "k"}, token=anyone)
    assert r.status_code == 200 and code_of(r) != "UNAUTHORIZED", r.text  # it reached the plugin
    r = rpc(node, "Echo", {"x": 1}, token=anyone)
    assert r.json()["body"]["details"] == {"operation": "plugin:call", "resource": "echo"}
    assert rpc(node, "EchoRead", {"key": "k"}).status_code == 401  # public is not anonymous
