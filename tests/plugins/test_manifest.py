"""Manifest decoding and validation, and the prefix rules (with property
tests for the namespace gate)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aspen.errors import AspenError
from aspen.plugins.gate import PluginGate
from aspen.plugins.manifest import (
    NodePluginLimits,
    PluginLimits,
    effective_limits,
)
from aspen.plugins.namespace import (
    MAX_KV_PREFIXES,
    RESERVED_PREFIXES,
    default_prefix,
    effective_prefixes,
    find_overlap,
    overlaps,
    validate_prefixes,
)
from aspen.plugins.rules import parse_manifest

BASE = {"name": "demo", "version": "1.2.3", "handles": ["DemoGet"], "priority": 950}


def manifest(**changes):
    return parse_manifest(json.dumps({**BASE, **changes}))


def invalid(field: str, code: str = "INVALID_MANIFEST", **changes) -> None:
    with pytest.raises(AspenError) as err:
        manifest(**changes)
    assert err.value.code == code
    assert err.value.details.get("field", field) == field


def test_defaults_deny_everything():
    m = manifest()
    assert m.permissions.granted() == frozenset()
    assert m.enabled and m.kv_prefixes == () and m.signature is None
    assert effective_prefixes(m.name, m.kv_prefixes) == ("__plugin:demo:",)


def test_all_lifecycle_fields_round_trip():
    full = {
        **BASE,
        "wasm_hash": "ab" * 32,
        "app_id": "forge",
        "kv_prefixes": ["forge:"],
        "permissions": {"kv_read": True, "signing": True},
        "limits": {"memory_bytes": 1 << 20, "timeout_ms": 100, "concurrency": 3},
        "dependencies": [{"name": "base", "min_version": "1.0.0", "optional": True}],
        "min_api_version": "1.0.0",
        "description": "d",
        "author": "a",
        "tags": ["t"],
        "enabled": False,
        "signature": {"author_pubkey": "aa" * 32, "signature": "bb" * 64, "wasm_hash": "ab" * 32, "signed_at_ms": 1},
    }
    m = parse_manifest(json.dumps(full))
    assert m.permissions.granted() == {"kv_read", "signing"}
    assert m.dependencies[0].optional and m.signature.signed_at_ms == 1


@pytest.mark.parametrize(
    "field, changes, code",
    [
        ("name", {"name": "bad name"}, "PLUGIN_NAME_INVALID"),
        ("name", {"name": "x" * 129}, "PLUGIN_NAME_TOO_LONG"),
        ("version", {"version": "1.0"}, "INVALID_MANIFEST"),
        ("version", {"version": "01.0.0"}, "INVALID_MANIFEST"),
        ("handles", {"handles": []}, "PLUGIN_HANDLES_INVALID"),
        ("handles", {"handles": ["Ping", "Ping"]}, "INVALID_MANIFEST"),
        ("handles", {"handles": ["bad-type"]}, "INVALID_MANIFEST"),
        ("handles", {"handles": [f"T{i}" for i in range(65)]}, "PLUGIN_TOO_MANY_HANDLES"),
        ("priority", {"priority": 899}, "PLUGIN_PRIORITY_OUT_OF_RANGE"),
        ("priority", {"priority": 1000}, "PLUGIN_PRIORITY_OUT_OF_RANGE"),
        ("wasm_hash", {"wasm_hash": "XYZ"}, "INVALID_MANIFEST"),
        ("kv_prefixes", {"kv_prefixes": [""]}, "PLUGIN_PREFIX_INVALID"),
        ("kv_prefixes", {"kv_prefixes": [f"p{i}:" for i in range(17)]}, "PLUGIN_TOO_MANY_PREFIXES"),
        ("kv_prefixes", {"kv_prefixes": ["__apps:mine:"]}, "PLUGIN_PREFIX_INVALID"),
        ("kv_prefixes", {"kv_prefixes": ["__"]}, "PLUGIN_PREFIX_INVALID"),
        ("kv_prefixes", {"kv_prefixes": ["__plugin:other:"]}, "PLUGIN_PREFIX_INVALID"),
        ("kv_prefixes", {"kv_prefixes": ["__plugin:"]}, "PLUGIN_PREFIX_INVALID"),
        ("limits.timeout_ms", {"limits": {"timeout_ms": 0}}, "INVALID_MANIFEST"),
        ("dependencies", {"dependencies": [{"name": "x", "min_version": "one"}]}, "INVALID_MANIFEST"),
        ("min_api_version", {"min_api_version": "latest"}, "INVALID_MANIFEST"),
        ("tags", {"tags": ["x" * 65]}, "INVALID_MANIFEST"),
        ("description", {"description": "x" * 1025}, "INVALID_MANIFEST"),
        (
            "signature",
            {"signature": {"author_pubkey": "zz", "signature": "", "wasm_hash": "", "signed_at_ms": 0}},
            "INVALID_MANIFEST",
        ),
    ],
)
def test_rules(field, changes, code):
    """The rules of aspen.plugins.rules, each with its own code, when plugin.json is read."""
    invalid(field, code, **changes)


@pytest.mark.parametrize("raw", ["{", "[]", '{"name": "x"}', json.dumps({**BASE, "permissions": {"kv_raed": True}})])
def test_undecodable_or_unknown_fields(raw):
    with pytest.raises(AspenError) as err:
        parse_manifest(raw)
    assert err.value.code == "INVALID_MANIFEST"


def test_own_default_namespace_may_be_declared():
    assert manifest(kv_prefixes=["__plugin:demo:sub:"]).kv_prefixes == ("__plugin:demo:sub:",)


def test_effective_limits_take_defaults_and_caps():
    node = NodePluginLimits()
    assert effective_limits(PluginLimits(), node).timeout_ms == 5000
    assert effective_limits(PluginLimits(timeout_ms=100), node).timeout_ms == 100
    assert effective_limits(PluginLimits(timeout_ms=10**9, memory_bytes=1 << 40), node).memory_bytes == 16 << 20
    assert effective_limits(PluginLimits(), node).memory_pages == 256


# --- property tests -----------------------------------------------------------

keys = st.text(alphabet="_:abcpluginsx", max_size=24)
names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)


@given(names, st.lists(keys, max_size=MAX_KV_PREFIXES))
def test_validated_prefixes_never_reach_reserved_or_foreign_space(name, declared):
    try:
        allowed = validate_prefixes(name, declared)
    except AspenError as exc:
        assert exc.code == "INVALID_MANIFEST"
        return
    for p in allowed:
        assert p
        assert not any(overlaps(p, r) for r in RESERVED_PREFIXES)
        assert not overlaps(p, "__plugin:") or p.startswith(default_prefix(name))


@given(names, st.lists(keys, min_size=1, max_size=4), keys)
def test_gate_allows_exactly_keys_under_a_prefix(name, declared, key):
    try:
        prefixes = validate_prefixes(name, declared)
    except AspenError:
        return
    gate = PluginGate(name, frozenset({"kv_read"}), prefixes)
    inside = any(key.startswith(p) for p in prefixes)
    try:
        gate.check_key(key, "read")
        assert inside
    except AspenError as exc:
        assert not inside or exc.code == "INVALID_KEY"
    if any(key.startswith(r) for r in RESERVED_PREFIXES):
        assert not gate.allows(key)


@given(names, st.lists(keys, min_size=1, max_size=4), keys)
def test_scan_prefix_must_lie_inside(name, declared, prefix):
    try:
        prefixes = validate_prefixes(name, declared)
    except AspenError:
        return
    gate = PluginGate(name, frozenset(), prefixes)
    try:
        gate.check_scan(prefix)
    except AspenError:
        return
    # An accepted scan prefix confines every key it can return.
    assert prefix and any(prefix.startswith(p) for p in prefixes)


@settings(max_examples=200)
@given(st.lists(keys, min_size=1, max_size=3), st.lists(keys, min_size=1, max_size=3))
def test_overlap_detection_is_symmetric_and_complete(a, b):
    a, b = [p for p in a if p], [p for p in b if p]
    clash = find_overlap(a, {"other": tuple(b)})
    expected = any(x.startswith(y) or y.startswith(x) for x in a for y in b)
    assert (clash is not None) == expected
    assert (find_overlap(b, {"other": tuple(a)}) is not None) == expected


def test_gate_refuses_to_exist_without_prefixes():
    for prefixes in ((), ("",)):
        with pytest.raises(AspenError):
            PluginGate("x", frozenset(), prefixes)
