"""Clusters as real node processes on loopback, each with its own data dir
and store, configured through their own aspen.toml."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from aspen.client import SyncClient
from tests.node.node_process import NodeProcess, free_port

ECHO = Path(__file__).resolve().parents[2] / "plugins" / "echo"


def cluster(root: Path, name: str, federation: str = "", port: int | None = None) -> NodeProcess:
    """One single-node cluster, not started yet (``with`` or ``ExitStack.enter_context``
    starts it); ``federation`` is extra TOML after ``[federation]``."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / f"{name}.toml"
    config.write_text(f'[federation]\nname = "{name}"\n{federation}\n')
    return NodeProcess(root / name, "--config", str(config), "--allow-unsigned-plugins", port=port or free_port())


def install_echo(client: SyncClient, app_id: str | None = "echo", version: str = "0.1.0") -> None:
    manifest = json.loads((ECHO / "plugin.json").read_text())
    manifest["version"] = version
    if app_id is not None:
        manifest["app_id"] = app_id
    client.call("PluginInstall", {"manifest": manifest, "wasm": (ECHO / "plugin.wasm").read_bytes()})


@pytest.fixture
def clusters(tmp_path) -> Iterator[ExitStack]:
    """An ExitStack the test enters its clusters into; all stop at the end."""
    with ExitStack() as stack:
        yield stack
