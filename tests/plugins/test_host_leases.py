"""The lease host functions through a real guest: grant, attach, keep alive,
revoke and expiry; and every way a plugin could reach a lease that is not
its own (another plugin's, the node's, a made-up or huge id), wrong types,
a missing permission and the live-lease quota."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from aspen.errors import ErrorCode
from aspen.plugins import host_leases
from aspen.plugins.lease_owner import marker_key
from aspen.plugins.manifest import PluginPermissions
from aspen.rpc.handler import Request, RequestContext

OWN = "__plugin:snoop:"
LEASES = PluginPermissions(kv_read=True, kv_write=True, leases=True)


async def call(handler, function: str, args: dict | str) -> dict:
    """``args`` as an object (HostCall) or as raw argument bytes (HostCallRaw)."""
    body = {"function": function, "raw": args} if isinstance(args, str) else {"function": function, "args": args}
    reply = await handler.handle(
        Request("HostCallRaw" if isinstance(args, str) else "HostCall", body), RequestContext()
    )
    assert reply.type == "HostReply"
    return reply.body


def code(reply: dict) -> str | None:
    return reply.get("error", {}).get("code")


@pytest.fixture
async def snoop(load):
    return await load("hostile/snoop", permissions=LEASES)


async def grant(handler, ttl: int = 30) -> int:
    reply = await call(handler, "aspen_lease_grant", {"ttl": ttl})
    assert reply["ok"]["ttl"] == ttl, reply
    return reply["ok"]["lease_id"]


async def test_grant_attach_keepalive_revoke(snoop, kv):
    lease = await grant(snoop)
    assert (await kv.get(marker_key("snoop", lease))).lease == lease
    assert "ok" in await call(snoop, "aspen_kv_put", {"key": OWN + "a", "value": "1", "lease": lease})
    batch = {"ops": [{"op": "put", "key": OWN + "b", "value": "2", "lease": lease}]}
    assert "ok" in await call(snoop, "aspen_kv_batch", batch)
    txn = {"success": [{"op": "put", "key": OWN + "c", "value": "3", "lease": lease}]}
    assert (await call(snoop, "aspen_kv_transaction", txn))["ok"]["succeeded"]
    for k in "abc":
        assert (await kv.get(OWN + k)).lease == lease
    assert (await call(snoop, "aspen_lease_keepalive", {"lease_id": lease}))["ok"] == {"ttl": 30}
    assert (await call(snoop, "aspen_lease_revoke", {"lease_id": lease}))["ok"] == {"revoked": True}
    for k in "abc":
        assert await kv.get(OWN + k) is None
    assert await kv.get(marker_key("snoop", lease)) is None
    # gone: it is now unknown like any other
    assert code(await call(snoop, "aspen_lease_keepalive", {"lease_id": lease})) == ErrorCode.LEASE_NOT_FOUND
    assert code(await call(snoop, "aspen_lease_revoke", {"lease_id": lease})) == ErrorCode.LEASE_NOT_FOUND


async def test_an_expired_lease_takes_its_keys_and_its_marker(snoop, kv):
    lease = await grant(snoop, ttl=1)
    await call(snoop, "aspen_kv_put", {"key": OWN + "short", "value": "x", "lease": lease})
    deadline = time.monotonic() + 10
    while await kv.get(OWN + "short") is not None:
        assert time.monotonic() < deadline, "the key outlived its lease"
        await asyncio.sleep(0.1)
    assert await kv.get(marker_key("snoop", lease)) is None
    assert code(await call(snoop, "aspen_lease_keepalive", {"lease_id": lease})) == ErrorCode.LEASE_NOT_FOUND


async def test_another_plugins_lease_is_not_found(snoop, load, kv):
    other = await load("hostile/noperm", permissions=LEASES)
    theirs = (await call(other, "aspen_lease_grant", {"ttl": 60}))["ok"]["lease_id"]
    await call(other, "aspen_kv_put", {"key": "__plugin:noperm:k", "value": "v", "lease": theirs})
    node_lease = (await kv.lease_grant(60)).id  # the node's own (a coordination lock, a job claim …)
    await kv.put("app:held", b"v", lease=node_lease)
    revision = await kv.current_revision()
    for lease in (theirs, node_lease, 12345, 2**63 - 1):
        for function, args in [
            ("aspen_lease_keepalive", {"lease_id": lease}),
            ("aspen_lease_revoke", {"lease_id": lease}),
            ("aspen_kv_put", {"key": OWN + "x", "value": "v", "lease": lease}),
            ("aspen_kv_batch", {"ops": [{"op": "put", "key": OWN + "x", "value": "v", "lease": lease}]}),
            ("aspen_kv_transaction", {"success": [{"op": "put", "key": OWN + "x", "value": "v", "lease": lease}]}),
        ]:
            reply = await call(snoop, function, args)
            assert code(reply) == ErrorCode.LEASE_NOT_FOUND, (function, lease, reply)
            assert "noperm" not in json.dumps(reply)  # nothing about the owner
    assert await kv.current_revision() == revision
    assert (await kv.get("__plugin:noperm:k")).lease == theirs
    assert (await kv.get("app:held")).lease == node_lease


async def test_a_forged_marker_value_does_not_make_a_lease_ours(snoop, kv):
    """Only a marker attached to the lease itself counts: a marker key left
    by a bug or written by hand without it proves nothing."""
    node_lease = (await kv.lease_grant(60)).id
    await kv.put(marker_key("snoop", node_lease), b"30")  # no lease attached
    reply = await call(snoop, "aspen_lease_revoke", {"lease_id": node_lease})
    assert code(reply) == ErrorCode.LEASE_NOT_FOUND
    assert (await kv.lease_time_to_live(node_lease)).remaining_ttl > 0


@pytest.mark.parametrize(
    "function, raw, expected",
    [
        ("aspen_lease_grant", "{}", ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": 0}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": 86401}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": -5}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": "30"}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": true}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": 30.5}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": 1' + "0" * 30 + "}", ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", '{"ttl": {"ttl": [30]}}', ErrorCode.PLUGIN_LEASE_TTL_OUT_OF_RANGE),
        ("aspen_lease_grant", "[30]", ErrorCode.BAD_REQUEST),
        ("aspen_lease_grant", '"ttl"', ErrorCode.BAD_REQUEST),
        ("aspen_lease_grant", "not json", ErrorCode.BAD_REQUEST),
        ("aspen_lease_keepalive", "{}", ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_keepalive", '{"lease_id": 0}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_keepalive", '{"lease_id": -1}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_keepalive", '{"lease_id": "1"}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_keepalive", '{"lease_id": [1]}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_revoke", '{"lease_id": 9223372036854775808}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_revoke", '{"lease_id": 1' + "0" * 40 + "}", ErrorCode.INVALID_ARGUMENT),
        ("aspen_lease_revoke", '{"lease_id": false}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_kv_put", '{"key": "__plugin:snoop:a", "value": "v", "lease": "7"}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_kv_put", '{"key": "__plugin:snoop:a", "value": "v", "lease": -7}', ErrorCode.INVALID_ARGUMENT),
        ("aspen_kv_put", '{"key": "__plugin:snoop:a", "value": "v", "lease": true}', ErrorCode.INVALID_ARGUMENT),
        (
            "aspen_kv_batch",
            '{"ops": [{"op": "put", "key": "__plugin:snoop:a", "value": "v", "lease": 1e3}]}',
            ErrorCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_malformed_lease_arguments(snoop, kv, function, raw, expected):
    reply = await call(snoop, function, raw)
    assert code(reply) == expected, reply
    assert await kv.current_revision() == 0


async def test_a_lease_of_ours_next_to_a_foreign_one_refuses_the_whole_batch(snoop, kv):
    ours = await grant(snoop)
    foreign = (await kv.lease_grant(60)).id
    revision = await kv.current_revision()
    ops = [
        {"op": "put", "key": OWN + "a", "value": "v", "lease": ours},
        {"op": "put", "key": OWN + "b", "value": "v", "lease": foreign},
    ]
    assert code(await call(snoop, "aspen_kv_batch", {"ops": ops})) == ErrorCode.LEASE_NOT_FOUND
    assert await kv.current_revision() == revision


async def test_without_the_permission_every_lease_call_is_denied(load, kv):
    plain = await load("hostile/snoop")  # kv_read, kv_write, no leases
    lease = (await kv.lease_grant(60)).id
    for function, args in [
        ("aspen_lease_grant", {"ttl": 30}),
        ("aspen_lease_keepalive", {"lease_id": lease}),
        ("aspen_lease_revoke", {"lease_id": lease}),
        ("aspen_kv_put", {"key": OWN + "a", "value": "v", "lease": lease}),
        ("aspen_kv_batch", {"ops": [{"op": "put", "key": OWN + "a", "value": "v", "lease": lease}]}),
    ]:
        reply = await call(plain, function, args)
        assert code(reply) == ErrorCode.PERMISSION_DENIED, (function, reply)
        assert reply["error"]["details"]["permission"] == "leases"
    assert "ok" in await call(plain, "aspen_kv_put", {"key": OWN + "a", "value": "v", "lease": 0})  # no lease
    assert (await kv.lease_list())[0].id == lease and len(await kv.lease_list()) == 1


async def test_live_leases_per_plugin_are_bounded(snoop, kv, monkeypatch):
    monkeypatch.setattr(host_leases, "MAX_LEASES_PER_PLUGIN", 3)
    leases = [await grant(snoop) for _ in range(3)]
    reply = await call(snoop, "aspen_lease_grant", {"ttl": 30})
    assert code(reply) == ErrorCode.PLUGIN_TOO_MANY_LEASES
    assert reply["error"]["details"] == {"plugin": "snoop", "limit": 3}
    assert len(await kv.lease_list()) == 3
    await call(snoop, "aspen_lease_revoke", {"lease_id": leases[0]})  # one freed: one more may be granted
    await grant(snoop)
    assert code(await call(snoop, "aspen_lease_grant", {"ttl": 30})) == ErrorCode.PLUGIN_TOO_MANY_LEASES
