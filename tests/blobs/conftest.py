"""Fixtures for the blob store conformance suite: a fresh store per test, for every
backend in BLOB_BACKENDS (``local``: a directory; ``s3``: a real SeaweedFS started once per
session, a fresh key prefix and a SQLite KV per test), and ``backend``, the few
backend-specific moves the suite needs (damage an object, list what an add left behind)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from blake3 import blake3

from aspen.storage import s3_meta
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.s3_blobs import S3BlobStore
from aspen.storage.sqlite import SqliteKeyValueStore
from tests.seaweed_fixtures import s3_settings, seaweedfs  # noqa: F401

BLOB_BACKENDS = ["local", "s3"]


def pseudo_random(n: int, seed: bytes = b"aspen", offset: int = 0) -> bytes:
    """Deterministic bytes (BLAKE3 XOF output) that never repeat a segment."""
    return blake3(seed).digest(length=n, seek=offset)


class LocalBackend:
    name = "local"

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.opened: list[LocalBlobStore] = []

    async def open(self, **kwargs) -> LocalBlobStore:
        s = await LocalBlobStore.open(self.tmp_path / f"blobs{len(self.opened)}", **kwargs)
        self.opened.append(s)
        return s

    async def leftovers(self, store: LocalBlobStore) -> list[str]:
        return sorted(os.listdir(store.root / "tmp"))

    def _path(self, store: LocalBlobStore, h: str) -> Path:
        return store.root / "objects" / h[:2] / h[2:]

    async def flip(self, store: LocalBlobStore, h: str, at: int) -> None:
        """Bit rot: change one byte and restore mtime, so size and mtime look untouched."""
        path = self._path(store, h)
        st = path.stat()
        data = bytearray(path.read_bytes())
        data[at] ^= 0x01
        path.write_bytes(data)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

    async def truncate(self, store: LocalBlobStore, h: str, size: int) -> None:
        os.truncate(self._path(store, h), size)

    async def write_table(self, store: LocalBlobStore, h: str, table: bytes) -> None:
        with sqlite3.connect(store.root / "meta.sqlite3") as db:
            db.execute("UPDATE blobs SET segments = ? WHERE hash = ?", (table, h))

    async def read_table(self, store: LocalBlobStore, h: str) -> bytes:
        with sqlite3.connect(store.root / "meta.sqlite3") as db:
            return db.execute("SELECT segments FROM blobs WHERE hash = ?", (h,)).fetchone()[0]

    async def stored_objects(self, store: LocalBlobStore) -> list[str]:
        return sorted(str(p) for p in (store.root / "objects").glob("*/*"))

    async def close(self) -> None:
        for s in self.opened:
            await s.close()


class S3Backend:
    name = "s3"

    def __init__(self, server, tmp_path: Path) -> None:
        self.server = server
        self.tmp_path = tmp_path
        self.opened: list[tuple[S3BlobStore, SqliteKeyValueStore]] = []

    async def open(self, **kwargs) -> S3BlobStore:
        kv = await SqliteKeyValueStore.open(self.tmp_path / f"kv{len(self.opened)}.db")
        try:
            s = await S3BlobStore.open(s3_settings(self.server, cache_bytes=kwargs.pop("cache_bytes", 0)), kv, **kwargs)
        except BaseException:
            await kv.close()
            raise
        self.opened.append((s, kv))
        return s

    async def leftovers(self, store: S3BlobStore) -> list[str]:
        """Objects no record references, and unfinished multipart uploads."""
        referenced = set()
        after, more = "", True
        while more:
            records, more = await s3_meta.scan_records(store.kv, after)
            referenced |= {store.objects.key(m.object) for _, m, _ in records}
            after = records[-1][0] if records else after
        objects = [k async for k, _ in store.objects.list_objects("") if k not in referenced]
        uploads = [f"upload:{k}" async for k, _, _ in store.objects.list_uploads("")]
        return sorted(objects + uploads)

    async def _object(self, store: S3BlobStore, h: str) -> tuple[str, bytes]:
        m = (await s3_meta.load(store.kv, h)).meta
        resp = await store.objects._client.get_object(Bucket=store.objects.bucket, Key=store.objects.key(m.object))
        async with resp["Body"] as body:
            return m.object, await body.read()

    async def flip(self, store: S3BlobStore, h: str, at: int) -> None:
        """Overwrite the object in the bucket with one byte changed, behind Aspen's back."""
        name, data = await self._object(store, h)
        data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
        await store.objects.put(name, data)

    async def truncate(self, store: S3BlobStore, h: str, size: int) -> None:
        name, data = await self._object(store, h)
        await store.objects.put(name, data[:size])

    async def write_table(self, store: S3BlobStore, h: str, table: bytes) -> None:
        await store.kv.put(s3_meta.SEG + h, table)

    async def read_table(self, store: S3BlobStore, h: str) -> bytes:
        return await s3_meta.load_table(store.kv, h)

    async def stored_objects(self, store: S3BlobStore) -> list[str]:
        return sorted([k async for k, _ in store.objects.list_objects("objects/")])

    async def close(self) -> None:
        for s, kv in self.opened:
            await s.close()
            await kv.close()


@pytest.fixture(params=BLOB_BACKENDS)
async def backend(request, tmp_path):
    b = (
        LocalBackend(tmp_path)
        if request.param == "local"
        else S3Backend(request.getfixturevalue("seaweedfs"), tmp_path)
    )
    yield b
    await b.close()


@pytest.fixture
async def store(backend):
    return await backend.open()
