"""Apps: a plugin with an app_id is an app while it serves, on every node's
list, and gone when it goes (disable, remove); a failed upgrade leaves the
version that still serves."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.federation.apps import AppManifest, check_app
from tests.federation.conftest import ECHO, cluster, install_echo
from tests.node.node_process import ASPEN


def wait_apps(client: SyncClient, want: list[tuple[str, str]], timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        apps = client.call("AppList", {})["apps"]
        if [(a["app_id"], a["version"]) for a in apps] == want or time.monotonic() > deadline:
            return apps
        time.sleep(0.1)


def test_plugin_app_follows_the_plugin(tmp_path, clusters):
    node = clusters.enter_context(cluster(tmp_path, "alpha"))
    with SyncClient(node.url) as client:
        assert client.call("AppList", {})["apps"] == []
        install_echo(client, app_id=None)  # a plugin without app_id is no app
        time.sleep(0.5)
        assert client.call("AppList", {})["apps"] == []
        client.call("PluginRemove", {"name": "echo"})
        install_echo(client)
        [app] = wait_apps(client, [("echo", "0.1.0")])
        node_id = client.call("GetNodeInfo", {})["node_id"]
        assert app["provider"] == "plugin" and app["nodes"] == [node_id] and "Echo" in app["request_types"]
        out = subprocess.run(
            [ASPEN, "app", "list", "--json", "--url", node.url], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0 and json.loads(out.stdout)["apps"][0]["app_id"] == "echo", (out.stdout, out.stderr)
        text = subprocess.run([ASPEN, "app", "list", "--url", node.url], capture_output=True, text=True, check=False)
        assert "echo" in text.stdout and "plugin" in text.stdout

        client.call("PluginDisable", {"name": "echo"})
        assert wait_apps(client, []) == []
        client.call("PluginEnable", {"name": "echo"})
        assert len(wait_apps(client, [("echo", "0.1.0")])) == 1

        # a failed upgrade (the module is another plugin's): 0.1.0 keeps serving and stays the app
        manifest = json.loads((ECHO / "plugin.json").read_text()) | {"version": "0.2.0", "app_id": "echo"}
        other = (Path(ECHO).parent / "kv-counter" / "plugin.wasm").read_bytes()
        try:
            client.call("PluginUpgrade", {"manifest": manifest, "wasm": other})
        except AspenError:
            pass  # refused or failed to load: either way 0.2.0 never serves
        time.sleep(1.0)
        assert wait_apps(client, [("echo", "0.1.0")], timeout=1)[0]["version"] == "0.1.0"
        client.call("PluginRemove", {"name": "echo"})
        assert wait_apps(client, []) == []


def test_app_list_needs_a_token(tmp_path, clusters):
    node = clusters.enter_context(cluster(tmp_path, "alpha"))
    with SyncClient(node.url, token="") as client, pytest.raises(AspenError) as err:
        client.call("AppList", {})
    assert err.value.code == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"app_id": "x" * 65}, "app_id"),
        ({"app_id": "../etc"}, "app_id"),
        ({"version": ""}, "version"),
        ({"name": "n" * 129}, "name"),
        ({"capabilities": tuple(f"c{i}" for i in range(17))}, "capabilities"),
        ({"capabilities": ("x" * 65,)}, "capabilities"),
        ({"request_types": ("not a type",)}, "request_types"),
    ],
)
def test_app_manifest_limits(fields, field):
    base = {"app_id": "echo", "version": "1.0.0"}
    with pytest.raises(AspenError) as err:
        check_app(msgspec.convert(base | fields, AppManifest))
    assert err.value.code == "INVALID_ARGUMENT" and err.value.details["field"] == field
