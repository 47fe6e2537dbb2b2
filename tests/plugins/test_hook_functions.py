"""The aspen_hook_* host functions, called by a real guest (hostile/snoop):
the permission, the 16-pattern quota, and hostile arguments, each with its
stable code; a plugin only ever changes its own subscriptions."""

from __future__ import annotations

import json

import pytest

from aspen.errors import ErrorCode
from aspen.plugins.hook_subscribers import plugin_subscriptions
from aspen.plugins.manifest import PluginPermissions
from aspen.rpc.handler import Request, RequestContext
from tests.plugins.test_hostile_input import ALL, DEEP, code, nested, raw_call


async def call(plugin, function: str, args) -> dict:
    reply = await plugin.handle(Request("HostCall", {"function": function, "args": args}), RequestContext())
    return reply.body


@pytest.fixture
async def snoop(load):
    return await load("hostile/snoop", permissions=ALL)


async def test_subscribe_list_unsubscribe(snoop, kv):
    assert (await call(snoop, "aspen_hook_subscribe", {"pattern": "hooks.kv.>"}))["ok"] == {"patterns": ["hooks.kv.>"]}
    again = await call(snoop, "aspen_hook_subscribe", {"pattern": "hooks.kv.>"})  # idempotent
    assert again["ok"] == {"patterns": ["hooks.kv.>"]}
    await call(snoop, "aspen_hook_subscribe", {"pattern": "hooks.job.*"})
    listed = (await call(snoop, "aspen_hook_list", {}))["ok"]
    assert listed["patterns"] == ["hooks.kv.>", "hooks.job.*"] and listed["dropped"] == 0
    assert (await call(snoop, "aspen_hook_unsubscribe", {"pattern": "hooks.kv.>"}))["ok"] == {"removed": True}
    assert (await call(snoop, "aspen_hook_unsubscribe", {"pattern": "hooks.kv.>"}))["ok"] == {"removed": False}
    assert (await plugin_subscriptions(kv).get("snoop")).patterns == ("hooks.job.*",)
    assert (await plugin_subscriptions(kv).get("other")).patterns == ()  # its own only


async def test_the_seventeenth_subscription_is_refused(snoop, kv):
    for i in range(16):
        assert "ok" in await call(snoop, "aspen_hook_subscribe", {"pattern": f"hooks.kv.p{i}"})
    reply = await call(snoop, "aspen_hook_subscribe", {"pattern": "hooks.kv.p16"})
    assert code(reply) == ErrorCode.PLUGIN_TOO_MANY_SUBSCRIPTIONS
    assert len((await plugin_subscriptions(kv).get("snoop")).patterns) == 16


@pytest.mark.parametrize(
    "args",
    [{}, {"pattern": 5}, {"pattern": None}, {"pattern": ["hooks.>"]}, {"pattern": {"a": "b"}}, {"pattern": ""},
     {"pattern": "x" * 257}, {"pattern": "hooks..kv"}, {"pattern": "hooks.>.kv"}, {"pattern": "hooks.k*"},
     {"pattern": "hooks. kv"}],
)  # fmt: skip
@pytest.mark.parametrize("function", ["aspen_hook_subscribe", "aspen_hook_unsubscribe"])
async def test_hostile_patterns_have_a_stable_code(snoop, kv, function, args):
    assert code(await call(snoop, function, args)) == ErrorCode.HOOK_PATTERN_INVALID
    assert await kv.get("__plugins:hooks:subs:snoop") is None


@pytest.mark.parametrize("function", ["aspen_hook_subscribe", "aspen_hook_unsubscribe", "aspen_hook_list"])
async def test_malformed_argument_documents_are_bad_request(snoop, function):
    for raw in ("[1, 2]", '"hooks.>"', "not json", nested(DEEP)):
        assert code(await raw_call(snoop, function, raw)) == ErrorCode.BAD_REQUEST, raw


@pytest.mark.parametrize("function", ["aspen_hook_subscribe", "aspen_hook_unsubscribe", "aspen_hook_list"])
async def test_without_the_hooks_permission_nothing_is_stored(load, kv, function):
    others = PluginPermissions(**{p: True for p in PluginPermissions.__struct_fields__ if p != "hooks"})
    snoop = await load("hostile/snoop", permissions=others)
    reply = await call(snoop, function, {"pattern": "hooks.>"})
    assert code(reply) == ErrorCode.PERMISSION_DENIED and reply["error"]["details"]["permission"] == "hooks"
    assert await kv.get("__plugins:hooks:subs:snoop") is None
    assert json.dumps(reply)  # an answer, never a trap
