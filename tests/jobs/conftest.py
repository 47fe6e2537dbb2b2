"""Job-system fixtures: real stores (SQLite file + blob directory; the
queue tests also run on the etcd cluster), real worker pools."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from aspen.jobs.model import Job, JobState
from aspen.jobs.store import JobStore
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.protocol import KeyValueStore
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.storage.conftest import KV_BACKENDS, KV_FACTORIES, etcd_cluster  # noqa: F401


@pytest.fixture(params=KV_BACKENDS)
async def any_kv(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    """Every KV backend: for the queue semantics."""
    store = await KV_FACTORIES[request.param](request, tmp_path)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def kv(tmp_path: Path) -> AsyncIterator[KeyValueStore]:
    """The embedded backend: for executor and pool behaviour."""
    store = await SqliteKeyValueStore.open(tmp_path / "kv.db", lease_check_interval=0.2)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def blobs(tmp_path: Path) -> AsyncIterator[LocalBlobStore]:
    store = await LocalBlobStore.open(tmp_path / "blobs")
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def store(kv: KeyValueStore, blobs: LocalBlobStore) -> JobStore:
    return JobStore(kv, blobs)


WaitFor = Callable[..., Awaitable[Job]]


@pytest.fixture
def wait_for_state(store: JobStore) -> WaitFor:
    return make_waiter(store)


def make_waiter(store: JobStore) -> WaitFor:
    async def wait(job_id: str, *states: JobState, timeout: float = 20.0) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = await store.get(job_id)
            if job.state in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job.state}, expected {states} within {timeout}s")
            await asyncio.sleep(0.05)

    return wait
