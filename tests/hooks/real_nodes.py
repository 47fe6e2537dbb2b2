"""Helpers for the hook and timer tests on real node processes: the shipped
WASM plugins built, a node config, a CLI install, a poll (the data dir the
plugin sandbox can reach is the ``home`` fixture of tests/conftest.py)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aspen.plugins.build import REPO, build_all
from tests.lifecycle.test_two_nodes import run
from tests.node.node_process import NodeProcess

PLUGINS = REPO / "plugins"


@pytest.fixture(scope="session")
def wasm_built() -> Path:
    """The shipped WASM plugins, built from source (a fresh module is kept)."""
    build_all(REPO)
    return PLUGINS


def config(home: Path, node_id: str, extra: str = "") -> str:
    cfg = home / f"{node_id}.toml"
    cfg.write_text(f'[node]\nnode_id = "{node_id}"\n[plugins]\ndrain_seconds = 2\n{extra}')
    return str(cfg)


def install(node: NodeProcess, path: Path, home: Path, *extra: str) -> None:
    env = {**os.environ, "XDG_CONFIG_HOME": str(home / "config")}
    run("plugin", "install", str(path), *extra, "--url", node.url, env=env)


def until(condition, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not in time: {what}"
        time.sleep(0.1)
