"""Concurrent adds, several stores on one directory, and a writer killed mid-blob."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

from blake3 import blake3

from aspen.storage.blobs import STALE_TEMP_SECONDS, LocalBlobStore
from tests.blobs.conftest import pseudo_random

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


async def test_concurrent_adds_of_same_blob(store, backend):
    data = pseudo_random(3 << 20)
    results = await asyncio.gather(*(store.add_bytes(data) for _ in range(8)))
    assert {r.hash for r in results} == {blake3(data).hexdigest()}
    assert sum(r.was_new for r in results) == 1
    assert await backend.leftovers(store) == []
    assert len((await store.list()).blobs) == 1
    assert await store.get_bytes(results[0].hash) == data


async def test_two_stores_one_directory(tmp_path):
    a = await LocalBlobStore.open(tmp_path / "shared")
    b = await LocalBlobStore.open(tmp_path / "shared")
    try:
        data = pseudo_random(1 << 20)
        ra, rb = await asyncio.gather(a.add_bytes(data), b.add_bytes(data))
        assert ra.hash == rb.hash and ra.was_new != rb.was_new
        await a.protect(ra.hash, "t")
        assert (await b.list()).blobs[0].tags == ["t"]
        assert await b.get_bytes(ra.hash) == data
    finally:
        await a.close()
        await b.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from blake3 import blake3
    from aspen.storage.blobs import LocalBlobStore

    async def main(root, seed, count):
        store = await LocalBlobStore.open(root)
        for i in range(count):
            # shared blobs (same in both processes) interleaved with own ones
            await store.add_bytes(blake3(b"shared %d" % i).digest(length=70_000))
            await store.add_bytes(blake3(b"%s %d" % (seed.encode(), i)).digest(length=70_000))
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_two_processes_one_directory(tmp_path):
    root = str(tmp_path / "shared")
    procs = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, root, seed, "20", cwd=ROOT)
        for seed in ("p1", "p2")
    ]
    assert [await p.wait() for p in procs] == [0, 0]
    store = await LocalBlobStore.open(root)
    try:
        page = await store.list()
        assert len(page.blobs) == 60  # 20 shared + 20 + 20 own
        for info in page.blobs:
            assert await store.verify(info.hash)
        assert os.listdir(os.path.join(root, "tmp")) == []
    finally:
        await store.close()


SLOW_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from blake3 import blake3
    from aspen.storage.blobs import LocalBlobStore

    async def main(root):
        store = await LocalBlobStore.open(root)
        async def chunks():
            for i in range(10_000):
                yield blake3(b"k").digest(length=1 << 16, seek=i << 16)
                if i == 20:
                    print("streaming", flush=True)
                await asyncio.sleep(0.01)
        await store.add_stream(chunks())

    asyncio.run(main(sys.argv[1]))
    """
)


async def test_writer_killed_mid_blob_leaves_no_visible_blob(tmp_path):
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(root)], cwd=ROOT, stdout=subprocess.PIPE)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line == b"streaming\n"
        await asyncio.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        await asyncio.to_thread(proc.wait)
        proc.stdout.close()
    partial = list((root / "tmp").iterdir())
    assert len(partial) == 1 and partial[0].stat().st_size > 0
    store = await LocalBlobStore.open(root)
    try:
        assert (await store.list()).blobs == []
        assert not any((root / "objects").iterdir())
        old = time.time() - STALE_TEMP_SECONDS - 1
        os.utime(partial[0], (old, old))
        await store.gc()
        assert list((root / "tmp").iterdir()) == []
    finally:
        await store.close()
