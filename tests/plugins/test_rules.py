"""The one table of manifest rules: where each is checked, and that the ABI
doc shows the same table."""

from __future__ import annotations

import json

import pytest

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.build import REPO
from aspen.plugins.manifest import NodePluginLimits, PluginLimits, PluginManifest
from aspen.plugins.rules import (
    FILE,
    INSTALL,
    LOAD,
    RULES,
    check_manifest,
    parse_manifest,
    rules_table,
)


def test_the_abi_doc_shows_the_table():
    doc = (REPO / "docs" / "plugin-abi.md").read_text()
    shown = doc.split("<!-- rules-table -->\n", 1)[1].split("\n<!-- /rules-table -->", 1)[0]
    assert shown == rules_table()


def test_every_rule_names_a_known_code_and_field():
    assert all(rule.code in set(ErrorCode) for rule in RULES)
    assert all(rule.field.split(".")[0] in PluginManifest.__struct_fields__ for rule in RULES)


def test_caps_are_checked_at_install_only():
    greedy = PluginManifest(name="demo", version="1.2.3", handles=("DemoGet",), limits=PluginLimits(timeout_ms=10**6))
    with pytest.raises(AspenError) as err:
        check_manifest(greedy, NodePluginLimits(), at=INSTALL)
    assert err.value.code == ErrorCode.PLUGIN_LIMIT_EXCEEDED and err.value.details["field"] == "limits.timeout_ms"
    check_manifest(greedy, at=LOAD)  # this node runs it within its own caps
    check_manifest(greedy, at=FILE)


def test_the_host_api_version_is_judged_by_a_node_not_by_a_file():
    raw = json.dumps({"name": "demo", "version": "1.2.3", "handles": ["DemoGet"], "min_api_version": "99.0.0"})
    manifest = parse_manifest(raw)
    for at in (INSTALL, LOAD):
        with pytest.raises(AspenError) as err:
            check_manifest(manifest, at=at)
        assert err.value.code == ErrorCode.PLUGIN_API_VERSION_UNSUPPORTED
        assert err.value.details == {
            "plugin": "demo",
            "field": "min_api_version",
            "required": "99.0.0",
            "current": "1.0.0",
        }
