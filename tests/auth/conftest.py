"""One real node for the auth tests (unsigned plugins allowed so the echo
example can be installed), its admin client, and a way to mint tokens."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from aspen.client import SyncClient
from aspen.plugins.build import REPO
from tests.node.node_process import NodeProcess


@pytest.fixture(scope="package")
def node(tmp_path_factory) -> Iterator[NodeProcess]:
    with NodeProcess(tmp_path_factory.mktemp("auth") / "data", "--allow-unsigned-plugins") as proc:
        yield proc


@pytest.fixture(scope="package")
def admin(node) -> Iterator[SyncClient]:
    with SyncClient(node.url) as client:
        yield client


@pytest.fixture(scope="package")
def echo(admin) -> dict:
    """The echo example plugin, installed once for the package."""
    wasm = (REPO / "plugins" / "echo" / "plugin.wasm").read_bytes()
    manifest = json.loads((REPO / "plugins" / "echo" / "plugin.json").read_text())
    return admin.call("PluginInstall", {"manifest": manifest, "wasm": wasm})


@pytest.fixture
def mint(admin):
    """``mint(("kv:read", "app/"), …, ttl=…, subject=…)`` → a token made by the admin."""

    def make(*rights: tuple[str, str], ttl: int = 3600, subject: str | None = None, audience: str | None = None) -> str:
        body = {
            "rights": [{"operation": op, "resource": res} for op, res in rights],
            "ttl_seconds": ttl,
            "subject": subject,
            "audience": audience,
        }
        return admin.call("TokenCreate", body)["token"]

    return make


def rpc(
    node: NodeProcess, type_: str, body: dict | None = None, token: str | None = None, **headers: str
) -> httpx.Response:
    """One raw ``POST /v1/rpc``; ``token`` goes in the Authorization header."""
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{node.url}/v1/rpc", json={"type": type_, "body": body or {}}, headers=headers, timeout=30)


def code_of(resp: httpx.Response) -> str | None:
    wire = resp.json()
    return wire["body"]["code"] if wire["type"] == "Error" else None
