"""Bad input over raw HTTP: each gets its error code and the node goes on serving."""

from __future__ import annotations

import socket

import httpx
import msgspec
import pytest

from aspen.rpc.envelope import MAX_MESSAGE_BYTES


def rpc(node, content: bytes, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{node.url}/v1/rpc",
        content=content,
        headers={"content-type": "application/json", **node.auth_headers, **headers},
    )


def assert_serving(node) -> None:
    r = rpc(node, b'{"type": "Ping"}')
    assert r.status_code == 200 and r.json() == {"type": "Pong", "body": {}}


def error(r: httpx.Response) -> dict:
    wire = r.json()
    assert wire["type"] == "Error", wire
    return wire["body"]


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"", b"[1, 2]", b'{"body": {}}', b'{"type": 7}', b'{"type": "Ping", "body": []}', b"\xff\xfe"],
    ids=["broken", "empty", "array", "no-type", "type-not-string", "body-not-object", "not-utf8"],
)
def test_malformed_envelope_is_bad_request(node, content):
    r = rpc(node, content)
    assert r.status_code == 400
    assert error(r)["code"] == "BAD_REQUEST"
    assert_serving(node)


def test_malformed_msgpack_is_bad_request(node):
    r = rpc(node, b"\xc1\x00garbage", **{"content-type": "application/msgpack"})
    assert r.status_code == 400
    assert msgspec.msgpack.decode(r.content)["body"]["code"] == "BAD_REQUEST"
    assert_serving(node)


def test_oversized_body_is_refused_before_decoding(node):
    big = b'{"type": "WriteKey", "body": {"key": "k", "value": "' + b"A" * MAX_MESSAGE_BYTES + b'"}}'
    r = rpc(node, big)
    assert r.status_code == 413 and error(r)["code"] == "MESSAGE_TOO_LARGE"
    assert_serving(node)


def test_oversized_chunked_body_is_refused(node):
    def chunks():
        for _ in range(5):
            yield b" " * (1 << 20)  # JSON whitespace: only the size can be wrong

    r = httpx.post(
        f"{node.url}/v1/rpc", content=chunks(), headers={"content-type": "application/json", **node.auth_headers}
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and error(r)["code"] == "MESSAGE_TOO_LARGE"
    assert_serving(node)


def test_unknown_type(node):
    r = rpc(node, b'{"type": "Frobnicate", "body": {}}')
    assert r.status_code == 200 and error(r)["code"] == "UNKNOWN_REQUEST"
    assert "Frobnicate" in error(r)["message"]
    assert_serving(node)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"key": 5}, "$.key"),
        ({}, "`key`"),
        ({"prefix": "x", "limit": "ten"}, "$.limit"),
        ({"key": "k", "value": "aGk=", "lease_id": "x"}, "$.lease_id"),
    ],
    ids=["key-int", "key-missing", "limit-string", "lease-string"],
)
def test_wrong_field_types_name_the_field(node, body, field):
    type_ = "ScanKeys" if "prefix" in body else ("WriteKey" if "value" in body else "ReadKey")
    r = rpc(node, msgspec.json.encode({"type": type_, "body": body}))
    e = error(r)
    assert e["code"] == "VALIDATION_ERROR" and field in e["message"], e
    assert_serving(node)


def test_invalid_base64_value(node):
    r = rpc(node, b'{"type": "WriteKey", "body": {"key": "k", "value": "not base64!"}}')
    e = error(r)
    assert e["code"] == "VALIDATION_ERROR" and "base64" in e["message"] and "$.value" in e["message"]
    assert_serving(node)


def test_store_limits_keep_their_codes(node):
    r = rpc(node, msgspec.json.encode({"type": "ReadKey", "body": {"key": "k" * 2000}}))
    assert error(r)["code"] == "KEY_TOO_LARGE"
    r = rpc(node, msgspec.json.encode({"type": "ScanKeys", "body": {"limit": 0}}))
    assert error(r)["code"] == "INVALID_ARGUMENT", error(r)
    r = rpc(node, msgspec.json.encode({"type": "GetBlob", "body": {"hash": "xyz"}}))
    assert error(r)["code"] == "INVALID_HASH"
    assert_serving(node)


def _disconnect_after_partial_body(node, path: str, declared: int, sent: int) -> None:
    with socket.create_connection(("127.0.0.1", node.port)) as s:
        s.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {declared}\r\n\r\n".encode()
        )
        s.sendall(b"x" * sent)


def test_client_disconnecting_mid_upload(node):
    before = httpx.post(f"{node.url}/v1/rpc", json={"type": "ListBlobs"}, headers=node.auth_headers).json()["body"][
        "blobs"
    ]
    _disconnect_after_partial_body(node, "/v1/blobs", 8 << 20, 1 << 20)
    with socket.create_connection(("127.0.0.1", node.port)) as s:  # and a half-sent RPC
        s.sendall(
            b'POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"type": '
        )
    assert_serving(node)
    after = httpx.post(f"{node.url}/v1/rpc", json={"type": "ListBlobs"}, headers=node.auth_headers).json()["body"][
        "blobs"
    ]
    assert after == before  # no partial blob was committed
    # and a complete upload still works afterwards
    r = httpx.put(f"{node.url}/v1/blobs", content=b"x" * 1000, headers=node.auth_headers)
    assert r.status_code in (200, 201) and r.json()["size"] == 1000


def test_bad_watch_parameters(node):
    r = httpx.get(f"{node.url}/v1/watch", params={"start_revision": "abc"}, headers=node.auth_headers)
    assert r.status_code == 400 and error(r)["code"] == "VALIDATION_ERROR"
    r = httpx.get(f"{node.url}/v1/watch/999999", headers=node.auth_headers)
    assert r.status_code == 404 and error(r)["code"] == "WATCH_NOT_FOUND"
    assert_serving(node)


@pytest.mark.parametrize(
    "request_",
    [
        {"type": "WriteKey", "body": {"key": "__plugins:manifests:evil", "value": "eA=="}},
        {"type": "DeleteKey", "body": {"key": "__auth:root"}},
        {"type": "CompareAndSwapKey", "body": {"key": "__jobs:x", "expected": None, "new_value": "eA=="}},
        {"type": "CompareAndDeleteKey", "body": {"key": "__cluster:nodes:n1", "expected": "eA=="}},
        {
            "type": "BatchWrite",
            "body": {
                "operations": [
                    {"type": "put", "key": "ok/1", "value": "eA=="},
                    {"type": "put", "key": "__apps:x", "value": "eA=="},
                ]
            },
        },
        {"type": "BatchWrite", "body": {"operations": [{"type": "delete", "key": "__", "prefix": True}]}},
        {
            "type": "ConditionalBatchWrite",
            "body": {
                "conditions": [],
                "operations": [],
                "else_operations": [{"type": "delete", "key": "__federation:peer"}],
            },
        },
    ],
    ids=["put", "delete", "cas", "cad", "batch-put", "batch-prefix-delete", "txn-else"],
)
def test_client_writes_into_reserved_key_space_are_refused(node, request_):
    r = rpc(node, msgspec.json.encode(request_))
    assert error(r)["code"] == "RESERVED_KEY"
    read = rpc(node, b'{"type": "ReadKey", "body": {"key": "ok/1"}}').json()
    assert read["body"]["was_found"] is False, "nothing of a refused batch is applied"
    reserved_read = rpc(node, b'{"type": "ReadKey", "body": {"key": "__cluster:nodes:none"}}').json()
    assert reserved_read["type"] == "ReadResult", "reads of system state stay allowed"
    assert_serving(node)
