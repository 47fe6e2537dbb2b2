"""A separately installed distribution adds a native handler through the
``aspen.handlers`` entry-point group: a fake ``*.dist-info`` on ``sys.path``
is a real installed distribution as far as ``importlib.metadata`` knows, and
an in-process node loads it exactly as ``aspen node start`` does."""

from __future__ import annotations

import httpx
import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
from aspen.node.server import open_node
from aspen.rpc.handler import (
    HANDLERS_ENTRY_POINT_GROUP,
    Request,
    RequestContext,
    Response,
)
from aspen.rpc.registry import load_entry_point_handlers
from tests.node.node_process import admin_headers


class Greeter:
    """The third-party handler: answers ``Greet`` with the node it runs on."""

    request_types = frozenset({"Greet"})

    def __init__(self, priority: int) -> None:
        self.name = f"extra.greeter.{priority}"
        self.priority = priority

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        return Response("GreetResult", {"hello": request.body["who"], "node_id": ctx.node.node_id})


def make_greeter_500(node):
    return Greeter(500)


def make_greeter_50(node):
    return Greeter(50)


def make_greeter_950(node):
    return [Greeter(950)]


@pytest.fixture
def install(tmp_path, monkeypatch):
    """``install(factory_name)``: a distribution ``extra-handlers`` whose one
    ``aspen.handlers`` entry point is that factory of this module."""
    site = tmp_path / "site"
    dist = site / "extra_handlers-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-handlers\nVersion: 0.1\n")
    monkeypatch.syspath_prepend(str(site))

    def install(target: str) -> None:
        (dist / "entry_points.txt").write_text(f"[{HANDLERS_ENTRY_POINT_GROUP}]\ngreeter = {target}\n")

    return install


async def test_a_third_party_handler_at_priority_500_is_dispatched(tmp_path, install):
    install("tests.node.test_entry_point_handlers:make_greeter_500")
    node = await open_node(load_config(data_dir=str(tmp_path / "data")))
    try:
        (greeter,) = [h for h in node.services.registry.snapshot().handlers if isinstance(h, Greeter)]
        assert greeter.priority == 500
        headers = admin_headers(tmp_path / "data")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node.app), base_url="http://localhost", headers=headers
        ) as h:
            r = await h.post("/v1/rpc", json={"type": "Greet", "body": {"who": "world"}})
            assert r.status_code == 200
            assert r.json() == {"type": "GreetResult", "body": {"hello": "world", "node_id": node.services.node_id}}
            # the core handlers were loaded alongside it
            r = await h.post("/v1/rpc", json={"type": "Ping"})
            assert r.json()["type"] == "Pong"
    finally:
        await node.close()


@pytest.mark.parametrize("factory, priority", [("make_greeter_50", 50), ("make_greeter_950", 950)])
async def test_a_third_party_handler_outside_100_to_899_is_refused(tmp_path, install, factory, priority):
    node = await open_node(load_config(data_dir=str(tmp_path / "running")))  # before the install
    try:
        install(f"tests.node.test_entry_point_handlers:{factory}")
        with pytest.raises(AspenError) as err:
            load_entry_point_handlers(node.services, HANDLERS_ENTRY_POINT_GROUP)
    finally:
        await node.close()
    assert err.value.code == ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE
    assert f"priority {priority}" in err.value.message and "100-899" in err.value.message
    assert err.value.details == {"priority": priority, "allowed": [100, 899]}
    # and a node refuses to start with it, closing what it opened
    with pytest.raises(AspenError) as err:
        await open_node(load_config(data_dir=str(tmp_path / "data")))
    assert err.value.code == ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE


async def test_a_broken_entry_point_is_a_load_failure(tmp_path, install):
    install("tests.node.no_such_module:factory")
    with pytest.raises(AspenError) as err:
        await open_node(load_config(data_dir=str(tmp_path / "data")))
    assert err.value.code == ErrorCode.PLUGIN_LOAD_FAILED and "'greeter'" in err.value.message
