"""Hostile input over real HTTP: deep nesting and integers too big for
storage each get a 4xx with a stable code, never a 500 or a traceback, and
the node goes on serving."""

from __future__ import annotations

import json

import httpx
import msgspec
import pytest
import websockets

from aspen.jobs.model import MAX_PAYLOAD_DEPTH
from aspen.rpc.nesting import MAX_DEPTH
from tests.node.admin_token import admin_token, auth_headers, envelope

_mp = msgspec.msgpack.encode


def post(node, content: bytes, msgpack: bool = False) -> httpx.Response:
    headers = {"content-type": "application/msgpack" if msgpack else "application/json", **auth_headers(node.data_dir)}
    return httpx.post(f"{node.url}/v1/rpc", content=content, headers=headers, timeout=60)


def reply(r: httpx.Response, msgpack: bool = False) -> dict:
    return msgspec.msgpack.decode(r.content) if msgpack else r.json()


def call(node, type_: str, body: dict, msgpack: bool = False) -> tuple[int, dict]:
    env = envelope(node.data_dir, type_, body)
    r = post(node, _mp(env) if msgpack else msgspec.json.encode(env), msgpack)
    return r.status_code, reply(r, msgpack)


def deep_ping(node, depth: int, kind: str, msgpack: bool) -> bytes:
    """A Ping whose body field ``x`` holds a value ``depth`` levels deep;
    the envelope and the body add two levels. Built as bytes: encoding so
    deep a value in Python would itself hit the recursion limit."""
    token = admin_token(node.data_dir)
    if msgpack:
        value = b"\x91" * (depth - 1) + b"\x90" if kind == "list" else b"\x81\xa1a" * depth + b"\x01"
        fields = _mp("type") + _mp("Ping") + (_mp("token") + _mp(token) if token else b"")
        return bytes([0x82 + bool(token)]) + fields + _mp("body") + b"\x81" + _mp("x") + value
    value = "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth
    head = {"type": "Ping", **({"token": token} if token else {})}
    return (json.dumps(head)[:-1] + ', "body": {"x": ' + value + "}}").encode()


def assert_serving(node) -> None:
    assert call(node, "Ping", {}) == (200, {"type": "Pong", "body": {}})


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize("depth", [MAX_DEPTH - 1, 1000, 10_000, 100_000])
def test_deep_envelope_is_a_validation_error_not_a_500(node, depth, kind, msgpack):
    tracebacks = node.log().count("Traceback")
    r = post(node, deep_ping(node, depth, kind, msgpack), msgpack)
    assert r.status_code == 400, r.content[:300]
    body = reply(r, msgpack)
    assert body["type"] == "Error" and body["body"]["code"] == "VALIDATION_ERROR", body
    assert body["body"]["details"] == {"max_depth": MAX_DEPTH}
    assert_serving(node)
    assert node.log().count("Traceback") == tracebacks


@pytest.mark.parametrize("msgpack", [False, True], ids=["json", "msgpack"])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_nesting_up_to_the_limit_is_served(node, kind, msgpack):
    r = post(node, deep_ping(node, MAX_DEPTH - 2, kind, msgpack), msgpack)
    assert r.status_code == 200 and reply(r, msgpack) == {"type": "Pong", "body": {}}


def test_brackets_inside_strings_do_not_count(node):
    key = "hostile/" + "[{" * 200
    status, wire = call(node, "WriteKey", {"key": key, "value": "dg=="})
    assert status == 200 and wire["type"] == "WriteResult", wire
    status, wire = call(node, "ReadKey", {"key": key})
    assert wire["body"]["was_found"] and wire["body"]["kv"]["key"] == key


def test_a_job_payload_nested_too_deep_is_refused(node):
    deep = []
    for _ in range(MAX_PAYLOAD_DEPTH):
        deep = [deep]
    status, wire = call(node, "JobSubmit", {"type": "shell", "payload": deep})
    assert status == 200 and wire["body"]["code"] == "VALIDATION_ERROR", wire
    assert wire["body"]["details"] == {"max_depth": MAX_PAYLOAD_DEPTH}


def test_a_job_run_at_beyond_the_ready_index_is_refused(node):
    status, wire = call(node, "JobSubmit", {"type": "shell", "payload": {"command": "true"}, "run_at_ms": 10**23})
    assert status == 200
    assert wire["body"]["code"] == "INVALID_JOB" and "run_at_ms" in wire["body"]["message"], wire


HUGE = [10**23, 2**63, -(2**63) - 1]


# msgpack carries integers up to 2**64 - 1 only
@pytest.mark.parametrize("value, msgpack", [*((v, False) for v in HUGE), (2**63, True), (2**64 - 1, True)], ids=str)
def test_watch_create_with_a_revision_beyond_int64(node, value, msgpack):
    status, wire = call(node, "WatchCreate", {"prefix": "hostile/", "start_revision": value}, msgpack)
    assert status == 200 and wire["type"] == "Error" and wire["body"]["code"] == "INVALID_ARGUMENT", wire
    assert "start_revision" in wire["body"]["message"]


@pytest.mark.parametrize("param", ["start_revision", "last-event-id"])
def test_sse_watch_with_a_revision_beyond_int64(node, param):
    headers = auth_headers(node.data_dir)
    query = {"prefix": "hostile/"}
    if param == "start_revision":
        query["start_revision"] = str(10**23)
    else:
        headers["Last-Event-ID"] = str(2**63 - 1)  # resumes at 2**63
    r = httpx.get(f"{node.url}/v1/watch", params=query, headers=headers, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["body"]["code"] == "INVALID_ARGUMENT"
    assert_serving(node)


async def test_websocket_watch_with_a_revision_beyond_int64(node):
    url = node.url.replace("http", "ws") + "/v1/watch/ws"
    async with websockets.connect(url, additional_headers=auth_headers(node.data_dir)) as ws:
        await ws.send(
            json.dumps(envelope(node.data_dir, "WatchCreate", {"prefix": "hostile/", "start_revision": 10**23}))
        )
        wire = json.loads(await ws.recv())
        assert wire["type"] == "Error" and wire["body"]["code"] == "INVALID_ARGUMENT", wire


@pytest.mark.parametrize("target", ["version", "create_revision", "mod_revision"])
@pytest.mark.parametrize("value", HUGE)
def test_transaction_compare_beyond_int64(node, target, value):
    body = {
        "conditions": [{"key": "hostile/txn", "target": target, "op": "==", "value": value}],
        "operations": [{"type": "put", "key": "hostile/txn", "value": "dg=="}],
    }
    status, wire = call(node, "ConditionalBatchWrite", body)
    assert status == 200 and wire["body"]["code"] == "INVALID_ARGUMENT", wire


@pytest.mark.parametrize("field", ["timeout_ms", "proxy_hops"])
def test_envelope_integers_beyond_int64(node, field):
    env = {**envelope(node.data_dir, "Ping", {}), field: 10**400}
    r = post(node, json.dumps(env).encode())
    assert r.status_code == 400 and r.json()["body"]["code"] == "BAD_REQUEST", r.text
    assert field in r.json()["body"]["message"]
    assert_serving(node)
