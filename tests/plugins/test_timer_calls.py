"""The timer host functions called by a real guest (hostile/ticker): schedule,
replace, list and cancel; the limit of 16 with its own code; every bad
argument a stable code with nothing written; no ``timers`` permission, no
timers."""

from __future__ import annotations

import json

import pytest

from aspen.clock import now_ms
from aspen.errors import ErrorCode
from aspen.plugins.manifest import PluginPermissions
from aspen.plugins.timers import MAX_TIMERS, timers_key
from aspen.rpc.handler import Request, RequestContext

SCHEDULE, CANCEL, LIST = "aspen_schedule_timer", "aspen_cancel_timer", "aspen_list_timers"


async def tcall(ticker, function: str, args: dict | None = None, *, raw: str | None = None) -> dict:
    body = {"function": function, **({"raw": raw} if raw is not None else {"args": args or {}})}
    reply = await ticker.handle(Request("TickerCall", body), RequestContext())
    assert reply.type == "HostReply"
    return reply.body


def code(reply: dict) -> str | None:
    return reply.get("error", {}).get("code")


@pytest.fixture
async def ticker(load):
    return await load("hostile/ticker")


async def test_schedule_replace_list_and_cancel(ticker, kv):
    before = now_ms()
    got = await tcall(ticker, SCHEDULE, {"name": "a.b-c_1", "interval_ms": 1000, "repeating": True})
    assert before + 1000 <= got["ok"]["next_fire_ms"] <= now_ms() + 1000
    await tcall(ticker, SCHEDULE, {"name": "once", "interval_ms": 86_400_000})  # repeating defaults to false
    again = await tcall(ticker, SCHEDULE, {"name": "a.b-c_1", "interval_ms": 5000, "repeating": True})
    listed = (await tcall(ticker, LIST))["ok"]["timers"]
    assert listed == [
        {"name": "a.b-c_1", "interval_ms": 5000, "repeating": True, "next_fire_ms": again["ok"]["next_fire_ms"]},
        {"name": "once", "interval_ms": 86_400_000, "repeating": False, "next_fire_ms": listed[1]["next_fire_ms"]},
    ]  # a reused name replaced its timer: still two
    assert await kv.get(timers_key("ticker")) is not None
    assert (await tcall(ticker, CANCEL, {"name": "a.b-c_1"}))["ok"] == {"cancelled": True}
    assert (await tcall(ticker, CANCEL, {"name": "a.b-c_1"}))["ok"] == {"cancelled": False}
    assert (await tcall(ticker, CANCEL, {"name": "once"}))["ok"] == {"cancelled": True}
    assert await kv.get(timers_key("ticker")) is None  # the last one gone: no record left
    assert (await tcall(ticker, LIST))["ok"] == {"timers": []}


async def test_the_seventeenth_timer_is_refused_with_its_own_code(ticker):
    for i in range(MAX_TIMERS):
        assert "ok" in await tcall(ticker, SCHEDULE, {"name": f"t{i}", "interval_ms": 60_000})
    refused = await tcall(ticker, SCHEDULE, {"name": "t16", "interval_ms": 60_000})
    assert code(refused) == ErrorCode.PLUGIN_TOO_MANY_TIMERS and refused["error"]["details"]["max"] == MAX_TIMERS
    assert "ok" in await tcall(ticker, SCHEDULE, {"name": "t3", "interval_ms": 2000})  # a reused name is no new timer
    await tcall(ticker, CANCEL, {"name": "t0"})
    assert "ok" in await tcall(ticker, SCHEDULE, {"name": "t16", "interval_ms": 60_000})
    assert len((await tcall(ticker, LIST))["ok"]["timers"]) == MAX_TIMERS


INVALID = ErrorCode.PLUGIN_TIMER_INVALID
HOSTILE = [
    ({}, INVALID, "name"),
    ({"interval_ms": 1000}, INVALID, "name"),
    ({"name": 5, "interval_ms": 1000}, INVALID, "name"),
    ({"name": None, "interval_ms": 1000}, INVALID, "name"),
    ({"name": ["a"], "interval_ms": 1000}, INVALID, "name"),
    ({"name": "", "interval_ms": 1000}, INVALID, "name"),
    ({"name": "a" * 65, "interval_ms": 1000}, INVALID, "name"),
    ({"name": "a/b", "interval_ms": 1000}, INVALID, "name"),
    ({"name": "a:b", "interval_ms": 1000}, INVALID, "name"),
    ({"name": "é", "interval_ms": 1000}, INVALID, "name"),
    ({"name": "a"}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 999}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 86_400_001}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 0}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": -1000}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 2**70}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": "1000"}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 1000.0}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": True}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": {"ms": 1000}}, INVALID, "interval_ms"),
    ({"name": "a", "interval_ms": 1000, "repeating": "yes"}, INVALID, "repeating"),
    ({"name": "a", "interval_ms": 1000, "repeating": 1}, INVALID, "repeating"),
    ({"name": "a", "interval_ms": 1000, "repeating": None}, INVALID, "repeating"),
]


@pytest.mark.parametrize(("args", "expected", "field"), HOSTILE)
async def test_bad_schedule_arguments_have_stable_codes(ticker, kv, args, expected, field):
    reply = await tcall(ticker, SCHEDULE, raw=json.dumps(args))  # as sent, not re-encoded by the guest
    assert code(reply) == expected and reply["error"]["details"]["field"] == field, reply
    if field == "name":
        assert code(await tcall(ticker, CANCEL, raw=json.dumps(args))) == expected
    assert await kv.current_revision() == 0  # nothing was written


@pytest.mark.parametrize("function", [SCHEDULE, CANCEL, LIST])
@pytest.mark.parametrize("raw", ["[1]", '"name"', "17", "not json", "[" * 5000, '{"name":' * 5000 + "1" + "}" * 5000])
async def test_arguments_that_are_not_an_object_are_bad_requests(ticker, kv, function, raw):
    assert code(await tcall(ticker, function, raw=raw)) == ErrorCode.BAD_REQUEST
    assert await kv.current_revision() == 0


@pytest.mark.parametrize("function", [SCHEDULE, CANCEL, LIST])
async def test_without_the_timers_permission_every_timer_call_is_denied(load, kv, function):
    ticker = await load("hostile/ticker", permissions=PluginPermissions(kv_read=True, kv_write=True))
    reply = await tcall(ticker, function, {"name": "a", "interval_ms": 1000})
    assert code(reply) == ErrorCode.PERMISSION_DENIED and reply["error"]["details"]["permission"] == "timers"
    assert await kv.current_revision() == 0
