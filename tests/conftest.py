"""Fixtures shared by the suites that need *a* store rather than every
backend (the storage conformance suite overrides ``kv`` with its own,
parametrised over all backends). Every async test runs on the node's own
event loop."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from aspen.node.event_loop import new_event_loop
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore


def pytest_configure(config):
    """Clients and CLI subprocesses find each test node's admin token through
    a credentials file of this run's own (see aspen.client.credentials);
    NodeProcess registers every node it starts there."""
    for var in ("ASPEN_TOKEN", "ASPEN_TOKEN_FILE", "ASPEN_URL"):
        os.environ.pop(var, None)
    os.environ["ASPEN_CREDENTIALS"] = os.path.join(tempfile.mkdtemp(prefix="aspen-creds-"), "credentials.json")


def pytest_asyncio_loop_factories(config, item):
    return {"aspen": new_event_loop}


@pytest.fixture
def home():
    """A data dir the plugin sandbox's uid 65534 can reach (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="aspen-home-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def kv(tmp_path):
    """A fresh embedded KV store (fsync off: tests do not test durability through it)."""
    store = await SqliteKeyValueStore.open(tmp_path / "kv.sqlite3", durable=False)
    yield store
    await store.close()


@pytest.fixture
async def blobs(tmp_path):
    store = await LocalBlobStore.open(tmp_path / "blobs")
    yield store
    await store.close()
