"""KV throughput through the KeyValueStore API against raw sqlite3.

    .venv/bin/python benchmarks/bench_kv.py [--seconds 2] [--rounds 3] [--dir /tmp]

Baseline: raw ``sqlite3`` on the same disk with the same durability (WAL,
synchronous=FULL), one transaction per put, the equivalent SELECTs for reads.
Each backend is one function returning the same metric names, so another
backend (etcd) is one more function and one more column.

Metrics (operations per second):
  put_1    one writer, durable puts one after another
  put_32   32 concurrent writers (raw: the better of one connection in a loop
           and 32 threads with a connection each — SQLite serialises them)
  get_1    one reader, sequential point reads
  get_32   32 concurrent readers
  scan_1   1 000-key scans, one after another
  scan_32  32 concurrent 1 000-key scanners
(raw reads with 32: the better of one connection in a loop and 32 threads
with a connection each)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aspen.storage.sqlite import SqliteKeyValueStore

VALUE = b"v" * 100
READ_KEYS = 10_000  # "s{group:02d}/{i:04d}": 10 groups of 1 000 keys
CONCURRENCY = 32


def read_key(i: int) -> str:
    return f"s{i // 1000:02d}/{i % 1000:04d}"


# --- Aspen SQLite backend through the API ----------------------------------------------


async def _for(seconds: float, workers: int, op: Callable[[int, int], Awaitable[object]]) -> float:
    deadline = time.perf_counter() + seconds
    counts = [0] * workers

    async def worker(w: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            await op(w, i)
            i += 1
        counts[w] = i

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(workers)))
    return sum(counts) / (time.perf_counter() - t0)


async def _bench_api(store, seconds: float) -> dict[str, float]:
    """Any KeyValueStore; the store must be empty."""
    for g in range(0, READ_KEYS, 1000):
        await store.batch_write(_puts(range(g, g + 1000)))
    out = {}
    out["put_1"] = await _for(seconds, 1, lambda w, i: store.put(f"p1/{i}", VALUE))
    out["put_32"] = await _for(seconds, CONCURRENCY, lambda w, i: store.put(f"p32/{w}/{i}", VALUE))
    out["get_1"] = await _for(seconds, 1, lambda w, i: store.get(read_key(i * 7919 % READ_KEYS)))
    out["get_32"] = await _for(seconds, CONCURRENCY, lambda w, i: store.get(read_key((w * 131 + i * 7919) % READ_KEYS)))

    async def scan(w: int, i: int) -> None:
        page = await store.scan(f"s{i % 10:02d}/", limit=1000)
        assert len(page.entries) == 1000

    out["scan_1"] = await _for(seconds, 1, scan)
    out["scan_32"] = await _for(seconds, CONCURRENCY, scan)
    return out


def _puts(indices):
    from aspen.storage.records import PutOp

    return [PutOp(read_key(i), VALUE) for i in indices]


def bench_aspen_sqlite(workdir: Path, seconds: float) -> dict[str, float]:
    async def run() -> dict[str, float]:
        store = await SqliteKeyValueStore.open(workdir / "aspen.db", durable=True)
        try:
            return await _bench_api(store, seconds)
        finally:
            await store.close()

    return asyncio.run(run())


# --- raw sqlite3 baseline ------------------------------------------------------------


def _raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


def _raw_loop(seconds: float, op: Callable[[int], object]) -> int:
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline:
        op(i)
        i += 1
    return i


RAW_COLS = "CAST(key AS TEXT), value, version, create_rev, mod_rev, lease"


def _raw_put(conn: sqlite3.Connection, key: str) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, 1, 1, 1, 0)", (key.encode(), VALUE))
    conn.execute("COMMIT")


def bench_raw_sqlite(workdir: Path, seconds: float) -> dict[str, float]:
    path = workdir / "raw.db"
    conn = _raw_connect(path)
    conn.execute(
        "CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL,"
        " create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER NOT NULL) WITHOUT ROWID"
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO kv VALUES (?, ?, 1, 1, 1, 0)", [(read_key(i).encode(), VALUE) for i in range(READ_KEYS)]
    )
    conn.execute("COMMIT")
    out: dict[str, float] = {}

    t0 = time.perf_counter()
    n = _raw_loop(seconds, lambda i: _raw_put(conn, f"p1/{i}"))
    out["put_1"] = n / (time.perf_counter() - t0)

    counts = [0] * CONCURRENCY

    def writer(w: int) -> None:
        c = _raw_connect(path)
        counts[w] = _raw_loop(seconds, lambda i: _raw_put(c, f"p32/{w}/{i}"))
        c.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    threaded = sum(counts) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = _raw_loop(seconds, lambda i: _raw_put(conn, f"p32s/{i}"))
    out["put_32"] = max(threaded, n / (time.perf_counter() - t0))

    def get(i: int) -> None:
        conn.execute(f"SELECT {RAW_COLS} FROM kv WHERE key = ?", (read_key(i * 7919 % READ_KEYS).encode(),)).fetchone()

    t0 = time.perf_counter()
    out["get_1"] = _raw_loop(seconds, get) / (time.perf_counter() - t0)
    out["get_32"] = max(out["get_1"], _raw_reader_threads(path, seconds, "get"))

    def scan(i: int) -> None:
        lo = f"s{i % 10:02d}/".encode()
        hi = lo[:-1] + b"0"  # "/" + 1
        rows = conn.execute(
            f"SELECT {RAW_COLS} FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT 1001", (lo, hi)
        ).fetchall()
        assert len(rows) == 1000

    t0 = time.perf_counter()
    out["scan_1"] = _raw_loop(seconds, scan) / (time.perf_counter() - t0)
    out["scan_32"] = max(out["scan_1"], _raw_reader_threads(path, seconds, "scan"))
    conn.close()
    return out


def _raw_reader_threads(path: Path, seconds: float, what: str) -> float:
    """32 threads, a connection each, doing the same SELECTs as the loop (SQLite
    releases the GIL while it steps, so this may beat one connection)."""
    counts = [0] * CONCURRENCY

    def reader(w: int) -> None:
        c = _raw_connect(path)
        if what == "get":
            sql = f"SELECT {RAW_COLS} FROM kv WHERE key = ?"
            counts[w] = _raw_loop(
                seconds, lambda i: c.execute(sql, (read_key((w * 131 + i * 7919) % READ_KEYS).encode(),)).fetchone()
            )
        else:
            sql = f"SELECT {RAW_COLS} FROM kv WHERE key >= ? AND key < ? ORDER BY key LIMIT 1001"
            bounds = [(f"s{g:02d}/".encode(), f"s{g:02d}0".encode()) for g in range(10)]
            counts[w] = _raw_loop(seconds, lambda i: c.execute(sql, bounds[i % 10]).fetchall())
        c.close()

    threads = [threading.Thread(target=reader, args=(w,)) for w in range(CONCURRENCY)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


# --- etcd: Aspen's EtcdKeyValueStore vs raw aetcd calls on the same cluster -------------
#
# One local 3-member etcd cluster (aspen.cluster.etcd_launcher, fsync on) serves
# both columns; it is wiped before each run. Both talk to the same member.

_ETCD: list = []  # the running cluster, started on first use


def _etcd_cluster():
    from aspen.cluster.etcd_launcher import EtcdCluster

    if not _ETCD:
        _ETCD.append(EtcdCluster(Path(tempfile.mkdtemp(prefix="bench-etcd-")), size=3).start())
    return _ETCD[0]


def _etcd_stop() -> None:
    if _ETCD:
        cluster = _ETCD.pop()
        cluster.stop()
        shutil.rmtree(cluster.base_dir, ignore_errors=True)


async def _etcd_wiped_store():
    from aspen.storage.etcd import EtcdKeyValueStore

    store = await EtcdKeyValueStore.open(_etcd_cluster().endpoints)
    await store.delete_prefix("p")
    await store.delete_prefix("s")
    return store


def bench_aspen_etcd(workdir: Path, seconds: float) -> dict[str, float]:
    async def run() -> dict[str, float]:
        store = await _etcd_wiped_store()
        try:
            return await _bench_api(store, seconds)
        finally:
            await store.close()

    return asyncio.run(run())


def bench_raw_aetcd(workdir: Path, seconds: float) -> dict[str, float]:
    import aetcd

    async def run() -> dict[str, float]:
        store = await _etcd_wiped_store()
        for g in range(0, READ_KEYS, 1000):
            await store.batch_write(_puts(range(g, g + 1000)))
        await store.close()
        host, port = _etcd_cluster().endpoints[0].split(":")
        async with aetcd.Client(host=host, port=int(port)) as client:
            out = {}
            out["put_1"] = await _for(seconds, 1, lambda w, i: client.put(f"p1/{i}".encode(), VALUE))
            out["put_32"] = await _for(seconds, CONCURRENCY, lambda w, i: client.put(f"p32/{w}/{i}".encode(), VALUE))
            out["get_1"] = await _for(seconds, 1, lambda w, i: client.get(read_key(i * 7919 % READ_KEYS).encode()))
            out["get_32"] = await _for(
                seconds, CONCURRENCY, lambda w, i: client.get(read_key((w * 131 + i * 7919) % READ_KEYS).encode())
            )

            async def scan(w: int, i: int) -> None:
                page = await client.get_prefix(f"s{i % 10:02d}/".encode())
                entries = list(page)  # aetcd's own KeyValue records, as a user iterates them
                assert len(entries) == 1000

            out["scan_1"] = await _for(seconds, 1, scan)
            out["scan_32"] = await _for(seconds, CONCURRENCY, scan)
            return out

    return asyncio.run(run())


BACKENDS: dict[str, Callable[[Path, float], dict[str, float]]] = {
    "aspen-sqlite": bench_aspen_sqlite,
    "raw-sqlite3": bench_raw_sqlite,
    "aspen-etcd": bench_aspen_etcd,
    "raw-aetcd": bench_raw_aetcd,
}
BASELINE = "raw-sqlite3"
OWN_BASELINES = {"aspen-etcd": "raw-aetcd"}  # ratio columns against another baseline
METRICS = ["put_1", "put_32", "get_1", "get_32", "scan_1", "scan_32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each measurement")
    parser.add_argument("--rounds", type=int, default=3, help="backends alternate; the best round counts")
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where the databases go (same disk for all)")
    parser.add_argument("--no-etcd", action="store_true", help="skip the etcd columns (they start a local cluster)")
    args = parser.parse_args()
    if args.no_etcd:
        for name in ("aspen-etcd", "raw-aetcd"):
            BACKENDS.pop(name)
        OWN_BASELINES.clear()
    try:
        _run(args)
    finally:
        _etcd_stop()


def _run(args: argparse.Namespace) -> None:

    # The machine is shared: alternate backends and keep each one's best round,
    # so a burst of load elsewhere does not decide a ratio.
    results: dict[str, dict[str, float]] = {}
    for _ in range(args.rounds):
        for name, fn in BACKENDS.items():
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=args.dir))
            try:
                got = fn(workdir, args.seconds)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            best = results.setdefault(name, got)
            for metric, value in got.items():
                best[metric] = max(best[metric], value)

    names = list(results)
    header = f"{'metric (ops/s)':<16}" + "".join(f"{n:>16}" for n in names)
    header += "".join(f"{n + '/' + BASELINE:>28}" for n in names if n != BASELINE and n not in OWN_BASELINES.values())
    header += "".join(f"{n + '/' + b:>28}" for n, b in OWN_BASELINES.items())
    print(header)
    for metric in METRICS:
        row = f"{metric:<16}" + "".join(f"{results[n][metric]:>16,.0f}" for n in names)
        for n in names:
            if n != BASELINE and n not in OWN_BASELINES.values():
                row += f"{results[n][metric] / results[BASELINE][metric]:>27.2f}x"
        for n, b in OWN_BASELINES.items():
            row += f"{results[n][metric] / results[b][metric]:>27.2f}x"
        print(row)
    print(f"(python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} cpus, dir {args.dir})")


if __name__ == "__main__":
    main()
