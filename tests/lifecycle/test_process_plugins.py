"""Process plugins through the normal plugin path: a real node process, the
``aspen plugin`` CLI, the real job sandbox. Installed signed from its
directory, called through /v1/rpc, upgraded blue/green under load, rolled
back, disabled and removed with no process left; hostile bundles refused
with their codes."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import msgspec
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.plugins.bundle import Bundle, BundleFile
from aspen.plugins.manifest import PluginManifest
from aspen.plugins.rules import parse_manifest
from aspen.plugins.signing import read_key, sign_wasm
from tests.lifecycle.test_two_nodes import run
from tests.node.node_process import NodeProcess
from tests.plugins.process.conftest import EGRESS_HANDLES, PROGRAMS, alive
from tests.plugins.process.test_egress import hello_servers

REPO = Path(__file__).resolve().parents[2]
ECHO = REPO / "plugins" / "echo-process"
NAME = "echo-process"


@pytest.fixture
def node(home):
    cfg = home / "node.toml"
    cfg.write_text('[node]\nnode_id = "solo"\n[plugins]\ndrain_seconds = 5\n')
    with NodeProcess(home / "data", "--config", str(cfg)) as proc:
        yield proc


def plugin_dir(where: Path, version: str, tag: str) -> Path:
    """echo-process at ``version``; from 0.2.0 on its Echo also answers ``v``.
    ``tag`` is an argument of its command, to find its processes."""
    out = where / version
    shutil.copytree(ECHO, out, ignore=shutil.ignore_patterns("__pycache__"))
    doc = json.loads((out / "plugin.json").read_text())
    doc.update(version=version, command=["python3", "plugin.py", tag])
    (out / "plugin.json").write_text(json.dumps(doc))
    if version != "0.1.0":
        source = (out / "plugin.py").read_text()
        (out / "plugin.py").write_text(
            source.replace('reply("Echo", req.body)', f'reply("Echo", {{**req.body, "v": "{version}"}})')
        )
    return out


def echo(client: SyncClient) -> dict:
    return client.call("Echo", {"n": 1})


def test_a_process_plugin_installs_upgrades_rolls_back_and_goes(node, home):
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "COLUMNS": "250"}
    key = home / "signing.key"
    run("plugin", "keygen", "--output", str(key), env=env)

    def aspen(*args: str, ok: bool = True):
        return run("plugin", *args, "--url", node.url, env=env, ok=ok)

    aspen("trust", "add", "--key-file", str(key), "--name", "ci")
    tag = f"--aspen-test={uuid.uuid4().hex}"
    v1, v2 = plugin_dir(home, "0.1.0", tag), plugin_dir(home, "0.2.0", tag)
    bundles = node.data_dir / "plugin-bundles"

    # signed in place (the signature goes into its plugin.json), then installed as it is
    run("plugin", "sign", str(v1), "--key", str(key), env=env)
    assert "OK: signed by" in run("plugin", "verify", str(v1), env=env).stdout
    aspen("install", str(v1))
    with SyncClient(node.url) as client:
        assert echo(client) == {"n": 1}
        client.write_key(f"__plugin:{NAME}:k", b"v")  # its own namespace, read through the one gate
        assert client.call("EchoRead", {"key": "k"}) == {"key": f"__plugin:{NAME}:k", "value": "v"}
        info = aspen("info", NAME).stdout
        assert "this node: ready 0.1.0" in info and "bundle: " in info and "command: python3 plugin.py" in info
        assert len(alive(tag)) >= 1 and len(list(bundles.iterdir())) == 1

        # upgrade under load: every request answered, by one version or the other
        failures, answers, stop = [], [], threading.Event()

        def load() -> None:
            with SyncClient(node.url) as c:
                while not stop.is_set():
                    try:
                        answers.append(echo(c).get("v"))
                    except AspenError as exc:
                        failures.append(exc)

        workers = [threading.Thread(target=load) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            time.sleep(0.3)
            aspen("upgrade", str(v2), "--sign-key", str(key))
            time.sleep(0.3)
        finally:
            stop.set()
            for w in workers:
                w.join()
        assert failures == [] and None in answers and answers[-1] == "0.2.0"
        assert echo(client) == {"n": 1, "v": "0.2.0"}

        aspen("rollback", NAME)
        assert echo(client) == {"n": 1}
        first = list(alive(tag))
        aspen("reload", NAME)  # hot reload: a new process beside the old, then the old one goes
        deadline = time.monotonic() + 15
        while len(list(bundles.iterdir())) != 1 or set(alive(tag)) & set(first):
            assert time.monotonic() < deadline, list(bundles.iterdir())  # the replaced version's files go with it
            time.sleep(0.05)
        assert echo(client) == {"n": 1} and alive(tag)

        aspen("disable", NAME)
        with pytest.raises(AspenError):
            echo(client)
        aspen("remove", NAME)
    deadline = time.monotonic() + 15
    while alive(tag) or list(bundles.iterdir()):
        assert time.monotonic() < deadline, f"left behind: {alive(tag)} {list(bundles.iterdir())}"
        time.sleep(0.05)


def _install(client: SyncClient, home: Path, m: PluginManifest, data: bytes) -> dict:
    blob = home / f"bundle-{uuid.uuid4().hex}"
    blob.write_bytes(data)
    uploaded = client.upload_blob(blob)
    body = {"manifest": msgspec.to_builtins(m), "wasm_hash": uploaded.hash, "wait_seconds": 5}
    return client.call("PluginInstall", body, timeout=30)


def test_hostile_and_unsigned_bundles_are_refused_with_their_codes(node, home):
    key_path = home / "signing.key"
    run("plugin", "keygen", "--output", str(key_path), env={**os.environ, "XDG_CONFIG_HOME": str(home / "c")})
    key = read_key(key_path)
    m = parse_manifest((ECHO / "plugin.json").read_bytes())
    good = Bundle(m.command, tuple(sorted(m.handles)), {"plugin.py": BundleFile((ECHO / "plugin.py").read_bytes())})

    def refused(data: bytes, manifest: PluginManifest, code: str) -> None:
        with SyncClient(node.url) as client, pytest.raises(AspenError) as err:
            _install(client, home, manifest, data)
        assert err.value.code == code, err.value

    def signed(data: bytes, manifest: PluginManifest = m) -> PluginManifest:
        return msgspec.structs.replace(manifest, signature=sign_wasm(key, data))

    for name in ("../x", "/etc/x", "a/../../x", "a//b", "./x"):
        evil = msgspec.msgpack.encode(msgspec.structs.replace(good, files={**good.files, name: BundleFile(b"x")}))
        refused(evil, signed(evil), "PLUGIN_BUNDLE_INVALID")
    not_a_bundle = b"\0asm\1\0\0\0"
    refused(not_a_bundle, signed(not_a_bundle), "PLUGIN_BUNDLE_INVALID")
    data = msgspec.msgpack.encode(good)
    refused(data, m, "PLUGIN_SIGNATURE_MISSING")
    refused(data, signed(data + b"tampered"), "PLUGIN_HASH_MISMATCH")
    other_command = msgspec.structs.replace(m, command=("python3", "-c", "print(1)"))
    refused(data, signed(data, other_command), "PLUGIN_HASH_MISMATCH")  # the bundle pins how it starts

    # a directory holding a link is refused by the CLI before anything is sent
    linked = home / "linked"
    shutil.copytree(ECHO, linked, ignore=shutil.ignore_patterns("__pycache__"))
    (linked / "secret").symlink_to("/etc/passwd")
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "c")}
    out = run("plugin", "install", str(linked), "--url", node.url, env=env, ok=False)
    assert out.returncode == 1 and "PLUGIN_BUNDLE_INVALID" in out.stderr


def test_a_crash_looping_process_plugin_is_failed_with_its_stderr_in_info(node, home):
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "COLUMNS": "250"}
    key = home / "signing.key"
    run("plugin", "keygen", "--output", str(key), env=env)
    run("plugin", "trust", "add", "--key-file", str(key), "--url", node.url, env=env)
    crashy = home / "crashy"
    crashy.mkdir()
    (crashy / "crash.py").write_text('import sys\nprint("crashy: no config file", file=sys.stderr)\nsys.exit(3)\n')
    manifest = {"name": "crashy", "version": "1.0.0", "handles": ["Boom"], "runtime": "process",
                "command": ["python3", "crash.py"]}  # fmt: skip
    (crashy / "plugin.json").write_text(json.dumps(manifest))
    run("plugin", "install", str(crashy), "--sign-key", str(key), "--url", node.url, env=env, ok=False)
    deadline = time.monotonic() + 30
    while True:
        info = run("plugin", "info", "crashy", "--url", node.url, env=env).stdout
        if "last stderr on solo:" in info:
            break
        assert time.monotonic() < deadline, info
        time.sleep(0.2)
    assert "this node: failed" in info and "PLUGIN_LOAD_FAILED" in info and "crashy: no config file" in info
    status = json.loads(run("plugin", "info", "crashy", "--json", "--url", node.url, env=env).stdout)["status"]
    assert status["state"] == "failed" and "crashy: no config file" in status["stderr"]
    assert not list((node.data_dir / "plugin-bundles").iterdir())  # a version that failed leaves no files


def test_allowed_hosts_reach_through_the_installed_plugin_and_nothing_else(node, home):
    """The manifest's allowed_hosts travel in the signed bundle to the node's
    egress proxy: the installed plugin fetches from the allowed server only."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config")}
    key = home / "signing.key"
    run("plugin", "keygen", "--output", str(key), env=env)
    run("plugin", "trust", "add", "--key-file", str(key), "--url", node.url, env=env)
    with hello_servers() as (port, other):
        plugin = home / "egress"
        plugin.mkdir()
        shutil.copy(PROGRAMS / "egress.py", plugin / "egress.py")
        manifest = {"name": "egress", "version": "1.0.0", "handles": list(EGRESS_HANDLES), "runtime": "process",
                    "command": ["python3", "egress.py"], "allowed_hosts": [f"127.0.0.1:{port}"]}  # fmt: skip
        (plugin / "plugin.json").write_text(json.dumps(manifest))
        run("plugin", "install", str(plugin), "--sign-key", str(key), "--url", node.url, env=env)
        with SyncClient(node.url) as client:
            assert client.call("Fetch", {"url": f"http://127.0.0.1:{port}/x"}) == {
                "status": 200,
                "body": f"hello from {port}/x",
            }
            denied = client.call("Fetch", {"url": f"http://127.0.0.1:{other}/"})
            assert denied == {"status": 403, "code": "PLUGIN_EGRESS_DENIED"}
            node_port = int(node.url.rsplit(":", 1)[1])
            assert client.call("Tunnel", {"target": f"127.0.0.1:{node_port}"})["code"] == "PLUGIN_EGRESS_DENIED"
        run("plugin", "remove", "egress", "--url", node.url, env=env)
