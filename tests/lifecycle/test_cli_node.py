"""The ``aspen plugin`` verbs not covered by test_two_nodes — enable,
disable, deps, trust list/remove, remove --force/--cascade — run as the
real command against one real node process."""

from __future__ import annotations

import json
import os

import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from tests.lifecycle.test_two_nodes import run, version_on, write_plugin
from tests.node.node_process import NodeProcess


@pytest.fixture
def node(tmp_path):
    cfg = tmp_path / "node.toml"
    cfg.write_text('[node]\nnode_id = "solo"\n[plugins]\ndrain_seconds = 2\n')
    with NodeProcess(tmp_path / "data", "--config", str(cfg)) as proc:
        yield proc


def user_echo(client: SyncClient) -> bool:
    """Whether the 'user' plugin (which also answers with its version) serves."""
    try:
        return client.call("UserEcho", {"seq": 1})["served_by"] == "user"
    except AspenError:
        return False


def test_plugin_verbs_against_a_node(node, tmp_path, modules):
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config"), "COLUMNS": "250"}
    key = tmp_path / "signing.key"
    pub = run("plugin", "keygen", "--output", str(key), env=env).stdout.strip().splitlines()[-1]

    def aspen(*args: str, ok: bool = True):
        return run("plugin", *args, "--url", node.url, env=env, ok=ok)

    def listed() -> dict:
        return {p["name"]: p for p in json.loads(aspen("list", "--json").stdout)["plugins"]}

    # trust: add from the key file, list, then install signed modules
    assert pub in aspen("trust", "add", "--key-file", str(key), "--name", "ci author").stdout
    listing = aspen("trust", "list").stdout
    assert pub in listing and "ci author" in listing
    (author,) = json.loads(aspen("trust", "list", "--json").stdout)["authors"]
    assert author["pubkey"] == pub and author["name"] == "ci author"

    w1, j1 = write_plugin(tmp_path / "v1", "1.0.0", modules["1.0.0"])
    aspen("install", str(w1), "--manifest", str(j1), "--sign-key", str(key))
    uw = tmp_path / "user.wasm"
    uw.write_bytes(modules["user"])
    user_flags = ("--name", "user", "--handles", "UserEcho", "--plugin-version", "1.0.0", "--sign-key", str(key))
    aspen("install", str(uw), *user_flags, "--depends", "vers>=1.0.0")

    # deps: load order, one plugin's dependencies, and its dependents
    assert "load order: vers → user" in aspen("deps").stdout
    assert "vers >= 1.0.0: 1.0.0 ok" in aspen("deps", "user").stdout
    assert "depend on vers: user" in aspen("deps", "vers", "--reverse").stdout
    order = json.loads(aspen("deps", "--json").stdout)
    assert order["load_order"] == ["vers", "user"] and order["problems"] == []
    missing = aspen("deps", "nope", ok=False)
    assert missing.returncode == 1 and "PLUGIN_NOT_FOUND" in missing.stderr

    with SyncClient(node.url) as client:
        assert version_on(client) == "1.0.0" and user_echo(client)
        metrics = json.loads(aspen("info", "vers", "--json").stdout)["status"]["metrics"]
        assert metrics["calls"] >= 1 and metrics["in_flight"] == 0 and 0 < metrics["p50_ms"] <= metrics["p99_ms"]
        text = aspen("info", "vers").stdout
        assert "this node: ready 1.0.0; calls" in text and "in flight 0" in text
        assert "p99 ms" in aspen("list").stdout

        # disable: refused while 'user' depends on it; --cascade takes 'user' along
        refused = aspen("disable", "vers", ok=False)
        assert refused.returncode == 1 and "PLUGIN_HAS_DEPENDENTS" in refused.stderr
        assert version_on(client) == "1.0.0"
        out = aspen("disable", "vers", "--cascade").stdout
        assert "disabled" in out and "also changed: user" in out
        assert version_on(client) is None and not user_echo(client)
        plugins = listed()
        assert not plugins["vers"]["enabled"] and not plugins["user"]["enabled"]
        assert plugins["vers"]["status"]["state"] == "absent"

        # enable: a dependent needs its dependency enabled first
        early = aspen("enable", "user", ok=False)
        assert early.returncode == 1 and "PLUGIN_DEPENDENCY_MISSING" in early.stderr
        enabled = json.loads(aspen("enable", "vers", "--json").stdout)
        assert enabled["enabled"] and enabled["status"]["state"] == "ready"
        assert version_on(client) == "1.0.0"
        assert "enabled" in aspen("enable", "user").stdout
        assert user_echo(client)

        # remove: refused with dependents; --force leaves 'user' visibly broken
        refused = aspen("remove", "vers", ok=False)
        assert refused.returncode == 1 and "PLUGIN_HAS_DEPENDENTS" in refused.stderr
        assert aspen("remove", "vers", "--force").stdout.strip() == "removed vers"
        assert version_on(client) is None and not user_echo(client)
        user = listed()["user"]["status"]
        assert user["state"] == "failed" and user["error"]["code"] == "PLUGIN_DEPENDENCY_MISSING"
        assert "vers >= 1.0.0: - MISSING" in aspen("deps", "user").stdout
        check = aspen("check", ok=False)
        assert check.returncode == 1 and "PLUGIN_DEPENDENCY_MISSING" in check.stdout

        # reinstalling the dependency brings the dependent back; --cascade removes both
        aspen("install", str(w1), "--manifest", str(j1), "--sign-key", str(key))
        aspen("reload")  # retry the dependent that failed before
        assert user_echo(client)
        removed = json.loads(aspen("remove", "vers", "--cascade", "--json").stdout)
        assert removed["removed"] == ["user", "vers"]
        assert listed() == {} and version_on(client) is None and not user_echo(client)

    # trust remove: the author's modules no longer install
    assert aspen("trust", "remove", pub).stdout.strip() == f"removed {pub}"
    assert json.loads(aspen("trust", "list", "--json").stdout)["authors"] == []
    again = aspen("trust", "remove", pub, ok=False)
    assert again.returncode == 1 and "PLUGIN_AUTHOR_NOT_FOUND" in again.stderr
    untrusted = aspen("install", str(w1), "--manifest", str(j1), "--sign-key", str(key), ok=False)
    assert untrusted.returncode == 1 and "PLUGIN_AUTHOR_UNTRUSTED" in untrusted.stderr
