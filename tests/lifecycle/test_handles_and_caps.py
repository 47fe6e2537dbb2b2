"""Install-time rules between plugins and from node configuration, through
the Plugin* requests of a node built from a real ``aspen.toml``: a request
type belongs to one plugin (a re-declared kv-counter may not take ``Echo``
from echo), and the caps on manifest limits come from ``[plugins]``."""

from __future__ import annotations

import os
from types import SimpleNamespace

import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError, ErrorCode
from aspen.node.config import load_config
from aspen.plugins import requests as r
from aspen.plugins.build import REPO, build_all
from aspen.plugins.lifecycle_handler import create
from aspen.plugins.manifest import PluginLimits
from aspen.rpc.handler import Request, RequestContext
from aspen.rpc.registry import HandlerRegistry
from tests.lifecycle.test_two_nodes import run
from tests.node.node_process import NodeProcess
from tests.plugins.conftest import plugin_files


@pytest.fixture(scope="module")
def built():
    build_all(REPO)
    return REPO / "plugins"


def node_config(directory, plugins_table: str):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "aspen.toml"
    path.write_text("[plugins]\nallow_unsigned = true\ndrain_seconds = 5\n" + plugins_table)
    return load_config(path)


class Nodes:
    """Lifecycle handlers on registries, as a node wires them; stopped at the end."""

    def __init__(self, kv, blobs) -> None:
        self.kv, self.blobs, self.running = kv, blobs, []

    async def start(self, config):
        reg = HandlerRegistry()
        node = SimpleNamespace(kv=self.kv, blobs=self.blobs, registry=reg, node_id="n1", config=config, plugins=None)
        reg.add(create(node))
        await reg.start()
        self.running.append(reg)
        return reg, node.plugins

    async def stop(self, reg) -> None:
        self.running.remove(reg)
        await reg.stop()


@pytest.fixture
async def nodes(kv, blobs):
    made = Nodes(kv, blobs)
    yield made
    for reg in list(made.running):
        await made.stop(reg)


async def call(reg: HandlerRegistry, kind: str, body) -> tuple[str, dict]:
    resp = await reg.dispatch(Request(kind, body), RequestContext())
    return resp.type, resp.body


def install_body(built, rel: str, **overrides) -> dict:
    manifest, wasm = plugin_files(built, rel)
    manifest = msgspec.structs.replace(manifest, **overrides)
    return msgspec.to_builtins(r.PluginInstall(manifest=manifest, wasm=wasm))


async def test_a_redeclared_kv_counter_cannot_take_echo(tmp_path, nodes, built):
    reg, _ = await nodes.start(node_config(tmp_path, ""))
    kind, body = await call(reg, "PluginInstall", install_body(built, "echo"))
    assert kind == "PluginChangeResult" and body["status"]["state"] == "ready", body
    counter, _ = plugin_files(built, "kv-counter")
    greedy = (*counter.handles, "Echo")  # and its priority 940 would win over echo's 950

    kind, body = await call(reg, "PluginInstall", install_body(built, "kv-counter", handles=greedy))
    assert kind == "Error" and body["code"] == ErrorCode.PLUGIN_HANDLES_OVERLAP, body
    assert body["details"]["other"] == "echo" and body["details"]["request_types"] == ["Echo"]
    assert await call(reg, "Echo", {"from": "client"}) == ("Echo", {"from": "client"})  # echo still answers

    kind, body = await call(reg, "PluginInstall", install_body(built, "kv-counter"))
    assert kind == "PluginChangeResult", body
    kind, body = await call(reg, "PluginUpgrade", install_body(built, "kv-counter", version="0.2.0", handles=greedy))
    assert kind == "Error" and body["code"] == ErrorCode.PLUGIN_HANDLES_OVERLAP, body
    # An upgrade of the same plugin keeps its own request types.
    kind, body = await call(reg, "PluginUpgrade", install_body(built, "echo", version="0.2.0"))
    assert kind == "PluginChangeResult" and body["status"]["version"] == "0.2.0", body
    assert await call(reg, "Echo", {"n": 2}) == ("Echo", {"n": 2})
    kind, body = await call(reg, "PluginCheck", {})
    assert body["is_valid"], body


# [plugins] key, its raised value, the manifest limit it caps, a value above the default cap
CAPS = [
    ("max_memory_mib", 64, "memory_bytes", 32 << 20),
    ("max_timeout_ms", 20_000, "timeout_ms", 10_000),
    ("max_input_bytes", 8 << 20, "max_input_bytes", 6 << 20),
    ("max_output_bytes", 8 << 20, "max_output_bytes", 6 << 20),
    ("max_instances", 16, "concurrency", 12),
]


@pytest.mark.parametrize("key, raised, field, asked", CAPS)
async def test_caps_come_from_node_config(tmp_path, nodes, built, key, raised, field, asked):
    greedy = install_body(built, "echo", limits=PluginLimits(**{field: asked}))
    reg, _ = await nodes.start(node_config(tmp_path / "default", ""))
    kind, body = await call(reg, "PluginInstall", greedy)
    assert kind == "Error" and body["code"] == ErrorCode.PLUGIN_LIMIT_EXCEEDED, body
    assert body["details"]["field"] == f"limits.{field}" and body["details"]["cap"] < asked
    await nodes.stop(reg)

    reg, plugins = await nodes.start(node_config(tmp_path / "raised", f"{key} = {raised}\n"))
    kind, body = await call(reg, "PluginInstall", greedy)
    assert kind == "PluginChangeResult" and body["status"]["state"] == "ready", body
    assert getattr(plugins.get("echo").runtime.limits, field) == asked  # the running instance has it
    assert await call(reg, "Ping", {}) == ("Pong", {})


async def test_a_lowered_cap_refuses_what_the_default_allows(tmp_path, nodes, built):
    reg, plugins = await nodes.start(node_config(tmp_path, "max_timeout_ms = 500\n"))
    kind, body = await call(reg, "PluginInstall", install_body(built, "echo", limits=PluginLimits(timeout_ms=1000)))
    assert kind == "Error" and body["code"] == ErrorCode.PLUGIN_LIMIT_EXCEEDED and body["details"]["cap"] == 500
    kind, body = await call(reg, "PluginInstall", install_body(built, "echo"))
    assert kind == "PluginChangeResult", body
    assert plugins.get("echo").runtime.limits.timeout_ms == 500  # the default, capped


@pytest.mark.parametrize(
    "table", ["max_memory_mib = 0\n", "max_memory_mib = 5000\n", 'max_timeout_ms = "5s"\n', "max_instances = true\n"]
)
async def test_invalid_caps_refuse_to_start(tmp_path, nodes, table):
    with pytest.raises(AspenError) as err:
        await nodes.start(node_config(tmp_path, table))
    assert err.value.code == ErrorCode.INVALID_ARGUMENT and table.split()[0] in err.value.message


def test_a_real_node_takes_its_caps_from_aspen_toml(tmp_path, built):
    """The whole path: ``aspen node start --config`` with raised caps, and the
    ``aspen plugin install`` command against it."""
    cfg = tmp_path / "aspen.toml"
    cfg.write_text(
        '[node]\nnode_id = "solo"\n[plugins]\nallow_unsigned = true\ndrain_seconds = 2\nmax_memory_mib = 64\n'
    )
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    echo, counter = built / "echo", built / "kv-counter"
    with NodeProcess(tmp_path / "data", "--config", str(cfg)) as node:

        def install(plugin_dir, *flags: str, ok: bool = True):
            args = ("plugin", "install", str(plugin_dir / "plugin.wasm"), "--manifest", str(plugin_dir / "plugin.json"))
            return run(*args, *flags, "--url", node.url, env=env, ok=ok)

        refused = install(echo, "--memory-limit", str(128 << 20), ok=False)
        assert refused.returncode == 1 and "PLUGIN_LIMIT_EXCEEDED" in refused.stderr + refused.stdout
        install(echo, "--memory-limit", str(32 << 20))  # above the default cap of 16 MiB, within this node's
        with SyncClient(node.url) as client:
            assert client.call("Echo", {"x": 1}) == {"x": 1}
        greedy = install(counter, "--handles", "KvCounterIncrement,KvCounterGet,KvCounterReset,Echo", ok=False)
        assert greedy.returncode == 1 and "PLUGIN_HANDLES_OVERLAP" in greedy.stderr + greedy.stdout
        install(counter)
        with SyncClient(node.url) as client:
            assert client.call("Echo", {"x": 2}) == {"x": 2}
