"""Watches over SSE (ad-hoc and WatchCreate) and WebSocket, resumable by revision."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from aspen import AspenError, Client, ErrorCode


async def collect(agen, n: int, timeout: float = 20.0) -> list:
    out = []

    async def run():
        async for item in agen:
            out.append(item)
            if len(out) == n:
                return

    await asyncio.wait_for(run(), timeout)
    return out


async def test_sse_watch_sees_puts_and_deletes_from_a_revision(node):
    async with Client(node.url) as c:
        first = await c.write_key("w1/a", b"1")
        await c.write_key("w1/b", b"2")
        await c.write_key("other", b"x")
        await c.delete_key("w1/a")
        events = await collect(c.watch("w1/", start_revision=first.revision), 3)
    assert [(e.type, e.kv.key) for e in events] == [("put", "w1/a"), ("put", "w1/b"), ("delete", "w1/a")]
    assert events[0].kv.value == b"1" and events[0].revision == first.revision


async def test_sse_watch_live_and_resumed_with_last_event_id(node):
    async with Client(node.url) as c:
        start = (await c.get_health()).revision + 1
        watcher = asyncio.ensure_future(collect(c.watch("w2/", start_revision=start), 2))
        await asyncio.sleep(0.3)
        r1 = await c.write_key("w2/x", b"1")
        r2 = await c.write_key("w2/y", b"2")
        events = await watcher
        assert [e.revision for e in events] == [r1.revision, r2.revision]
    # a reader that saw r1 resumes after it and gets exactly r2
    async with (
        httpx.AsyncClient(headers=node.auth_headers) as h,
        h.stream(
            "GET", f"{node.url}/v1/watch", params={"prefix": "w2/"}, headers={"last-event-id": str(r1.revision)}
        ) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = []
        async for line in resp.aiter_lines():
            lines.append(line)
            if line.startswith("data:"):
                break
    assert f"id: {r2.revision}" in lines
    assert json.loads(lines[-1][5:])["event"]["kv"]["key"] == "w2/y"


async def test_watch_create_stream_and_cancel(node):
    async with Client(node.url) as c, httpx.AsyncClient(timeout=20, headers=node.auth_headers) as h:
        created = await c.watch_create("w3/")
        await c.write_key("w3/k", b"v")
        got_event = False

        async def read_until_closed():
            nonlocal got_event
            async with h.stream("GET", node.url + created.stream_path) as resp:
                async for line in resp.aiter_lines():
                    if line.startswith("data:"):
                        msg = json.loads(line[5:])
                        assert msg["watch_id"] == created.watch_id and msg["event"]["kv"]["key"] == "w3/k"
                        got_event = True
                        assert (await c.watch_cancel(created.watch_id)).was_cancelled

        await asyncio.wait_for(read_until_closed(), 20)  # cancelling ends the stream
        assert got_event
        with pytest.raises(AspenError) as gone:  # cancelled: as unknown as another caller's
            await c.watch_cancel(created.watch_id)
        assert gone.value.code == ErrorCode.WATCH_NOT_FOUND


async def test_websocket_watch(node):
    async with (
        Client(node.url) as c,
        websockets.connect(node.url.replace("http", "ws") + "/v1/watch/ws", additional_headers=node.auth_headers) as ws,
    ):
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": "w4/"}}))
        created = json.loads(await ws.recv())
        assert created["type"] == "WatchCreateResult"
        wid = created["body"]["watch_id"]
        await c.write_key("w4/a", b"hello")
        msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert msg["type"] == "WatchEvent" and msg["body"]["watch_id"] == wid
        assert msg["body"]["event"]["kv"]["key"] == "w4/a"
        await ws.send(json.dumps({"type": "WatchCancel", "body": {"watch_id": wid}}))
        cancelled = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert cancelled == {"type": "WatchCancelResult", "body": {"watch_id": wid, "was_cancelled": True}}
        await ws.send("not json")
        assert json.loads(await ws.recv())["body"]["code"] == "BAD_REQUEST"
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": 3}}))
        assert json.loads(await ws.recv())["body"]["code"] == "VALIDATION_ERROR"


async def test_watch_rejects_bad_prefix(node):
    async with Client(node.url) as c:
        with pytest.raises(AspenError) as err:
            await c.watch_create("k" * 5000)
        assert err.value.code == ErrorCode.KEY_TOO_LARGE


async def test_websocket_refuses_deep_nesting_and_keeps_serving(node):
    url = node.url.replace("http", "ws") + "/v1/watch/ws"
    async with websockets.connect(url, additional_headers=node.auth_headers) as ws:
        await ws.send('{"type": "WatchCreate", "body": ' + "[" * 5000 + "]" * 5000 + "}")
        refused = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert refused["type"] == "Error" and refused["body"]["code"] == "VALIDATION_ERROR"
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": "deep/"}}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "WatchCreateResult"
