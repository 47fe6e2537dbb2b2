"""The hostile corpus against the one gate: a plugin holding kv_read and
kv_write on its own namespace tries every way out of it, and a plugin with
no permissions tries every gated host function. Every attempt must answer
a structured error (never a trap) and leave the store untouched."""

from __future__ import annotations

import base64

import pytest

from aspen.plugins.manifest import PluginPermissions
from aspen.plugins.namespace import RESERVED_PREFIXES
from aspen.rpc.handler import Request, RequestContext
from aspen.storage.limits import encode_continuation

FOREIGN_KEYS = [f"{p}secret" for p in RESERVED_PREFIXES] + [
    "__plugin:echo:secret",
    "__plugin:snoo",  # a prefix of snoop's namespace, not inside it
    "__plugin:snoopy:x",  # another plugin whose name starts with "snoop"
    "counter:hits",
    "plain",
]
OWN = "__plugin:snoop:"


async def host_call(handler, function: str, args: dict) -> dict:
    reply = await handler.handle(Request("HostCall", {"function": function, "args": args}), RequestContext())
    assert reply.type == "HostReply"
    return reply.body


def denied(reply: dict, code: str = "KV_PREFIX_DENIED") -> bool:
    return reply.get("error", {}).get("code") == code


@pytest.fixture
async def seeded(kv):
    for key in FOREIGN_KEYS:
        await kv.put(key, b"original")
    return await kv.current_revision()


@pytest.fixture
async def snoop(load, seeded):
    return await load("hostile/snoop")


async def _unchanged(kv, revision: int) -> None:
    assert await kv.current_revision() == revision
    for key in FOREIGN_KEYS:
        assert (await kv.get(key)).value == b"original"


async def test_own_namespace_works(snoop, kv):
    assert "ok" in await host_call(snoop, "aspen_kv_put", {"key": OWN + "a", "value": "1"})
    got = await host_call(snoop, "aspen_kv_get", {"key": OWN + "a"})
    assert got["ok"]["kv"]["value"] == "1"
    binary = base64.b64encode(b"\xff\x00").decode()
    await host_call(snoop, "aspen_kv_put", {"key": OWN + "b", "value_b64": binary})
    assert (await kv.get(OWN + "b")).value == b"\xff\x00"
    got = await host_call(snoop, "aspen_kv_get", {"key": OWN + "b"})
    assert got["ok"]["kv"]["value_b64"] == binary
    page = await host_call(snoop, "aspen_kv_scan", {"prefix": OWN, "limit": 1})
    assert [e["key"] for e in page["ok"]["entries"]] == [OWN + "a"]
    assert page["ok"]["is_truncated"]
    page2 = await host_call(snoop, "aspen_kv_scan", {"prefix": OWN, "continuation": page["ok"]["continuation"]})
    assert [e["key"] for e in page2["ok"]["entries"]] == [OWN + "b"]
    cas = await host_call(snoop, "aspen_kv_cas", {"key": OWN + "a", "expected": "1", "new": "2"})
    assert cas["ok"]["succeeded"]
    assert (await host_call(snoop, "aspen_kv_delete", {"key": OWN + "a"}))["ok"]["deleted"] is True


@pytest.mark.parametrize("key", FOREIGN_KEYS)
async def test_single_key_ops_outside_namespace_denied(snoop, kv, seeded, key):
    assert denied(await host_call(snoop, "aspen_kv_get", {"key": key}))
    assert denied(await host_call(snoop, "aspen_kv_put", {"key": key, "value": "pwned"}))
    assert denied(await host_call(snoop, "aspen_kv_delete", {"key": key}))
    assert denied(await host_call(snoop, "aspen_kv_cas", {"key": key, "expected": "original", "new": "pwned"}))
    assert denied(await host_call(snoop, "aspen_kv_cas", {"key": key, "new": "pwned"}))
    await _unchanged(kv, seeded)


@pytest.mark.parametrize(
    "prefix", [*RESERVED_PREFIXES, "__plugin:echo:", "__plugin:", "__", "_", "c", "__plugin:snoop"]
)
async def test_scan_outside_namespace_denied(snoop, prefix):
    assert denied(await host_call(snoop, "aspen_kv_scan", {"prefix": prefix}))


async def test_empty_or_missing_scan_prefix_denied(snoop):
    assert denied(await host_call(snoop, "aspen_kv_scan", {"prefix": ""}))
    assert denied(await host_call(snoop, "aspen_kv_scan", {}))
    assert denied(await host_call(snoop, "aspen_kv_scan", {"prefix": None}))


@pytest.mark.parametrize("target", ["__apps:", "__plugin:a", "", "zzz"])
async def test_forged_continuation_cannot_move_the_scan(snoop, kv, target):
    await kv.put(OWN + "mine", b"x")
    forged = encode_continuation(target.encode()) if target else "AAAA"
    reply = await host_call(snoop, "aspen_kv_scan", {"prefix": OWN, "continuation": forged})
    assert "error" in reply
    assert reply["error"]["code"] in ("KV_PREFIX_DENIED", "INVALID_CONTINUATION")


async def test_batch_smuggling_a_foreign_key_writes_nothing(snoop, kv, seeded):
    for foreign in FOREIGN_KEYS:
        ops = [
            {"op": "put", "key": OWN + "ok", "value": "v"},
            {"op": "put", "key": foreign, "value": "pwned"},
        ]
        assert denied(await host_call(snoop, "aspen_kv_batch", {"ops": ops}))
        ops = [{"op": "put", "key": OWN + "ok", "value": "v"}, {"op": "delete", "key": foreign}]
        assert denied(await host_call(snoop, "aspen_kv_batch", {"ops": ops}))
    for prefix in ("__", "", "__plugin:"):
        ops = [{"op": "delete", "key": prefix, "prefix": True}]
        assert denied(await host_call(snoop, "aspen_kv_batch", {"ops": ops}))
    assert await kv.get(OWN + "ok") is None
    await _unchanged(kv, seeded)


async def test_batch_in_own_namespace_is_atomic(snoop, kv):
    ops = [{"op": "put", "key": OWN + "x", "value": "1"}, {"op": "put", "key": OWN + "y", "value": "2"}]
    reply = await host_call(snoop, "aspen_kv_batch", {"ops": ops})
    x, y = await kv.get(OWN + "x"), await kv.get(OWN + "y")
    assert reply["ok"]["revision"] == x.mod_revision == y.mod_revision


@pytest.mark.parametrize("foreign", FOREIGN_KEYS)
async def test_transaction_smuggling_a_foreign_key_denied(snoop, kv, seeded, foreign):
    own_put = {"op": "put", "key": OWN + "t", "value": "v"}
    attempts = [
        {"compares": [{"key": foreign, "target": "exists", "value": True}], "success": [own_put]},
        {"success": [own_put, {"op": "get", "key": foreign}]},
        {"success": [own_put], "failure": [{"op": "put", "key": foreign, "value": "pwned"}]},
        {"success": [own_put, {"op": "delete", "key": foreign}]},
        {"success": [own_put, {"op": "range", "prefix": foreign}]},
        {"success": [own_put, {"op": "range", "prefix": ""}]},
    ]
    for txn in attempts:
        assert denied(await host_call(snoop, "aspen_kv_transaction", txn)), txn
    assert await kv.get(OWN + "t") is None
    await _unchanged(kv, seeded)


async def test_transaction_in_own_namespace(snoop, kv):
    await kv.put(OWN + "c", b"1")
    txn = {
        "compares": [{"key": OWN + "c", "target": "value", "op": "==", "value": "1"}],
        "success": [{"op": "put", "key": OWN + "c", "value": "2"}, {"op": "range", "prefix": OWN}],
        "failure": [{"op": "get", "key": OWN + "c"}],
    }
    reply = (await host_call(snoop, "aspen_kv_transaction", txn))["ok"]
    assert reply["succeeded"] and reply["results"][1]["kvs"][0]["value"] == "2"


async def test_malformed_host_arguments_are_errors_not_traps(snoop):
    assert denied(await host_call(snoop, "aspen_kv_get", {"key": 5}), "INVALID_KEY")
    assert denied(await host_call(snoop, "aspen_kv_get", {"key": "x" * 5000}), "KEY_TOO_LARGE")
    assert denied(await host_call(snoop, "aspen_kv_put", {"key": OWN + "k", "value_b64": "!!"}), "INVALID_ARGUMENT")
    assert denied(await host_call(snoop, "aspen_kv_batch", {"ops": "nope"}), "INVALID_ARGUMENT")
    assert denied(await host_call(snoop, "aspen_kv_batch", {"ops": [{"op": "explode"}]}), "INVALID_ARGUMENT")
    assert denied(await host_call(snoop, "aspen_kv_scan", {"prefix": OWN, "limit": 10**9}), "TOO_MANY_OPERATIONS")


GATED = {
    "aspen_kv_get": ({"key": "__plugin:noperm:a"}, "kv_read"),
    "aspen_kv_put": ({"key": "__plugin:noperm:a", "value": "v"}, "kv_write"),
    "aspen_kv_delete": ({"key": "__plugin:noperm:a"}, "kv_write"),
    "aspen_kv_scan": ({"prefix": "__plugin:noperm:"}, "kv_read"),
    "aspen_kv_cas": ({"key": "__plugin:noperm:a", "new": "v"}, "kv_read"),
    "aspen_kv_batch": ({"ops": [{"op": "put", "key": "__plugin:noperm:a", "value": "v"}]}, "kv_write"),
    "aspen_kv_transaction": ({"success": [{"op": "put", "key": "__plugin:noperm:a", "value": "v"}]}, "kv_write"),
    "aspen_blob_get": ({"hash": "0" * 64}, "blob_read"),
    "aspen_blob_has": ({"hash": "0" * 64}, "blob_read"),
    "aspen_blob_put": ({"data": "x"}, "blob_write"),
    "aspen_random_bytes": ({"n": 8}, "randomness"),
    "aspen_node_info": ({}, "cluster_info"),
    "aspen_sign": ({"data": "x"}, "signing"),
    "aspen_verify": ({"data": "x", "public_key": "00" * 32, "signature": "00" * 64}, "signing"),
    "aspen_lease_grant": ({"ttl": 30}, "leases"),
    "aspen_lease_keepalive": ({"lease_id": 1}, "leases"),
    "aspen_lease_revoke": ({"lease_id": 1}, "leases"),
}


async def test_every_gated_function_denied_by_default(load, kv, caplog):
    noperm = await load("hostile/noperm")
    for function, (args, permission) in GATED.items():
        reply = await host_call(noperm, function, args)
        assert denied(reply, "PERMISSION_DENIED"), function
        assert reply["error"]["details"] == {"plugin": "noperm", "permission": permission}
    assert await kv.current_revision() == 0
    assert any("noperm" in r.getMessage() and "denied" in r.getMessage() for r in caplog.records)


async def test_ungated_functions(load):
    noperm = await load("hostile/noperm")
    assert (await host_call(noperm, "aspen_host_api_version", {}))["ok"] == {"version": "1.0.0"}
    caps = (await host_call(noperm, "aspen_host_capabilities", {}))["ok"]
    assert set(GATED) < set(caps["functions"]) and caps["permissions"] == []
    assert caps["kv_prefixes"] == ["__plugin:noperm:"]
    assert (await host_call(noperm, "aspen_now_ms", {}))["ok"]["now_ms"] > 1_700_000_000_000
    assert (await host_call(noperm, "aspen_log", {"level": "info", "message": "hi"}))["ok"] == {}
    assert denied(await host_call(noperm, "aspen_log", {"level": "shout"}), "INVALID_ARGUMENT")


async def test_granted_blob_signing_randomness_node_info(load, blobs, signing_key):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    perms = PluginPermissions(blob_read=True, blob_write=True, signing=True, randomness=True, cluster_info=True)
    snoop = await load("hostile/snoop", permissions=perms)
    put = (await host_call(snoop, "aspen_blob_put", {"data": "blob body"}))["ok"]
    assert await blobs.get_bytes(put["hash"]) == b"blob body"
    assert (await host_call(snoop, "aspen_blob_has", {"hash": put["hash"]}))["ok"]["exists"]
    got = (await host_call(snoop, "aspen_blob_get", {"hash": put["hash"]}))["ok"]
    assert base64.b64decode(got["data_b64"]) == b"blob body"
    assert denied(await host_call(snoop, "aspen_blob_get", {"hash": "1" * 64}), "BLOB_NOT_FOUND")
    signed = (await host_call(snoop, "aspen_sign", {"data": "msg"}))["ok"]
    public = signing_key.public_key()
    public.verify(bytes.fromhex(signed["signature"]), b"msg")
    assert signed["public_key"] == public.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
    ok = {"data": "msg", "public_key": signed["public_key"], "signature": signed["signature"]}
    assert (await host_call(snoop, "aspen_verify", ok))["ok"]["valid"] is True
    assert (await host_call(snoop, "aspen_verify", {**ok, "data": "other"}))["ok"]["valid"] is False
    rnd = (await host_call(snoop, "aspen_random_bytes", {"n": 16}))["ok"]
    assert len(base64.b64decode(rnd["bytes_b64"])) == 16
    assert denied(await host_call(snoop, "aspen_random_bytes", {"n": 1 << 20}), "INVALID_ARGUMENT")
    assert (await host_call(snoop, "aspen_node_info", {}))["ok"] == {"node_id": "node-1", "cluster": "test"}
    # Blob permissions do not open the KV store.
    assert denied(await host_call(snoop, "aspen_kv_get", {"key": OWN + "x"}), "PERMISSION_DENIED")
