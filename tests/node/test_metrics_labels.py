"""A handler may answer with any error code, but /metrics keeps a closed
set of outcome labels: codes outside the catalogue count as ``OTHER``, so
one plugin cannot create unbounded series."""

from __future__ import annotations

import re

import httpx

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
from aspen.node.metrics import BUCKETS, RpcMetrics
from aspen.node.server import open_node
from aspen.rpc.handler import Request, RequestContext, Response
from tests.node.admin_token import auth_headers, envelope


class CodeMaker:
    """A native plugin that fails each call with the code it is given."""

    name = "test.codemaker"
    request_types = frozenset({"MakeCode"})
    priority = 500

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        raise AspenError(request.body["code"], "as asked")


async def test_codes_outside_the_catalogue_count_as_other(tmp_path):
    data = tmp_path / "data"
    node = await open_node(load_config(data_dir=str(data)))
    try:
        node.services.registry.add(CodeMaker())
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=node.app), base_url="http://localhost", headers=auth_headers(data)
        ) as h:
            for i in range(50):
                r = await h.post("/v1/rpc", json=envelope(data, "MakeCode", {"code": f"PLUGIN_MADE_UP_{i}"}))
                assert r.json()["body"]["code"] == f"PLUGIN_MADE_UP_{i}"  # the caller still sees the real code
            r = await h.post("/v1/rpc", json=envelope(data, "MakeCode", {"code": ErrorCode.PLUGIN_TRAP}))
            assert r.json()["body"]["code"] == "PLUGIN_TRAP"
            text = (await h.get("/metrics")).text
    finally:
        await node.close()
    series = dict(re.findall(r'aspen_rpc_requests_total\{outcome="([^"]+)",type="MakeCode"\} (\S+)', text))
    assert series == {"OTHER": "50.0", "PLUGIN_TRAP": "1.0"}
    outcomes = set(re.findall(r'aspen_rpc_requests_total\{outcome="([^"]+)"', text))
    assert outcomes <= {"ok", "disconnected", "OTHER", *ErrorCode}


def test_latency_buckets_are_cumulative_and_a_bound_is_inclusive():
    metrics = RpcMetrics()
    for seconds in (0.0001, 0.001, 0.0011, 3.0, 60.0):  # 0.001 sits on a bound: le="0.001" counts it
        metrics.observe("Ping", "ok", seconds)
    text = metrics.render().decode()
    buckets = dict(re.findall(r'aspen_rpc_request_seconds_bucket\{le="([^"]+)",type="Ping"\} (\S+)', text))
    assert buckets["0.0005"] == "1.0" and buckets["0.001"] == "2.0" and buckets["0.0025"] == "3.0"
    assert buckets["2.5"] == "3.0" and buckets["5.0"] == "4.0" and buckets["10.0"] == "4.0" and buckets["+Inf"] == "5.0"
    assert list(buckets) == [*map(str, BUCKETS), "+Inf"]
    assert 'aspen_rpc_request_seconds_count{type="Ping"} 5.0' in text
    total = float(re.search(r'aspen_rpc_request_seconds_sum\{type="Ping"\} (\S+)', text).group(1))
    assert abs(total - 63.0022) < 1e-9
    assert 'aspen_rpc_requests_total{outcome="ok",type="Ping"} 5.0' in text
