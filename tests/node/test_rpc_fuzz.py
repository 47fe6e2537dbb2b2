"""Fuzzing ``POST /v1/rpc`` of a real node: bodies drawn from every request
of the catalog (core, plugin lifecycle, jobs, ClusterStatus) with fields of
the wrong type, missing, huge or deeply nested, in JSON and msgpack, and
bytes that are no envelope at all. Whatever arrives, the node answers with a
valid envelope and a 4xx at worst: never a 5xx, never ``INTERNAL``.

The node is this module's own (jobs are stored but never run: no worker
pool), and every request is capped at two seconds, so the file stays well
under a minute."""

from __future__ import annotations

import enum

import httpx
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aspen.jobs.handler import REQUEST_TYPES as JOB_REQUEST_TYPES
from aspen.jobs.requests import JOB_REQUESTS
from aspen.plugins.requests import LIFECYCLE_REQUESTS
from aspen.rpc.catalog import CORE_REQUESTS
from tests.node.admin_token import admin_token, auth_headers
from tests.node.node_process import NodeProcess

assert set(JOB_REQUESTS) == set(JOB_REQUEST_TYPES)
BODIES: dict[str, type | None] = {
    **{name: spec[0] for name, spec in CORE_REQUESTS.items()},
    **{name: spec[0] for name, spec in LIFECYCLE_REQUESTS.items()},
    **JOB_REQUESTS,
    "ClusterStatus": None,
}

EDGE_INTS = st.sampled_from(
    [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 10**23, -(10**30), 10**400]
)
EDGE_STRS = st.sampled_from(
    ["", "a", "__plugins:x", "__jobs:", "x" * 2000, "[bold]k[/bold]", "a:smile:b", "\x00", "é" * 100, "0" * 64, "../.."]
)
SCALARS = st.none() | st.booleans() | st.integers() | EDGE_INTS | st.floats() | st.text(max_size=20) | EDGE_STRS
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def deep(draw):
    """Nested far past the node's depth limit (but not so deep that
    encoding it here would hit Python's own recursion limit)."""
    value: object = draw(SCALARS)
    for _ in range(draw(st.integers(50, 400))):
        value = [value] if draw(st.booleans()) else {"k": value}
    return value


# Stands for a value nested deeper than Python could encode here: the
# encoded envelope gets the nesting spliced in as bytes.
DEEP_MARK = "\x00deep\x00"
HUGE = st.sampled_from(["x" * 300_000, list(range(50_000)), {str(i): i for i in range(20_000)}])


def for_type(t: msgspec.inspect.Type) -> st.SearchStrategy:
    """Values of type ``t``, leaning on the edges, or now and then of any other type."""
    return st.one_of(_well_typed(t), ANY) if not isinstance(t, msgspec.inspect.StructType) else _well_typed(t)


def _well_typed(t: msgspec.inspect.Type) -> st.SearchStrategy:
    i = msgspec.inspect
    if isinstance(t, i.IntType):
        return st.integers() | EDGE_INTS
    if isinstance(t, i.FloatType):
        return st.floats() | st.sampled_from([0.0, -1.0, 1e308, 1e-308, 2.0**63])
    if isinstance(t, i.StrType):
        return st.text(max_size=40) | EDGE_STRS
    if isinstance(t, i.BytesType):
        return st.binary(max_size=64) | st.sampled_from([b"", b"\x00" * 70_000, b"\0asm\1\0\0\0"])
    if isinstance(t, i.BoolType):
        return st.booleans()
    if isinstance(t, i.NoneType):
        return st.none()
    if isinstance(t, i.UnionType):
        return st.one_of([st.deferred(lambda t=m: _well_typed(t)) for m in t.types])
    if isinstance(t, (i.ListType, i.SetType, i.FrozenSetType, i.VarTupleType)):
        return st.lists(st.deferred(lambda: for_type(t.item_type)), max_size=4)
    if isinstance(t, i.DictType):
        return st.dictionaries(st.text(max_size=10), st.deferred(lambda: for_type(t.value_type)), max_size=3)
    if isinstance(t, i.LiteralType):
        return st.sampled_from(list(t.values))
    if isinstance(t, i.EnumType):
        return st.sampled_from([m.value for m in t.cls]) if issubclass(t.cls, enum.Enum) else ANY
    if isinstance(t, i.StructType):
        return struct_body(t)
    return ANY


@st.composite
def struct_body(draw, t: msgspec.inspect.StructType) -> dict:
    """A dict for the Struct: each field present or missing, valid or not,
    and sometimes a field the Struct does not have."""
    body: dict = {}
    if t.tag_field is not None:
        body[t.tag_field] = draw(st.sampled_from([t.tag, t.tag, "nope", 7]))
    for f in t.fields:
        if draw(st.integers(0, 9)) == 0:
            continue  # missing (required or not)
        body[f.encode_name] = draw(for_type(f.type))
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.text(max_size=10))] = draw(ANY)
    return body


def body_for(request_type: str) -> st.SearchStrategy:
    cls = BODIES.get(request_type)
    typed = struct_body(msgspec.inspect.type_info(cls)) if cls is not None else st.just({})
    return st.one_of(typed, typed, typed, ANY, deep(), HUGE, st.just({"x": DEEP_MARK}), st.just(DEEP_MARK))


@st.composite
def envelopes(draw) -> dict:
    rtype = draw(st.sampled_from(sorted(BODIES)) | st.text(max_size=30) | st.sampled_from(["", "Error", 7, None]))
    env: dict = {"type": rtype, "timeout_ms": 1500}
    if draw(st.integers(0, 19)) != 0:
        env["body"] = draw(body_for(rtype if isinstance(rtype, str) else "Ping"))
    for name in ("app", "token"):
        if draw(st.integers(0, 9)) == 0:
            env[name] = draw(ANY)
    for name in ("proxy_hops", "timeout_ms"):
        if draw(st.integers(0, 4)) == 0:
            env[name] = draw(EDGE_INTS | st.integers() | ANY)
    return env


def splice_deep(content: bytes, msgpack: bool, depth: int) -> bytes:
    if msgpack:
        return content.replace(msgspec.msgpack.encode(DEEP_MARK), b"\x91" * (depth - 1) + b"\x90")
    return content.replace(msgspec.json.encode(DEEP_MARK), b"[" * depth + b"]" * depth)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-node")
    config = root / "aspen.toml"
    config.write_text("[node]\nmax_request_seconds = 2.0\n\n[jobs]\nworkers = false\n")
    with NodeProcess(root / "data", "--config", str(config)) as node:
        with httpx.Client(base_url=node.url, headers=auth_headers(node.data_dir), timeout=30) as http:
            yield node, http
        assert "Traceback" not in node.log(), node.log()[-5000:]  # nothing failed unseen either


def send(http: httpx.Client, content: bytes, msgpack: bool, *, own_token: bool = True) -> None:
    """``own_token=False``: the envelope carries a fuzzed token, which may be
    refused as one (401/403) instead of as a malformed request."""
    kind = "application/msgpack" if msgpack else "application/json"
    r = http.post("/v1/rpc", content=content, headers={"content-type": kind})
    allowed = (200, 400, 413) if own_token else (200, 400, 401, 403, 413)
    assert r.status_code in allowed, (r.status_code, r.content[:500])
    assert r.headers["content-type"] == kind
    wire = msgspec.msgpack.decode(r.content) if msgpack else msgspec.json.decode(r.content)
    assert isinstance(wire, dict) and set(wire) == {"type", "body"} and isinstance(wire["type"], str), wire
    assert isinstance(wire["body"], dict)
    if wire["type"] == "Error":
        assert isinstance(wire["body"]["code"], str) and isinstance(wire["body"]["message"], str), wire
        assert wire["body"]["code"] != "INTERNAL", (content[:300], wire)
    else:
        assert r.status_code == 200


FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@FUZZ
@given(env=envelopes(), msgpack=st.booleans(), depth=st.sampled_from([100, 1000, 10_000, 100_000]))
def test_any_request_gets_an_envelope_and_never_a_5xx(fuzz_node, env, msgpack, depth):
    node, http = fuzz_node
    own_token = "token" not in env
    if own_token:
        env["token"] = admin_token(node.data_dir)
    content = None
    if msgpack:
        try:
            content = msgspec.msgpack.encode(env)
        except OverflowError:  # msgpack has no integers past 64 bits: send it as JSON
            msgpack = False
    content = content if content is not None else msgspec.json.encode(env)
    send(http, splice_deep(content, msgpack, depth), msgpack, own_token=own_token)


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode), msgpack=st.booleans())
def test_bytes_that_are_no_envelope(fuzz_node, raw, msgpack):
    send(fuzz_node[1], raw, msgpack)
