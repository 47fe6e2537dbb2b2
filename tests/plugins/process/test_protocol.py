"""The framing and the peer, in memory: two peers wired back to back."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from aspen.errors import AspenError
from aspen.plugins.process.connection import Peer, PeerLimits
from aspen.plugins.process.protocol import LineSplitter, Oversized, decode_line, error_from, head_id, raw


def _sizes(items):
    return [i.size if isinstance(i, Oversized) else i for i in items]


def test_lines_split_across_any_chunking():
    data = b'{"a":1}\n\n{"b":2}\n{"c":3}\n'
    for cut in range(1, len(data)):
        s = LineSplitter(100)
        assert s.feed(data[:cut]) + s.feed(data[cut:]) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


def test_an_oversized_line_is_skipped_in_bounded_memory():
    s = LineSplitter(10)
    assert s.feed(b"ok\n0123456789X") == [b"ok"]
    assert s.feed(b"more" * 1000) == [] and len(s._buf) == 0  # nothing buffered while skipping
    out = s.feed(b"tail\nnext\n")
    assert _sizes(out) == [11 + 4000 + 4, b"next"] and out[0].head.startswith(b"0123456789")
    assert _sizes(LineSplitter(10).feed(b"0123456789AB\nx\n")) == [12, b"x"]
    assert LineSplitter(10).feed(b"0123456789\n") == [b"0123456789"]  # exactly the limit is fine


def test_undecodable_lines_still_name_their_call():
    assert head_id(b'{"jsonrpc":"2.0","id":42,"result":{oops') == 42
    assert head_id(b'{"id": 7, "jsonrpc": "2.0"') == 7
    assert head_id(b'{"result":1,"id":3}') is None  # the id must come first
    with pytest.raises(AspenError) as exc:
        decode_line(b'{"jsonrpc":"1.0","id":1,"result":{}}')
    assert exc.value.code == "BAD_REQUEST"


def test_a_malformed_error_object_is_bad_output():
    assert error_from({"code": "KV_PREFIX_DENIED", "message": "no", "details": {"op": "read"}}).details == {
        "op": "read"
    }
    for body in ({"code": 5}, {"code": "lower"}, {"code": "X" * 65}, {"code": "OK", "message": 1}):
        assert error_from(body).code == "PLUGIN_BAD_OUTPUT"


def pair(serve_b, *, limits: PeerLimits | None = None):
    faults: list[str] = []
    a: Peer
    b: Peer
    a = Peer(lambda d: b.feed(d), lambda m, p: raw({}), on_fault=faults.append, limits=limits, name="a")
    b = Peer(lambda d: a.feed(d), serve_b, on_fault=faults.append, limits=limits, name="b")
    return a, b, faults


async def test_calls_both_ways_and_errors_by_code():
    async def serve(method, params):
        args = msgspec.json.decode(params)
        if method == "fail":
            raise AspenError("KV_PREFIX_DENIED", "no", op="read")
        await asyncio.sleep(args.get("wait", 0))
        return raw({"echo": args})

    a, _, faults = pair(serve)
    slow = asyncio.ensure_future(a.call("echo", raw({"wait": 0.2, "n": 0})))
    fast = await asyncio.gather(*(a.call("echo", raw({"n": i})) for i in range(1, 50)))
    assert [msgspec.json.decode(r)["echo"]["n"] for r in fast] == list(range(1, 50))
    assert msgspec.json.decode(await slow)["echo"]["n"] == 0
    with pytest.raises(AspenError) as exc:
        await a.call("fail")
    assert (exc.value.code, exc.value.details) == ("KV_PREFIX_DENIED", {"op": "read"})
    assert faults == []


async def test_deadline_then_ignored_deadline_is_one_fault():
    never = asyncio.Event()

    async def serve(method, params):
        await never.wait()

    a, _, faults = pair(serve, limits=PeerLimits(deadline_grace=0.1))
    with pytest.raises(AspenError) as exc:
        await a.call("hang", timeout=0.05)
    assert exc.value.code == "PLUGIN_TIMEOUT" and a.in_flight == 0
    while not faults:
        await asyncio.sleep(0.01)
    assert "past its deadline" in faults[0]


async def test_too_many_calls_from_the_other_side_are_overloaded():
    gate = asyncio.Event()

    async def serve(method, params):
        await gate.wait()
        return raw({})

    a, _, _ = pair(serve, limits=PeerLimits(max_serving=4))
    held = [asyncio.ensure_future(a.call("x")) for _ in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(AspenError) as exc:
        await a.call("x")
    assert exc.value.code == "PLUGIN_OVERLOADED"
    gate.set()
    await asyncio.gather(*held)


async def test_bad_lines_past_the_bound_are_a_flood():
    a, _, faults = pair(lambda m, p: raw({}), limits=PeerLimits(flood_faults=10))
    for _ in range(10):
        a.feed(b"not json\n")
    assert faults == []
    a.feed(b"not json\n")
    assert len(faults) == 1 and "bad lines" in faults[0]
    a.feed(b"x" * 100 + b"\n")
    assert len(faults) == 1  # reported once


async def test_closing_fails_what_is_in_flight():
    a, _, _ = pair(lambda m, p: asyncio.Event().wait())
    call = asyncio.ensure_future(a.call("x"))
    await asyncio.sleep(0)
    a.close(AspenError("PLUGIN_TRAP", "gone"))
    with pytest.raises(AspenError) as exc:
        await call
    assert exc.value.code == "PLUGIN_TRAP"


async def test_a_call_too_big_to_send_fails_before_it_is_sent():
    sent: list[bytes] = []
    a = Peer(sent.append, lambda m, p: raw({}), on_fault=print, limits=PeerLimits(max_line=100))
    with pytest.raises(AspenError) as exc:
        await a.call("x", raw({"v": "x" * 200}))
    assert exc.value.code == "MESSAGE_TOO_LARGE" and sent == [] and a.in_flight == 0
