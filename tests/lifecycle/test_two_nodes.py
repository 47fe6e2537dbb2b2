"""Two real node processes sharing one SQLite file (and blob directory),
driven through the ``aspen plugin`` CLI: a change made through one node is
served by the other within seconds, with nobody calling reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from tests.node.node_process import NodeProcess

ASPEN = str(Path(sys.executable).with_name("aspen"))


def run(*args: str, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([ASPEN, *args], capture_output=True, text=True, env=env, timeout=120)
    if ok:
        assert proc.returncode == 0, f"aspen {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def version_on(client: SyncClient) -> str | None:
    try:
        return client.call("VersionEcho", {"seq": 1})["version"]
    except AspenError:
        return None


def wait_for_version(client: SyncClient, version: str | None, timeout: float = 15.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if version_on(client) == version:
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{client.urls} did not serve {version} within {timeout}s (serves {version_on(client)})")


@pytest.fixture
def cluster(tmp_path):
    data = tmp_path / "data"
    nodes = []
    for name in ("a", "b"):
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(f'[node]\nnode_id = "{name}"\n[plugins]\ndrain_seconds = 5\n')
        nodes.append(NodeProcess(data, "--config", str(cfg)))
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            try:
                n.terminate()
            finally:
                n.kill()


def write_plugin(dir: Path, version: str, wasm: bytes) -> tuple[Path, Path]:
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "plugin.wasm").write_bytes(wasm)
    manifest = {"name": "vers", "version": version, "handles": ["VersionEcho"], "priority": 950, "author": "tests"}
    (dir / "plugin.json").write_text(json.dumps(manifest))
    return dir / "plugin.wasm", dir / "plugin.json"


def test_install_through_one_node_is_served_by_the_other(cluster, tmp_path, modules):
    a, b = cluster
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    pub = run("plugin", "keygen", env=env).stdout.strip().splitlines()[-1]
    run("plugin", "trust", "add", pub, "--name", "tests", "--url", a.url, env=env)
    w1, j1 = write_plugin(tmp_path / "v1", "1.0.0", modules["1.0.0"])
    w2, j2 = write_plugin(tmp_path / "v2", "2.0.0", modules["2.0.0"])
    for wasm, manifest in ((w1, j1), (w2, j2)):
        run("plugin", "sign", str(wasm), "--manifest", str(manifest), env=env)
        run("plugin", "verify", str(wasm), "--manifest", str(manifest), "--author", pub, env=env)

    with SyncClient(a.url) as ca, SyncClient(b.url) as cb:
        out = run("plugin", "install", str(w1), "--manifest", str(j1), "--url", a.url, "--json", env=env).stdout
        assert json.loads(out)["status"]["state"] == "ready"
        assert version_on(ca) == "1.0.0"
        assert wait_for_version(cb, "1.0.0") < 10

        run("plugin", "upgrade", str(w2), "--manifest", str(j2), "--url", b.url, env=env)
        assert version_on(cb) == "2.0.0"
        assert wait_for_version(ca, "2.0.0") < 10

        info = json.loads(run("plugin", "info", "vers", "--url", a.url, "--json", env=env).stdout)
        deadline = time.monotonic() + 10
        while sorted((s["node_id"], s["version"]) for s in info["nodes"]) != [("a", "2.0.0"), ("b", "2.0.0")]:
            assert time.monotonic() < deadline, info["nodes"]
            time.sleep(0.2)
            info = json.loads(run("plugin", "info", "vers", "--url", a.url, "--json", env=env).stdout)
        assert info["record"]["history"][0]["version"] == "1.0.0"

        listed = json.loads(run("plugin", "list", "--url", b.url, "--json", env=env).stdout)
        assert listed["count"] == 1 and listed["plugins"][0]["status"]["state"] == "ready"
        assert listed["plugins"][0]["status"]["metrics"]["calls"] >= 1

        run("plugin", "rollback", "vers", "--url", a.url, env=env)
        assert wait_for_version(cb, "1.0.0") < 10
        assert json.loads(run("plugin", "reload", "vers", "--url", b.url, "--json", env=env).stdout)["is_success"]
        assert run("plugin", "check", "--url", a.url, env=env).returncode == 0

        # a tampered module is refused with its own code, and nothing changes
        tampered = tmp_path / "tampered.wasm"
        tampered.write_bytes(modules["2.0.0"][:-1] + b"\x01")
        bad = run("plugin", "upgrade", str(tampered), "--manifest", str(j2), "--url", a.url, env=env, ok=False)
        assert bad.returncode == 1 and "PLUGIN_HASH_MISMATCH" in bad.stderr
        assert version_on(ca) == "1.0.0"

        run("plugin", "remove", "vers", "--url", b.url, env=env)
        assert wait_for_version(ca, None) < 10
        assert version_on(cb) is None


def test_node_started_later_catches_up(tmp_path, modules):
    """A node that was down when the plugin was installed serves it once it starts."""
    data = tmp_path / "data"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    w1, j1 = write_plugin(tmp_path / "v1", "1.0.0", modules["1.0.0"])
    with NodeProcess(data, "--allow-unsigned-plugins") as first:
        run("plugin", "install", str(w1), "--manifest", str(j1), "--url", first.url, env=env)
    with NodeProcess(data, "--allow-unsigned-plugins") as second, SyncClient(second.url) as client:
        assert wait_for_version(client, "1.0.0", timeout=5) < 5
        assert httpx.get(f"{second.url}/healthz").status_code == 200
