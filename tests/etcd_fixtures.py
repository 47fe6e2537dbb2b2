"""Reusable etcd fixtures: a 3-member etcd cluster started by the tests
themselves on loopback (free ports, temporary data dirs), one per test
package that imports it (``package`` scope: it goes when that package's last
test is done, so idle clusters of earlier packages do not pile up until the
session ends); each test gets a wiped store.

Import the fixtures into a conftest to use them::

    from tests.etcd_fixtures import etcd_cluster, etcd_store  # noqa: F401
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aetcd import rpc

from aspen.cluster.etcd_launcher import EtcdCluster, find_etcd
from aspen.storage.etcd import EtcdKeyValueStore


@pytest.fixture(scope="package")
def etcd_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    find_etcd()  # raises a clear error (not a skip) when etcd is missing: run scripts/setup.sh
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=3)
    try:
        cluster.start(timeout=60)
        yield cluster
    finally:
        cluster.stop(timeout=0.5)  # a graceful stop takes ~6 s; nothing of a test cluster outlives it


async def wipe(store: EtcdKeyValueStore) -> None:
    """Delete every key and lease so a test sees an empty store (revisions
    keep counting: etcd's revision never goes back)."""
    for lease in await store.lease_list():
        await store.lease_revoke(lease.id)
    await store.pool.call(
        lambda s, t: s.kv.DeleteRange(rpc.DeleteRangeRequest(key=b"\0", range_end=b"\0"), timeout=t),
        idempotent=True,
    )


async def open_wiped_store(cluster: EtcdCluster) -> EtcdKeyValueStore:
    """The factory the storage conformance suite uses for its etcd backend."""
    if not all(m.running() for m in cluster.members):
        raise RuntimeError("a previous test left an etcd member down")
    store = await EtcdKeyValueStore.open(cluster.endpoints)
    await wipe(store)
    return store


@pytest.fixture
async def etcd_store(etcd_cluster: EtcdCluster) -> AsyncIterator[EtcdKeyValueStore]:
    store = await open_wiped_store(etcd_cluster)
    try:
        yield store
    finally:
        await store.close()
