"""Blob store throughput against the raw floor on the same disk.

Baseline ("raw"): the least any correct store must do — write the bytes to a
file while hashing them with BLAKE3, fsync; read them back while hashing.
Aspen: ``LocalBlobStore.add_stream`` / ``get_stream`` (plus per-segment
hashes, rename, directory fsync, SQLite row; verified reads) and a 4 KiB
range read (verifies one 256 KiB segment).

    .venv/bin/python benchmarks/bench_blobs.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from blake3 import blake3

from aspen.storage.blobs import LocalBlobStore

CHUNK = 1 << 20
_CHUNKS: list[bytes] = []  # generated once, so neither side pays for making data


def chunk_at(i: int) -> bytes:
    return _CHUNKS[i]


def raw_write(path: Path, n: int) -> str:
    h = blake3()
    with open(path, "wb") as f:
        for i in range(n):
            c = chunk_at(i)
            f.write(c)
            h.update(c)
        f.flush()
        os.fsync(f.fileno())
    return h.hexdigest()


def raw_read(path: Path) -> str:
    h = blake3()
    with open(path, "rb") as f:
        while c := f.read(CHUNK):
            h.update(c)
    return h.hexdigest()


async def run(mib: int, rounds: int) -> None:
    _CHUNKS[:] = [blake3(b"bench").digest(length=CHUNK, seek=i * CHUNK) for i in range(mib)]
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp:
        root = Path(tmp)
        store = await LocalBlobStore.open(root / "store")
        best = {"raw add": 1e9, "aspen add": 1e9, "raw get": 1e9, "aspen get": 1e9}
        ranges_per_s = 0.0
        for r in range(rounds):
            os.sync()  # ext4 fsync also flushes other files' dirty pages: start both sides clean
            t = time.perf_counter()
            expected = await asyncio.to_thread(raw_write, root / f"raw{r}", mib)
            best["raw add"] = min(best["raw add"], time.perf_counter() - t)
            t = time.perf_counter()
            assert await asyncio.to_thread(raw_read, root / f"raw{r}") == expected  # page cache, as for aspen
            best["raw get"] = min(best["raw get"], time.perf_counter() - t)

            async def chunks():
                for i in range(mib):
                    yield chunk_at(i)

            await store.delete(expected, force=True)
            (root / f"raw{r}").unlink()
            os.sync()
            t = time.perf_counter()
            res = await store.add_stream(chunks())
            best["aspen add"] = min(best["aspen add"], time.perf_counter() - t)
            assert res.hash == expected
            t = time.perf_counter()
            async for _ in store.get_stream(res.hash):
                pass
            best["aspen get"] = min(best["aspen get"], time.perf_counter() - t)

            n, t = 0, time.perf_counter()
            while time.perf_counter() - t < 1.0:
                await store.get_bytes(res.hash, offset=(n * 7919 * 4096) % (mib * CHUNK - 4096), length=4096)
                n += 1
            ranges_per_s = max(ranges_per_s, n / (time.perf_counter() - t))
        await store.close()
    for op in ("add", "get"):
        raw, aspen = mib / best[f"raw {op}"], mib / best[f"aspen {op}"]
        print(f"{op}: aspen {aspen:8.1f} MiB/s   raw {raw:8.1f} MiB/s   ratio {aspen / raw:.2f}x")
    print(f"4 KiB verified range reads: {ranges_per_s:.0f}/s")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    asyncio.run(run(a.mib, a.rounds))
