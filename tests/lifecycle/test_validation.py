"""Install-time validation: every rule has its own code; dependency order."""

from __future__ import annotations

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import NodePluginLimits, PluginDependency, PluginLimits
from aspen.plugins.rules import check_manifest
from aspen.plugins.validation import (
    check_against_installed,
    dependents,
    load_order,
    version_satisfies,
)
from tests.lifecycle.conftest import vers_manifest


def m(name="p", version="1.0.0", deps=(), **kw):
    """Each plugin gets its own prefix and its own request type unless told otherwise."""
    kw.setdefault("kv_prefixes", (f"{name}:",))
    kw.setdefault("handles", (f"Ask_{name.replace('-', '_')}",))
    return vers_manifest(version, name=name, dependencies=tuple(deps), **kw)


def dep(name, min_version=None, optional=False):
    return PluginDependency(name=name, min_version=min_version, optional=optional)


@pytest.mark.parametrize(
    "overrides, code",
    [
        ({"name": "bad name"}, ErrorCode.PLUGIN_NAME_INVALID),
        ({"name": ""}, ErrorCode.PLUGIN_NAME_INVALID),
        ({"name": "x" * 129}, ErrorCode.PLUGIN_NAME_TOO_LONG),
        ({"handles": ()}, ErrorCode.PLUGIN_HANDLES_INVALID),
        ({"handles": tuple(f"T{i}" for i in range(65))}, ErrorCode.PLUGIN_TOO_MANY_HANDLES),
        ({"priority": 899}, ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE),
        ({"priority": 1000}, ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE),
        ({"kv_prefixes": tuple(f"p{i}:" for i in range(17))}, ErrorCode.PLUGIN_TOO_MANY_PREFIXES),
        ({"kv_prefixes": ("",)}, ErrorCode.PLUGIN_PREFIX_INVALID),
        ({"kv_prefixes": ("__plugins:manifests:",)}, ErrorCode.PLUGIN_PREFIX_INVALID),
        ({"kv_prefixes": ("__plugin:other:",)}, ErrorCode.PLUGIN_PREFIX_INVALID),
        ({"limits": PluginLimits(memory_bytes=1 << 30)}, ErrorCode.PLUGIN_LIMIT_EXCEEDED),
        ({"limits": PluginLimits(timeout_ms=10**6)}, ErrorCode.PLUGIN_LIMIT_EXCEEDED),
        ({"limits": PluginLimits(concurrency=1000)}, ErrorCode.PLUGIN_LIMIT_EXCEEDED),
        ({"min_api_version": "99.0.0"}, ErrorCode.PLUGIN_API_VERSION_UNSUPPORTED),
        ({"version": "one"}, ErrorCode.INVALID_MANIFEST),
    ],
)
def test_each_rule_has_its_own_code(overrides, code):
    manifest = m(
        **{k: v for k, v in overrides.items() if k != "kv_prefixes"}, kv_prefixes=overrides.get("kv_prefixes", ("p:",))
    )
    with pytest.raises(AspenError) as info:
        check_manifest(manifest, NodePluginLimits())
    assert info.value.code == code, info.value


def test_boundaries_pass():
    check_manifest(
        m(
            name="a" * 128,
            priority=900,
            handles=tuple(f"T{i}" for i in range(64)),
            kv_prefixes=tuple(f"p{i}:" for i in range(16)),
        )
    )
    check_manifest(m(priority=999, min_api_version="1.0.0"))


def test_dependency_missing_and_too_old():
    installed = {"base": m("base", "1.2.0")}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("app", deps=[dep("nope")]), installed)
    assert info.value.code == ErrorCode.PLUGIN_DEPENDENCY_MISSING
    with pytest.raises(AspenError) as info:
        check_against_installed(m("app", deps=[dep("base", "2.0.0")]), installed)
    assert info.value.code == ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD
    check_against_installed(m("app", deps=[dep("base", "1.1.9"), dep("nope", optional=True)]), installed)


def test_rollback_below_what_a_dependent_needs_is_refused():
    installed = {"base": m("base", "2.0.0"), "app": m("app", deps=[dep("base", "2.0.0")])}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("base", "1.0.0"), installed)
    assert info.value.code == ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD


def test_cycle_is_refused():
    installed = {"a": m("a"), "b": m("b", deps=[dep("a")])}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("a", "1.1.0", deps=[dep("b")]), installed)
    assert info.value.code == ErrorCode.PLUGIN_DEPENDENCY_CYCLE


def test_prefix_overlap_with_another_plugin():
    installed = {"a": m("a", kv_prefixes=("shared:",))}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("b", kv_prefixes=("shared:sub:",)), installed)
    assert info.value.code == ErrorCode.PLUGIN_PREFIX_OVERLAP
    check_against_installed(m("a", "1.1.0", kv_prefixes=("shared:",)), installed)  # itself is fine


def test_at_most_64_plugins():
    installed = {f"p{i}": m(f"p{i}") for i in range(64)}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("one-more"), installed)
    assert info.value.code == ErrorCode.PLUGIN_TOO_MANY_PLUGINS
    check_against_installed(m("p3", "1.1.0"), installed)  # an upgrade does not add one


def test_load_order_chain_diamond_and_ties():
    ms = {
        "top": m("top", deps=[dep("left"), dep("right")]),
        "left": m("left", deps=[dep("base")]),
        "right": m("right", deps=[dep("base")]),
        "base": m("base"),
        "alone": m("alone"),
    }
    order, errors = load_order(ms)
    assert errors == {}
    assert order == ["alone", "base", "left", "right", "top"]


def test_load_order_drops_broken_plugins_and_their_dependents():
    ms = {
        "a": m("a", deps=[dep("missing")]),
        "b": m("b", deps=[dep("a")]),
        "c": m("c", deps=[dep("missing", optional=True)]),
        "x": m("x", deps=[dep("y")]),
        "y": m("y", deps=[dep("x")]),
    }
    order, errors = load_order(ms)
    assert order == ["c"]
    assert errors["a"].code == ErrorCode.PLUGIN_DEPENDENCY_MISSING
    assert errors["b"].code == ErrorCode.PLUGIN_DEPENDENCY_MISSING
    assert errors["x"].code == errors["y"].code == ErrorCode.PLUGIN_DEPENDENCY_CYCLE


def test_versions_and_dependents():
    assert version_satisfies("1.10.0", "1.9.0")
    assert not version_satisfies("1.9.0", "1.10.0")
    assert version_satisfies("custom", "custom") and not version_satisfies("custom", "other")
    ms = {"a": m("a"), "b": m("b", deps=[dep("a")]), "c": m("c", deps=[dep("a", optional=True)])}
    assert dependents("a", ms) == ["b"]


def test_handles_overlap_with_another_plugin():
    installed = {"echo": m("echo", handles=("Ping", "Echo")), "off": m("off", handles=("Dormant",), enabled=False)}
    with pytest.raises(AspenError) as info:
        check_against_installed(m("kv-counter", handles=("CounterGet", "Echo")), installed)
    assert info.value.code == ErrorCode.PLUGIN_HANDLES_OVERLAP
    assert info.value.details == {"plugin": "kv-counter", "other": "echo", "request_types": ["Echo"]}
    with pytest.raises(AspenError) as info:  # a disabled plugin keeps its request types
        check_against_installed(m("other", handles=("Dormant",)), installed)
    assert info.value.code == ErrorCode.PLUGIN_HANDLES_OVERLAP
    check_against_installed(m("echo", "1.1.0", handles=("Ping", "Echo", "More")), installed)  # an upgrade of itself
    check_against_installed(m("kv-counter", handles=("CounterGet",)), installed)
