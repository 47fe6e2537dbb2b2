"""The service registry app on a real node: installed as a plugin, driven by
`aspen service …` (register, discover with filters, list, get, heartbeat,
set-health, watch, deregister), an instance whose heartbeats stop gone
within its TTL, and callers without ``plugin:call`` refused."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from aspen.client import SyncClient
from aspen.errors import AspenError
from aspen.plugins.build import REPO, build_all
from tests.node.node_process import ASPEN, NodeProcess

PLUGIN = REPO / "plugins" / "service-registry"


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    build_all(REPO)
    with NodeProcess(tmp_path_factory.mktemp("service") / "data", "--allow-unsigned-plugins") as proc:
        with SyncClient(proc.url) as client:
            manifest = json.loads((PLUGIN / "plugin.json").read_text())
            client.call("PluginInstall", {"manifest": manifest, "wasm": (PLUGIN / "plugin.wasm").read_bytes()})
            deadline = time.monotonic() + 20
            while True:  # installed: serving once the reconciler has loaded it
                try:
                    client.call("ServiceList", {})
                    break
                except AspenError:
                    assert time.monotonic() < deadline, "the plugin never served"
                    time.sleep(0.1)
        yield proc


def aspen(node: NodeProcess, *args: str, token: str | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"ASPEN_TOKEN": token} if token else {})}
    out = subprocess.run(
        [ASPEN, *args, "--url", node.url], capture_output=True, text=True, env=env, check=False, timeout=60
    )
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def instances(node: NodeProcess, service: str, *filters: str) -> list[str]:
    out = aspen(node, "service", "discover", service, *filters, "--json")
    return [i["instance"] for i in json.loads(out.stdout)["instances"]]


def test_cli_round_trip(node):
    # TTLs well past the test's length: on a loaded machine its ~25 CLI runs can take more than the default 30 s
    register = ["service", "register", "shop", "a", "--address", "10.0.0.1:80", "--version", "2.1.0", "--ttl", "600"]
    token = int(aspen(node, *register, "--tag", "eu", "--tag", "prod", "--meta", "zone=b", "--weight", "5").stdout)
    aspen(
        node,
        "service",
        "register",
        "shop",
        "b",
        "--address",
        "10.0.0.2:80",
        "--version",
        "1.9.0",
        "--tag",
        "eu",
        "--ttl",
        "600",
    )
    aspen(node, "service", "register", "mail", "m", "--address", "smtp:25", "--health", "unknown", "--ttl", "600")
    assert instances(node, "shop") == ["a", "b"]
    assert instances(node, "shop", "--tag", "prod") == ["a"]
    assert instances(node, "shop", "--tag", "eu", "--tag", "prod") == ["a"]
    assert instances(node, "shop", "--version-prefix", "1.") == ["b"]
    assert instances(node, "shop", "--limit", "1") == ["a"]
    assert instances(node, "mail", "--health", "healthy") == []
    assert instances(node, "mail", "--health", "unknown") == ["m"]
    assert aspen(node, "service", "list").stdout.split() == ["mail", "shop"]
    got = json.loads(aspen(node, "service", "get", "shop", "a", "--json").stdout)
    assert (got["metadata"], got["weight"], got["fencing_token"]) == ({"zone": "b"}, 5, token)
    line = aspen(node, "service", "discover", "shop", "--tag", "prod").stdout
    assert line.split()[:4] == ["a", "10.0.0.1:80", "healthy", "2.1.0"]
    assert "alive for 600s" in aspen(node, "service", "heartbeat", "shop", "a", str(token)).stdout
    aspen(node, "service", "set-health", "shop", "a", str(token), "unhealthy")
    assert instances(node, "shop", "--health", "unhealthy") == ["a"]
    stale = aspen(node, "service", "heartbeat", "shop", "a", str(token - 1), ok=False)
    assert "SERVICE_STALE_TOKEN" in stale.stderr
    bad = aspen(node, "service", "register", "shop", "c", "--address", "x", "--ttl", "0", ok=False)
    assert "SERVICE_TTL_OUT_OF_RANGE" in bad.stderr and "Traceback" not in bad.stderr
    aspen(node, "service", "deregister", "shop", "a", str(token))
    assert instances(node, "shop") == ["b"]
    assert "SERVICE_NOT_FOUND" in aspen(node, "service", "get", "shop", "a", ok=False).stderr


def test_watch_follows_the_instance_set(node):
    watch = subprocess.Popen(
        [ASPEN, "service", "watch", "queue", "--count", "3", "--url", node.url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        n = 0
        while watch.poll() is None:  # the watch starts at some point: instances come and go until it has seen 3
            assert time.monotonic() < deadline, "the watch saw nothing"
            token = aspen(node, "service", "register", "queue", f"q{n}", "--address", "h:1").stdout.strip()
            aspen(node, "service", "deregister", "queue", f"q{n}", token)
            n += 1
        out, err = watch.communicate(timeout=30)
    finally:
        watch.kill()
    lines = out.splitlines()
    assert watch.returncode == 0 and len(lines) == 3, (out, err)
    assert all(re.fullmatch(r"\+ q\d+ h:1 healthy|- q\d+", line) for line in lines), lines
    assert any(line.startswith("+") for line in lines) and any(line.startswith("-") for line in lines)


def test_an_instance_whose_heartbeats_stop_disappears_within_its_ttl(node):
    with SyncClient(node.url) as client:
        kept = client.call("ServiceRegister", {"service": "ttl", "instance": "kept", "address": "k", "ttl": 2})
        client.call("ServiceRegister", {"service": "ttl", "instance": "dropped", "address": "d", "ttl": 2})
        start = time.monotonic()
        gone_after = None
        while time.monotonic() - start < 4.5:
            client.call(
                "ServiceHeartbeat", {"service": "ttl", "instance": "kept", "fencing_token": kept["fencing_token"]}
            )
            names = [i["instance"] for i in client.call("ServiceDiscover", {"service": "ttl"})["instances"]]
            assert "kept" in names
            if "dropped" not in names and gone_after is None:
                gone_after = time.monotonic() - start
            time.sleep(0.25)
        assert gone_after is not None and gone_after <= 3.5, gone_after  # TTL 2 s plus the expiry sweep


def test_callers_without_plugin_call_are_refused(node):
    with SyncClient(node.url) as admin:

        def mint(*rights: tuple[str, str]) -> str:
            body = {"rights": [{"operation": o, "resource": r} for o, r in rights], "ttl_seconds": 600}
            return admin.call("TokenCreate", body)["token"]

        reader = mint(("kv:read", "__service:"))
        other = mint(("plugin:call", "echo"))
        caller = mint(("plugin:call", "service-registry"))
    body = {"service": "auth", "instance": "x", "address": "a"}
    for token in (reader, other):
        r = httpx.post(
            f"{node.url}/v1/rpc", json={"type": "ServiceRegister", "body": body},
            headers={"authorization": f"Bearer {token}"}, timeout=30,
        )  # fmt: skip
        assert r.json()["body"]["code"] == "UNAUTHORIZED", r.text
    r = httpx.post(f"{node.url}/v1/rpc", json={"type": "ServiceList", "body": {}}, timeout=30)
    assert r.json()["body"]["code"] == "UNAUTHENTICATED"
    assert "UNAUTHORIZED" in aspen(node, "service", "list", token=reader, ok=False).stderr
    assert "UNAUTHORIZED" in aspen(node, "service", "discover", "auth", token=other, ok=False).stderr
    assert aspen(node, "service", "register", "auth", "x", "--address", "a", token=caller).stdout.strip().isdigit()
    assert instances(node, "auth") == ["x"]


def test_a_deeply_nested_body_is_refused_before_the_plugin(node):
    deep = "[" * 5000 + "]" * 5000
    raw = '{"type": "ServiceRegister", "body": {"service": "x", "instance": "y", "address": "z", "tags": ' + deep + "}}"
    token = (node.data_dir / "admin.token").read_text().strip()
    r = httpx.post(
        f"{node.url}/v1/rpc", content=raw,
        headers={"content-type": "application/json", "authorization": f"Bearer {token}"}, timeout=30,
    )  # fmt: skip
    assert r.json()["body"]["code"] in ("BAD_REQUEST", "VALIDATION_ERROR"), r.text
    assert instances(node, "x") == []
