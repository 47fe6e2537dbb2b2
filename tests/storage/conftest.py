"""The ``kv`` fixture: one fresh, empty KeyValueStore per test, for every
backend in KV_BACKENDS. A backend joins the conformance suite by adding its
name to KV_BACKENDS and a factory to KV_FACTORIES."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aspen.storage.protocol import KeyValueStore
from aspen.storage.sqlite import SqliteKeyValueStore

# factory(request, tmp_path) -> a fresh empty store; ``request`` lets a
# factory pull in session fixtures (e.g. a running etcd cluster).
KvFactory = Callable[[pytest.FixtureRequest, Path], Awaitable[KeyValueStore]]


async def open_sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> KeyValueStore:
    return await SqliteKeyValueStore.open(tmp_path / "kv.db", lease_check_interval=0.2)


KV_BACKENDS = ["sqlite"]
KV_FACTORIES: dict[str, KvFactory] = {"sqlite": open_sqlite}

# etcd: a real 3-member cluster started once per session (tests/etcd_fixtures.py);
# each test gets the store wiped (no keys, no leases).
from tests.etcd_fixtures import etcd_cluster, open_wiped_store  # noqa: F401


async def open_etcd(request: pytest.FixtureRequest, tmp_path: Path) -> KeyValueStore:
    return await open_wiped_store(request.getfixturevalue("etcd_cluster"))


KV_BACKENDS.append("etcd")
KV_FACTORIES["etcd"] = open_etcd


@pytest.fixture(params=KV_BACKENDS)
async def kv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    store = await KV_FACTORIES[request.param](request, tmp_path)
    try:
        yield store
    finally:
        await store.close()
