"""The client never re-sends a write that may have reached a node, and does
retry reads. A tiny raw HTTP server on loopback reads each POST to /v1/rpc
in full, counts it, then answers HTTP 500 (as uvicorn does when an app
crashes) or drops the connection."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Self

import pytest

from aspen import AspenError, Client
from aspen.client.credentials import forget
from aspen.errors import ErrorCode


class Flaky:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.posts: Counter[str] = Counter()  # request path -> count
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        forget(self.url)  # a token remembered for this port belongs to an earlier test's node, not to this server
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, path = head.split(b" ")[:2]
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)  # the whole request reached this "node"
            self.posts[f"{method.decode()} {path.decode()}"] += 1
            if self.mode == "500":
                writer.write(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
                    b"content-length: 21\r\nconnection: close\r\n\r\nInternal Server Error"
                )
                await writer.drain()
        finally:
            writer.close()  # mode "drop": no answer at all


@pytest.mark.parametrize("mode", ["500", "drop"])
async def test_a_write_that_reached_a_node_is_sent_once(mode):
    async with Flaky(mode) as flaky, Client(flaky.url, retries=3, retry_delay=0.05) as client:
        with pytest.raises(AspenError) as err:
            await client.write_key("retry/w", b"once")
        assert err.value.code == ErrorCode.UNAVAILABLE and "outcome is unknown" in err.value.message
        assert flaky.posts == {"POST /v1/rpc": 1}


@pytest.mark.parametrize("mode", ["500", "drop"])
async def test_a_read_is_retried(mode):
    async with Flaky(mode) as flaky, Client(flaky.url, retries=3, retry_delay=0.05) as client:
        with pytest.raises(AspenError) as err:
            await client.read_key("retry/r")
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert flaky.posts == {"POST /v1/rpc": 3}  # one per round


@pytest.mark.parametrize("mode", ["500", "drop"])
async def test_a_read_fails_over_to_a_live_node_but_a_write_does_not(node, mode):
    async with Flaky(mode) as flaky, Client([flaky.url, node.url], retry_delay=0.05) as client:
        async with Client(node.url) as direct:
            await direct.write_key(f"retry/{mode}/r", b"from the live node")
        got = await client.read_key(f"retry/{mode}/r")
        assert got.kv is not None and got.kv.value == b"from the live node"
        assert flaky.posts == {"POST /v1/rpc": 1}

    async with Flaky(mode) as flaky, Client([flaky.url, node.url], retry_delay=0.05) as client:
        with pytest.raises(AspenError) as err:
            await client.write_key(f"retry/{mode}/w", b"maybe")
        assert err.value.code == ErrorCode.UNAVAILABLE
        assert flaky.posts == {"POST /v1/rpc": 1}
        async with Client(node.url) as direct:  # not re-sent to the live node either
            assert (await direct.read_key(f"retry/{mode}/w")).kv is None
