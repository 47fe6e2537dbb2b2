"""A peer cluster's answer to a proxied call is read into memory: past the
bound it is refused with MESSAGE_TOO_LARGE, whether the peer declares its
length or streams it chunked (real HTTP on loopback)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from aspen.errors import AspenError, ErrorCode
from aspen.federation.proxy import MAX_RESPONSE_BYTES, read_bounded


async def _huge_declared(request: web.Request) -> web.Response:
    return web.Response(body=b"x" * (MAX_RESPONSE_BYTES + 1))


async def _huge_chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    block = b"y" * (1 << 20)
    for _ in range(MAX_RESPONSE_BYTES // len(block) + 2):
        await resp.write(block)
    await resp.write_eof()
    return resp


async def _small(request: web.Request) -> web.Response:
    return web.Response(body=b"fine")


@pytest.fixture
async def peer():
    app = web.Application()
    app.add_routes(
        [web.get("/declared", _huge_declared), web.get("/chunked", _huge_chunked), web.get("/small", _small)]
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("path", ["/declared", "/chunked"])
async def test_an_oversized_answer_is_refused(peer, path):
    async with aiohttp.ClientSession() as http, http.get(peer + path) as resp:
        with pytest.raises(AspenError) as err:
            await read_bounded(resp, "hostile")
    assert err.value.code == ErrorCode.MESSAGE_TOO_LARGE and "hostile" in err.value.message


async def test_an_answer_within_the_bound_is_read_whole(peer):
    async with aiohttp.ClientSession() as http, http.get(peer + "/small") as resp:
        assert await read_bounded(resp, "peer") == b"fine"
