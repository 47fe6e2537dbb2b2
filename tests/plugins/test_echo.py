"""The example plugins through the handler path, against a real store."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError
from aspen.plugins.handler import WasmPluginHandler
from aspen.rpc.handler import Request, RequestContext, RequestHandler
from aspen.rpc.registry import HandlerRegistry


async def test_ping_pong_and_echo(load):
    echo = await load("echo")
    assert isinstance(echo, RequestHandler)
    assert echo.priority == 950 and echo.request_types == {"Ping", "Echo", "EchoRead"}
    pong = await echo.handle(Request("Ping", {}), RequestContext())
    assert (pong.type, pong.body) == ("Pong", {})
    body = {"text": "héllo", "n": [1, 2.5, None, True], "nested": {"a": "b"}}
    reply = await echo.handle(Request("Echo", body), RequestContext())
    assert (reply.type, reply.body) == ("Echo", body)


async def test_echo_reads_its_own_namespace(load, kv):
    echo = await load("echo")
    await kv.put("__plugin:echo:greeting", b"hi there")
    reply = await echo.handle(Request("EchoRead", {"key": "greeting"}), RequestContext())
    assert reply.body == {"key": "__plugin:echo:greeting", "value": "hi there"}
    missing = await echo.handle(Request("EchoRead", {"key": "nope"}), RequestContext())
    assert missing.body["value"] is None
    # Binary values reach the guest base64-encoded; Zig's JSON writer renders
    # bytes that are not UTF-8 as an array of numbers.
    await kv.put("__plugin:echo:bin", b"\xff\xfeab")
    binary = await echo.handle(Request("EchoRead", {"key": "bin"}), RequestContext())
    assert binary.body["value"] == [255, 254, 97, 98]


async def test_guest_error_reply_becomes_aspen_error(load):
    echo = await load("echo")
    with pytest.raises(AspenError) as err:
        await echo.handle(Request("EchoRead", {}), RequestContext())
    assert err.value.code == "BAD_REQUEST"


async def test_dispatch_through_handler_registry(load):
    echo = await load("echo")
    registry = HandlerRegistry([echo])
    reply = await registry.dispatch(Request("Ping", {}), RequestContext())
    assert reply.type == "Pong"


async def test_kv_counter_cas_under_concurrency(load, kv):
    counter = await load("kv-counter")
    ctx = RequestContext()
    replies = await asyncio.gather(
        *(counter.handle(Request("KvCounterIncrement", {"name": "hits"}), ctx) for _ in range(24))
    )
    # CAS: every increment lands exactly once, whatever the interleaving.
    assert sorted(r.body["value"] for r in replies) == list(range(1, 25))
    assert (await kv.get("counter:hits")).value == b"24"
    got = await counter.handle(Request("KvCounterGet", {"name": "hits"}), ctx)
    assert got.body == {"key": "counter:hits", "value": 24}
    reset = await counter.handle(Request("KvCounterReset", {"name": "hits"}), ctx)
    assert reset.body == {"key": "counter:hits", "existed": True}
    assert await kv.get("counter:hits") is None


async def test_optional_exports_really_optional(load):
    # echo exports neither plugin_init, plugin_health nor plugin_shutdown.
    echo = await load("echo")
    rt = echo.runtime
    assert not any(rt.has_export(e) for e in ("plugin_init", "plugin_health", "plugin_shutdown"))
    assert await rt.probe() is True
    assert rt.state == "ready"


async def test_unload_and_reload(host, load):
    echo = await load("echo")
    assert host.handlers() == (echo,)
    await host.unload("echo")
    assert host.handlers() == ()
    with pytest.raises(AspenError) as err:
        await echo.handle(Request("Ping", {}), RequestContext())
    assert err.value.code == "UNAVAILABLE"
    again = await load("echo")
    assert isinstance(again, WasmPluginHandler)
    assert (await again.handle(Request("Ping", {}), RequestContext())).type == "Pong"


async def test_load_files_fills_wasm_hash(host, built):
    import blake3

    handler = await host.load_files(built / "echo/plugin.json", built / "echo/plugin.wasm")
    assert handler.manifest.wasm_hash == blake3.blake3((built / "echo/plugin.wasm").read_bytes()).hexdigest()


async def test_native_handler_beats_plugin_for_the_same_type(load):
    from aspen.rpc.handler import Response

    class NativePing:
        name = "native-ping"
        request_types = frozenset({"Ping"})
        priority = 100

        async def handle(self, request, ctx):
            return Response("NativePong", {})

    echo = await load("echo")
    registry = HandlerRegistry([echo, NativePing()])
    assert (await registry.dispatch(Request("Ping", {}), RequestContext())).type == "NativePong"
    assert (await registry.dispatch(Request("Echo", {"a": 1}), RequestContext())).body == {"a": 1}
