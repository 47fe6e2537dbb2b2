"""SeaweedFS with two volume servers and replication 001 (a second copy on another server of
the rack): SIGKILL one volume server while blobs are being added; every blob whose add was
acknowledged stays readable and verified. An add that fails does so with a clear code."""

from __future__ import annotations

import asyncio

import pytest

from aspen.cluster.seaweed_launcher import SeaweedFS
from aspen.errors import AspenError, ErrorCode
from aspen.storage.s3_blobs import S3BlobStore
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.blobs.conftest import pseudo_random
from tests.seaweed_fixtures import s3_settings


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    server = SeaweedFS(tmp_path_factory.mktemp("seaweed-001"), volumes=2, replication="001")
    try:
        server.start(timeout=90)
        yield server
    finally:
        server.stop()


async def test_volume_server_killed_during_uploads(replicated, tmp_path):
    kv = await SqliteKeyValueStore.open(tmp_path / "kv.db")
    store = await S3BlobStore.open(s3_settings(replicated, cache_bytes=0, read_timeout=10), kv)
    acknowledged: dict[str, bytes] = {}
    failed: list[str] = []

    async def writer(w: int) -> None:
        for i in range(12):
            data = pseudo_random(300_000 if i % 4 else 6 << 20, seed=b"w%d-%d" % (w, i))
            try:
                acknowledged[(await store.add_bytes(data)).hash] = data
            except AspenError as exc:
                failed.append(exc.code)
                return  # the store lost a replica: writes fail (each after the timeout) until it heals
            if w == 0 and i == 3:
                replicated.kill_volume(1)

    try:
        await asyncio.gather(*(writer(w) for w in range(3)))
        assert set(failed) <= {ErrorCode.STORAGE_UNAVAILABLE}, failed
        assert len(acknowledged) >= 4
        for h, data in acknowledged.items():
            assert await store.get_bytes(h) == data
            assert await store.verify(h)
    finally:
        await store.close()
        await kv.close()
