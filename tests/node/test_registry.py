"""HandlerRegistry: priority order, whole-table swaps, fall-through answers."""

from __future__ import annotations

import asyncio

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.handler import Request, RequestContext, Response
from aspen.rpc.registry import HandlerRegistry


class Echo:
    """A real handler that answers with its own name, optionally after a gate."""

    def __init__(self, name: str, priority: int, types: set[str], app_id: str | None = None, gate=None) -> None:
        self.name, self.priority, self.request_types, self.app_id = name, priority, frozenset(types), app_id
        self.gate = gate
        self.events: list[str] = []

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        if self.gate is not None:
            await self.gate.wait()
        return Response("Echo", {"by": self.name, "hops": ctx.proxy_hops})

    async def start(self) -> None:
        self.events.append("start")

    async def stop(self) -> None:
        self.events.append("stop")


def req(type_: str, app: str | None = None, **body) -> Request:
    return Request(type_, body, app)


async def test_lowest_priority_number_wins():
    reg = HandlerRegistry([Echo("late", 950, {"Thing"}), Echo("early", 150, {"Thing"}), Echo("mid", 500, {"Thing"})])
    resp = await reg.dispatch(req("Thing"), RequestContext())
    assert resp.body["by"] == "early"
    assert [h.name for h in reg.snapshot().handlers] == ["early", "mid", "late"]


async def test_in_flight_request_keeps_its_snapshot():
    gate = asyncio.Event()
    reg = HandlerRegistry([Echo("old", 500, {"Thing"}, gate=gate)])
    before = reg.snapshot()
    in_flight = asyncio.ensure_future(reg.dispatch(req("Thing"), RequestContext()))
    await asyncio.sleep(0)
    reg.replace([Echo("new", 500, {"Thing"})])
    assert reg.snapshot() is not before and before.handler_for("Thing").name == "old"
    assert (await reg.dispatch(req("Thing"), RequestContext())).body["by"] == "new"
    gate.set()
    assert (await in_flight).body["by"] == "old"


async def test_add_remove_and_duplicate_names():
    reg = HandlerRegistry([Echo("a", 500, {"A"})])
    reg.add(Echo("b", 500, {"B"}))
    assert reg.snapshot().request_types == {"A", "B"}
    reg.remove("a")
    assert reg.snapshot().request_types == {"B"}
    with pytest.raises(AspenError) as err:
        reg.add(Echo("b", 600, {"C"}))
    assert err.value.code == ErrorCode.INVALID_ARGUMENT
    assert reg.snapshot().request_types == {"B"}  # a failed change leaves the table alone


async def test_answers_when_nothing_handles_a_request():
    reg = HandlerRegistry()
    ctx = RequestContext()
    assert (await reg.dispatch(req("ReadKey", key="k"), ctx)).body["code"] == ErrorCode.NO_HANDLER
    unknown = await reg.dispatch(req("Zap"), ctx)
    assert unknown.body["code"] == ErrorCode.UNKNOWN_REQUEST
    catalogued = await reg.dispatch(req("ServiceRegister"), ctx)
    assert catalogued.body["code"] == ErrorCode.CAPABILITY_UNAVAILABLE
    assert catalogued.body["details"]["required_app"] == "service-registry"
    with_app = await reg.dispatch(req("Zap", app="shop"), ctx)
    assert with_app.body["code"] == ErrorCode.CAPABILITY_UNAVAILABLE and "'shop'" in with_app.body["message"]


async def test_an_unloaded_app_stays_known():
    reg = HandlerRegistry([Echo("p", 950, {"ShopOrder"}, app_id="shop")])
    reg.replace([])
    resp = await reg.dispatch(req("ShopOrder"), RequestContext())
    assert resp.body["code"] == ErrorCode.CAPABILITY_UNAVAILABLE and resp.body["details"]["required_app"] == "shop"
    reg.declare_app("kitchen", ["Cook"])
    assert (await reg.dispatch(req("Cook"), RequestContext())).body["details"]["required_app"] == "kitchen"


async def test_forwarder_gets_non_core_requests_within_the_hop_limit():
    seen = []

    async def forwarder(request, ctx):
        seen.append((request.type, ctx.proxy_hops))
        return Response("Echo", {"by": "remote"}) if request.type == "ServiceRegister" else None

    reg = HandlerRegistry(forwarder=forwarder, max_proxy_hops=3)
    assert (await reg.dispatch(req("ServiceRegister"), RequestContext(proxy_hops=1))).body == {"by": "remote"}
    assert (await reg.dispatch(req("Zap"), RequestContext())).body["code"] == ErrorCode.UNKNOWN_REQUEST
    over = await reg.dispatch(req("ServiceRegister"), RequestContext(proxy_hops=3))
    assert over.body["code"] == ErrorCode.CAPABILITY_UNAVAILABLE
    await reg.dispatch(req("ReadKey", key="k"), RequestContext())  # core: never forwarded
    assert seen == [("ServiceRegister", 1), ("Zap", 0)]


async def test_plugin_reload_is_handled_like_any_core_request():
    """The plugin layer answers PluginReload (tests/lifecycle/test_rpc.py);
    without it the registry has no handler for it."""
    reg = HandlerRegistry()
    resp = await reg.dispatch(req("PluginReload", name="echo"), RequestContext())
    assert resp.body["code"] == ErrorCode.NO_HANDLER
    reloader = Echo("reloader", 150, {"PluginReload"})
    reg.add(reloader)
    assert reg.snapshot().handler_for("PluginReload") is reloader
    assert (await reg.dispatch(req("PluginReload", name="echo"), RequestContext())).body["by"] == "reloader"


async def test_handler_failures_become_error_responses():
    class Broken(Echo):
        async def handle(self, request, ctx):
            if request.body.get("hang"):
                await asyncio.sleep(10)
            raise RuntimeError("secret detail")

    reg = HandlerRegistry([Broken("b", 500, {"Thing"})])
    crash = await reg.dispatch(req("Thing"), RequestContext())
    assert crash.body["code"] == ErrorCode.INTERNAL and "secret" not in crash.body["message"]
    import time

    late = await reg.dispatch(req("Thing", hang=True), RequestContext(deadline=time.monotonic() + 0.05))
    assert late.body["code"] == ErrorCode.TIMEOUT


async def test_start_and_stop_hooks_run_in_order():
    a, b = Echo("a", 100, {"A"}), Echo("b", 200, {"B"})
    reg = HandlerRegistry([b, a])
    await reg.start()
    await reg.stop()
    assert a.events == ["start", "stop"] and b.events == ["start", "stop"]


def test_core_handlers_come_from_entry_points():
    from importlib.metadata import entry_points

    class Node:  # the core factories read nothing at creation time
        pass

    core = [ep for ep in entry_points(group="aspen.handlers") if ep.value.startswith("aspen.rpc.")]
    assert {ep.name for ep in core} == {"node", "kv", "watch", "blob"}
    handlers = []
    for ep in core:
        made = ep.load()(Node())
        handlers += made if isinstance(made, list) else [made]
    assert {h.name for h in handlers} == {"core.node", "core.kv", "core.lease", "core.watch", "core.blob"}
    assert all(0 <= h.priority <= 99 for h in handlers)
    covered = set().union(*(h.request_types for h in handlers)) | {"PluginReload"}
    from aspen.rpc.catalog import CORE_REQUEST_TYPES

    assert covered == CORE_REQUEST_TYPES
