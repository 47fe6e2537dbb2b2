"""Blob store throughput against the raw floor on the same disk.

Baseline ("raw"): the least any correct store must do — write the bytes to a
file while hashing them with BLAKE3, fsync; read them back while hashing.
Aspen: ``LocalBlobStore.add_stream`` / ``get_stream`` (plus the segment
table of chaining values, rename, directory fsync, SQLite row; reads verified
against the table, the table against the address) and a 4 KiB range read
(verifies one 256 KiB segment).

S3 column (``--backends s3``): a SeaweedFS started here; baseline ("raw
aiobotocore"): the chosen client library putting the same 1 MiB chunks as a
multipart upload of the same part size, getting them back as one streamed
GET, and 4 KiB ranged GETs. Aspen: ``S3BlobStore`` (hashing, segment table
and record in a SQLite KV, verified reads widened to whole segments, cache
off). Each round runs the two sides of an operation back to back, in
alternating order, and prints each round's ratio beside the best of each side:
on a shared machine the per-round median is the steadier figure.

    .venv/bin/python benchmarks/bench_blobs.py [--mib 256] [--rounds 3] [--backends local,s3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from blake3 import blake3

from aspen.cluster.seaweed_launcher import SeaweedFS, access_env
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.s3_blobs import S3BlobStore
from aspen.storage.s3_client import PART_SIZE
from aspen.storage.s3_settings import S3Settings
from aspen.storage.sqlite import SqliteKeyValueStore

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


async def raw_s3_put(client, bucket: str, key: str, mib: int) -> None:
    up = await client.create_multipart_upload(Bucket=bucket, Key=key)
    parts, buf = [], bytearray()
    for i in range(mib):
        buf += chunk_at(i)
        if len(buf) >= PART_SIZE or i == mib - 1:
            n = len(parts) + 1
            r = await client.upload_part(Bucket=bucket, Key=key, UploadId=up["UploadId"], PartNumber=n, Body=bytes(buf))
            parts.append({"ETag": r["ETag"], "PartNumber": n})
            buf = bytearray()
    await client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=up["UploadId"], MultipartUpload={"Parts": parts}
    )


async def raw_s3_get(client, bucket: str, key: str, start: int | None = None, length: int = 0) -> int:
    args = {"Range": f"bytes={start}-{start + length - 1}"} if start is not None else {}
    resp = await client.get_object(Bucket=bucket, Key=key, **args)
    n = 0
    async with resp["Body"] as body:
        while c := await body.read(CHUNK):
            n += len(c)
    return n


async def run_s3(mib: int, rounds: int) -> None:
    env = access_env()
    with tempfile.TemporaryDirectory(dir=os.getcwd()) as tmp, SeaweedFS(Path(tmp) / "weed") as weed:
        settings = S3Settings(
            bucket="bench", endpoint=weed.endpoint, access_key_id=env["AWS_ACCESS_KEY_ID"],
            secret_access_key=env["AWS_SECRET_ACCESS_KEY"], cache_bytes=0,
        )  # fmt: skip
        kv = await SqliteKeyValueStore.open(Path(tmp) / "kv.db")
        store = await S3BlobStore.open(settings, kv)
        client = store.objects._client  # the same client and connection pool for the baseline
        best = {"raw add": 1e9, "aspen add": 1e9, "raw get": 1e9, "aspen get": 1e9}
        ratios: dict[str, list[float]] = {"add": [], "get": []}
        rps = {"raw": 0.0, "aspen": 0.0}
        size = mib * CHUNK

        async def chunks():
            for i in range(mib):
                yield chunk_at(i)

        async def timed(op: str, side: str, r: int) -> float:
            t = time.perf_counter()
            if (op, side) == ("add", "raw"):
                await raw_s3_put(client, "bench", f"raw{r}", mib)
            elif (op, side) == ("get", "raw"):
                assert await raw_s3_get(client, "bench", f"raw{r}") == size
            elif op == "add":
                hashes[r] = (await store.add_stream(chunks())).hash
            else:
                async for _ in store.get_stream(hashes[r]):
                    pass
            took = time.perf_counter() - t
            best[f"{side} {op}"] = min(best[f"{side} {op}"], took)
            return took

        hashes: dict[int, str] = {}
        for r in range(rounds):
            for op in ("add", "get"):  # each round's pair runs back to back, the order alternating
                sides = ("raw", "aspen") if r % 2 == 0 else ("aspen", "raw")
                took = {side: await timed(op, side, r) for side in sides}
                ratios[op].append(took["raw"] / took["aspen"])
            for side in ("raw", "aspen"):
                n, t = 0, time.perf_counter()
                while time.perf_counter() - t < 2.0:
                    off = (n * 7919 * 4096) % (size - 4096)
                    if side == "raw":
                        await raw_s3_get(client, "bench", f"raw{r}", off, 4096)
                    else:
                        await store.get_bytes(hashes[r], offset=off, length=4096)
                    n += 1
                rps[side] = max(rps[side], n / (time.perf_counter() - t))
            await store.delete(hashes[r], force=True)
            await client.delete_object(Bucket="bench", Key=f"raw{r}")
        await store.close()
        await kv.close()
    for op in ("add", "get"):
        raw, aspen = mib / best[f"raw {op}"], mib / best[f"aspen {op}"]
        per_round = sorted(ratios[op])
        print(
            f"s3 {op}: aspen {aspen:8.1f} MiB/s   raw aiobotocore {raw:8.1f} MiB/s   best/best {aspen / raw:.2f}x"
            f"   per round {' '.join(f'{x:.2f}' for x in per_round)} (median {statistics.median(per_round):.2f}x)"
        )
    ratio = rps["aspen"] / rps["raw"]
    print(
        f"s3 4 KiB range reads: aspen {rps['aspen']:.0f}/s (one verified segment)   raw {rps['raw']:.0f}/s   ratio {ratio:.2f}x"
    )
    print(f"load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def main(mib: int, rounds: int, backends: list[str]) -> None:
    _CHUNKS[:] = [blake3(b"bench").digest(length=CHUNK, seek=i * CHUNK) for i in range(mib)]
    if "local" in backends:
        await run(mib, rounds)
    if "s3" in backends:
        await run_s3(mib, rounds)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--backends", default="local,s3")
    a = p.parse_args()
    asyncio.run(main(a.mib, a.rounds, a.backends.split(",")))
