"""What a handler sees: the envelope's token, proxy hops and deadline reach
it through the RequestContext (an in-process node with an extra handler)."""

from __future__ import annotations

import asyncio
import time

import httpx

from aspen.node.config import load_config
from aspen.node.server import open_node
from aspen.rpc.handler import Request, RequestContext, Response
from tests.node.node_process import admin_headers


class Inspect:
    name = "test.inspect"
    priority = 500
    request_types = frozenset({"Inspect"})
    app_id = "inspector"

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        if request.body.get("sleep"):
            await asyncio.sleep(request.body["sleep"])
        return Response(
            "InspectResult",
            {
                "token": ctx.token,
                "caller": ctx.caller,
                "hops": ctx.proxy_hops,
                "remaining": ctx.remaining(),
                "node_id": ctx.node.node_id,
                "app": request.app,
            },
        )


async def test_envelope_fields_reach_the_handler(tmp_path):
    node = await open_node(load_config(data_dir=str(tmp_path)))
    try:
        node.services.registry.add(Inspect())
        transport = httpx.ASGITransport(app=node.app)
        headers = admin_headers(tmp_path)
        token = headers["authorization"].split()[1]
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as h:
            r = await h.post(
                "/v1/rpc",
                json={"type": "Inspect", "app": "inspector", "token": token, "proxy_hops": 2, "timeout_ms": 5000},
            )
            body = r.json()["body"]
            assert body["token"] == token and body["caller"] == "admin"
            assert body["hops"] == 2 and body["app"] == "inspector"
            assert 0 < body["remaining"] <= 5.0 and body["node_id"] == node.services.node_id

            t0 = time.monotonic()
            r = await h.post("/v1/rpc", json={"type": "Inspect", "body": {"sleep": 5}, "timeout_ms": 100})
            assert r.json()["body"]["code"] == "TIMEOUT" and time.monotonic() - t0 < 3

            r = await h.post("/v1/rpc", json={"type": "Ping", "proxy_hops": -1})
            assert r.status_code == 400 and r.json()["body"]["code"] == "BAD_REQUEST"

            node.services.registry.remove("test.inspect")
            r = await h.post("/v1/rpc", json={"type": "Inspect"})
            assert r.json()["body"]["details"]["required_app"] == "inspector"
    finally:
        await node.close()
