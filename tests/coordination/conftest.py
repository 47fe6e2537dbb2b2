"""Coordination fixtures: every store backend in-process (``any_kv``), and
a real node on each backend (``node``) for the multi-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from aspen.storage.protocol import KeyValueStore
from tests.node.node_process import NodeProcess
from tests.storage.conftest import KV_BACKENDS, KV_FACTORIES, etcd_cluster  # noqa: F401


@pytest.fixture(params=KV_BACKENDS)
async def any_kv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    store = await KV_FACTORIES[request.param](request, tmp_path)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture(scope="module", params=KV_BACKENDS)
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """A node on SQLite, then one on the 3-member etcd cluster."""
    extra: tuple[str, ...] = ()
    if request.param == "etcd":
        extra = ("--etcd", ",".join(request.getfixturevalue("etcd_cluster").endpoints))
    with NodeProcess(tmp_path_factory.mktemp(f"coord-{request.param}") / "data", *extra) as proc:
        proc.etcd = request.getfixturevalue("etcd_cluster") if request.param == "etcd" else None  # members to kill
        yield proc
