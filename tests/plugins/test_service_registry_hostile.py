"""Hostile bodies against the service-registry plugin: wrong types, missing
and unknown fields, oversized names, tags, metadata and records, out-of-range
numbers, nesting far past any real body, not an object. Each is its own
stable code and writes nothing."""

from __future__ import annotations

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.handler import Request, RequestContext

C = ErrorCode
OK = {"service": "web", "instance": "a", "address": "10.0.0.1:80"}
TARGET = {"service": "web", "instance": "a", "fencing_token": 5}


def deep(depth: int) -> object:
    v: object = "x"
    for _ in range(depth):
        v = [v]
    return v


REGISTER = [
    ({}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": ""}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": "x" * 129}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": "a:b"}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": "a/b"}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": "ü"}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": 5}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": None}, C.SERVICE_NAME_INVALID),
    ({**OK, "service": ["web"]}, C.SERVICE_NAME_INVALID),
    ({**OK, "instance": "i" * 129}, C.SERVICE_INSTANCE_INVALID),
    ({**OK, "instance": "a\nb"}, C.SERVICE_INSTANCE_INVALID),
    ({"service": "web", "address": "x"}, C.SERVICE_INSTANCE_INVALID),
    ({"service": "web", "instance": "a"}, C.SERVICE_ADDRESS_INVALID),
    ({**OK, "address": ""}, C.SERVICE_ADDRESS_INVALID),
    ({**OK, "address": "h" * 257}, C.SERVICE_ADDRESS_INVALID),
    ({**OK, "address": {"host": "x"}}, C.SERVICE_ADDRESS_INVALID),
    ({**OK, "version": "v" * 65}, C.SERVICE_VERSION_INVALID),
    ({**OK, "version": 1.2}, C.SERVICE_VERSION_INVALID),
    ({**OK, "tags": "prod"}, C.SERVICE_TAGS_INVALID),
    ({**OK, "tags": [""]}, C.SERVICE_TAGS_INVALID),
    ({**OK, "tags": ["t" * 65]}, C.SERVICE_TAGS_INVALID),
    ({**OK, "tags": [1]}, C.SERVICE_TAGS_INVALID),
    ({**OK, "tags": [f"t{i}" for i in range(33)]}, C.SERVICE_TAGS_INVALID),
    ({**OK, "tags": deep(40)}, C.SERVICE_TAGS_INVALID),
    ({**OK, "weight": -1}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "weight": 10_001}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "weight": 2**64}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "weight": "5"}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "weight": True}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "weight": 1.5}, C.SERVICE_WEIGHT_INVALID),
    ({**OK, "metadata": ["k", "v"]}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {"k": 1}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {"k": {"nested": "v"}}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {"": "v"}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {"k" * 65: "v"}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {"k": "v" * 257}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {f"k{i}": "v" for i in range(33)}}, C.SERVICE_METADATA_INVALID),
    ({**OK, "metadata": {f"k{i}": "v" * 256 for i in range(20)}}, C.SERVICE_RECORD_TOO_LARGE),
    ({**OK, "ttl": 0}, C.SERVICE_TTL_OUT_OF_RANGE),
    ({**OK, "ttl": 86_401}, C.SERVICE_TTL_OUT_OF_RANGE),
    ({**OK, "ttl": -30}, C.SERVICE_TTL_OUT_OF_RANGE),
    ({**OK, "ttl": "30"}, C.SERVICE_TTL_OUT_OF_RANGE),
    ({**OK, "ttl": 10**30}, C.SERVICE_TTL_OUT_OF_RANGE),
    ({**OK, "health": "dead"}, C.SERVICE_HEALTH_INVALID),
    ({**OK, "health": "Healthy"}, C.SERVICE_HEALTH_INVALID),
    ({**OK, "health": 1}, C.SERVICE_HEALTH_INVALID),
    ({**OK, "lease": 1}, C.BAD_REQUEST),  # unknown fields are refused, not ignored
    ({**OK, "fencing_token": 1}, C.BAD_REQUEST),
    ({**OK, "deep": deep(40)}, C.BAD_REQUEST),
    ([OK], C.BAD_REQUEST),
    ("web", C.BAD_REQUEST),
    (None, C.BAD_REQUEST),
    (7, C.BAD_REQUEST),
]

OTHERS = [
    ("ServiceHeartbeat", {"service": "web", "instance": "a"}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", {**TARGET, "fencing_token": 0}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", {**TARGET, "fencing_token": -1}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", {**TARGET, "fencing_token": "5"}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", {**TARGET, "fencing_token": 2**63}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", {**TARGET, "fencing_token": [5]}, C.SERVICE_TOKEN_INVALID),
    ("ServiceHeartbeat", TARGET, C.SERVICE_NOT_FOUND),
    ("ServiceHeartbeat", {**TARGET, "ttl": 5}, C.BAD_REQUEST),
    ("ServiceDeregister", {**TARGET, "instance": ""}, C.SERVICE_INSTANCE_INVALID),
    ("ServiceDeregister", TARGET, C.SERVICE_NOT_FOUND),
    ("ServiceDeregister", [TARGET], C.BAD_REQUEST),
    ("ServiceUpdateHealth", {**TARGET, "health": "sick"}, C.SERVICE_HEALTH_INVALID),
    ("ServiceUpdateHealth", {**TARGET, "health": "healthy", "weight": 1}, C.BAD_REQUEST),
    ("ServiceUpdateHealth", {**TARGET, "health": "healthy"}, C.SERVICE_NOT_FOUND),
    ("ServiceUpdateMetadata", {**TARGET, "weight": 99999}, C.SERVICE_WEIGHT_INVALID),
    ("ServiceUpdateMetadata", {**TARGET, "tags": {"a": 1}}, C.SERVICE_TAGS_INVALID),
    ("ServiceUpdateMetadata", {**TARGET, "metadata": "k=v"}, C.SERVICE_METADATA_INVALID),
    ("ServiceUpdateMetadata", {**TARGET, "address": "elsewhere"}, C.BAD_REQUEST),
    ("ServiceDiscover", {}, C.SERVICE_NAME_INVALID),
    ("ServiceDiscover", {"service": "web", "health": "meh"}, C.SERVICE_HEALTH_INVALID),
    ("ServiceDiscover", {"service": "web", "tags": ["x"] * 33}, C.SERVICE_TAGS_INVALID),
    ("ServiceDiscover", {"service": "web", "version_prefix": "1" * 65}, C.SERVICE_VERSION_INVALID),
    ("ServiceDiscover", {"service": "web", "continuation": ""}, C.BAD_REQUEST),
    ("ServiceDiscover", {"service": "web", "continuation": "c" * 3000}, C.BAD_REQUEST),
    ("ServiceDiscover", {"service": "web", "continuation": "%%%"}, C.INVALID_CONTINUATION),
    ("ServiceDiscover", {"service": "web", "filter": "x"}, C.BAD_REQUEST),
    ("ServiceList", {"limit": 0}, C.SERVICE_LIMIT_INVALID),
    ("ServiceList", {"prefix": "__apps:"}, C.BAD_REQUEST),
    ("ServiceList", "all", C.BAD_REQUEST),
    ("ServiceGetInstance", {"service": "web"}, C.SERVICE_INSTANCE_INVALID),
    ("ServiceGetInstance", {"service": "../..", "instance": "a"}, C.SERVICE_NAME_INVALID),
]


@pytest.fixture
async def registry(load):
    return await load("service-registry")


async def refused(handler, type_: str, body: object) -> AspenError:
    with pytest.raises(AspenError) as err:
        await handler.handle(Request(type_, body), RequestContext())  # type: ignore[arg-type]
    return err.value


@pytest.mark.parametrize("body, code", REGISTER)
async def test_bad_registrations(registry, kv, body, code):
    err = await refused(registry, "ServiceRegister", body)
    assert err.code == code, err
    assert len(err.message) < 300
    assert await kv.current_revision() == 0 and await kv.lease_list() == []


@pytest.mark.parametrize("type_, body, code", OTHERS)
async def test_bad_requests(registry, kv, type_, body, code):
    assert (await refused(registry, type_, body)).code == code
    assert await kv.current_revision() == 0


async def test_an_unknown_request_type(registry):
    assert (await refused(registry, "ServiceExplode", {})).code in (C.UNKNOWN_REQUEST, "UNHANDLED")


async def test_a_record_at_the_size_limit_is_accepted(registry, kv):
    body = {**OK, "tags": [f"{i:02}" + "t" * 20 for i in range(32)], "metadata": {f"k{i}": "v" * 100 for i in range(5)}}
    reply = await registry.handle(Request("ServiceRegister", body), RequestContext())
    assert reply.body["fencing_token"] > 0
    assert len((await kv.get("__service:web:a")).value) <= 2048
