"""Per-caller quotas: leases (count and TTL), watches (per caller, per
connection, per node), pending jobs per submitter and requests in flight;
each refused with QUOTA_EXCEEDED naming the quota, its limit and its use."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
import websockets

from aspen.client import SyncClient
from aspen.node.config import load_config
from aspen.node.server import open_node
from aspen.rpc.handler import Request, RequestContext, Response
from tests.auth.conftest import code_of, rpc
from tests.node.node_process import NodeProcess, admin_headers

QUOTAS = """
[quotas]
leases_per_caller = 2
max_lease_ttl_seconds = 60
watches_per_caller = 2
watches_per_connection = 1
watches_per_node = 4
pending_jobs_per_submitter = 1
"""


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    root = tmp_path_factory.mktemp("quotas")
    (root / "aspen.toml").write_text(QUOTAS)
    with NodeProcess(root / "data", "--config", str(root / "aspen.toml")) as proc:
        yield proc


def token_for(node, *rights: tuple[str, str], subject: str) -> str:
    with SyncClient(node.url) as admin:
        body = {"rights": [{"operation": o, "resource": r} for o, r in rights], "subject": subject}
        return admin.call("TokenCreate", body)["token"]


def quota(resp: httpx.Response) -> dict:
    body = resp.json()["body"]
    assert body["code"] == "QUOTA_EXCEEDED", body
    return body["details"]


def test_leases_per_caller_and_longest_ttl(tight):
    alice = token_for(tight, ("lease", "*"), subject="q-alice")
    bob = token_for(tight, ("lease", "*"), subject="q-bob")
    assert quota(rpc(tight, "LeaseGrant", {"ttl_seconds": 3650 * 86400}, token=alice)) == {
        "quota": "max_lease_ttl_seconds", "limit": 60, "used": 3650 * 86400,
    }  # fmt: skip
    granted = [rpc(tight, "LeaseGrant", {"ttl_seconds": 30}, token=alice).json()["body"]["lease_id"] for _ in range(2)]
    assert quota(rpc(tight, "LeaseGrant", {"ttl_seconds": 30}, token=alice)) == {
        "quota": "leases_per_caller", "limit": 2, "used": 2,
    }  # fmt: skip
    assert code_of(rpc(tight, "LeaseGrant", {"ttl_seconds": 30}, token=bob)) is None  # bob's own count
    rpc(tight, "LeaseRevoke", {"lease_id": granted[0]}, token=alice)
    assert code_of(rpc(tight, "LeaseGrant", {"ttl_seconds": 30}, token=alice)) is None  # a freed slot


def test_watches_per_caller_and_node(tight):
    carol = token_for(tight, ("kv:watch", "q/"), subject="q-carol")
    dave = token_for(tight, ("kv:watch", "q/"), subject="q-dave")
    ids = [rpc(tight, "WatchCreate", {"prefix": "q/"}, token=carol).json()["body"]["watch_id"] for _ in range(2)]
    assert quota(rpc(tight, "WatchCreate", {"prefix": "q/"}, token=carol))["quota"] == "watches_per_caller"
    assert code_of(rpc(tight, "WatchCreate", {"prefix": "q/"}, token=dave)) is None
    assert code_of(rpc(tight, "WatchCreate", {"prefix": "q/"}, token=dave)) is None
    details = quota(
        rpc(tight, "WatchCreate", {"prefix": "q/"}, token=token_for(tight, ("kv:watch", "q/"), subject="q-e"))
    )
    assert details == {"quota": "watches_per_node", "limit": 4, "used": 4}
    headers = {"authorization": f"Bearer {carol}"}
    r = httpx.get(f"{tight.url}/v1/watch", params={"prefix": "q/"}, headers=headers)
    assert r.status_code == 429 and r.json()["body"]["details"]["quota"] == "watches_per_node"
    for watch_id in ids:
        rpc(tight, "WatchCancel", {"watch_id": watch_id}, token=carol)


async def test_watches_per_websocket_connection(tight):
    token = token_for(tight, ("kv:watch", "qw/"), subject="q-ws")
    url = tight.url.replace("http", "ws") + "/v1/watch/ws"
    async with websockets.connect(url, additional_headers={"authorization": f"Bearer {token}"}) as ws:
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": "qw/"}}))
        created = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert created["type"] == "WatchCreateResult"
        await ws.send(json.dumps({"type": "WatchCreate", "body": {"prefix": "qw/"}}))
        refused = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert refused["body"]["details"] == {"quota": "watches_per_connection", "limit": 1, "used": 1}


def test_pending_jobs_per_submitter(tight):
    token = token_for(tight, ("job:submit", "shell"), ("job:read", "*"), subject="q-jobs")
    later = {"type": "shell", "payload": {"command": "true"}, "run_at_ms": int(time.time() * 1000) + 3_600_000}
    first = rpc(tight, "JobSubmit", later, token=token).json()["body"]["job"]
    assert first["state"] == "scheduled"
    assert quota(rpc(tight, "JobSubmit", later, token=token)) == {
        "quota": "pending_jobs_per_submitter", "limit": 1, "used": 1,
    }  # fmt: skip
    rpc(tight, "JobCancel", {"id": first["id"]}, token=token)  # a final state frees the slot
    assert code_of(rpc(tight, "JobSubmit", later, token=token)) is None


class Slow:
    name = "test.slow"
    priority = 500
    request_types = frozenset({"Slow"})

    async def handle(self, request: Request, ctx: RequestContext) -> Response:
        await asyncio.sleep(float(request.body.get("seconds", 0)))
        return Response("SlowResult", {})


async def test_requests_in_flight_per_caller_get_429(tmp_path):
    (tmp_path / "aspen.toml").write_text("[quotas]\nrequests_in_flight_per_caller = 1\n")
    node = await open_node(load_config(tmp_path / "aspen.toml", data_dir=str(tmp_path / "data")))
    try:
        node.services.registry.add(Slow())
        transport = httpx.ASGITransport(app=node.app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://localhost", headers=admin_headers(tmp_path / "data")
        ) as h:
            slow = asyncio.ensure_future(h.post("/v1/rpc", json={"type": "Slow", "body": {"seconds": 1.5}}))
            deadline = time.monotonic() + 5
            while True:  # until the slow one holds the caller's only slot
                r = await h.post("/v1/rpc", json={"type": "Ping"})
                if r.status_code == 429 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.01)
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["body"]["details"] == {"quota": "requests_in_flight_per_caller", "limit": 1, "used": 1}
            assert (await slow).status_code == 200
            assert (await h.post("/v1/rpc", json={"type": "Ping"})).status_code == 200
    finally:
        await node.close()
