"""A handler may answer with any error code, but /metrics keeps a closed
set of outcome labels: codes outside the catalogue count as ``OTHER``, so
one plugin cannot create unbounded series."""

from __future__ import annotations

import re

import httpx

from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
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
