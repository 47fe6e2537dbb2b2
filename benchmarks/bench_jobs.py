"""No-op jobs per second end to end (submit → succeeded): Aspen's job queue
on the embedded backend against RQ on a local redis-server.

    .venv/bin/python benchmarks/bench_jobs.py [--jobs 2000] [--rounds 2] [--dir /tmp]

Both sides: one worker process started and ready before the clock starts;
the bench process then submits N no-op jobs in batches and stops the clock
when every one of them is recorded as finished.

- aspen: a ``WorkerPool`` process (default concurrency 4 for the job type)
  sharing the SQLite file (durable: fsync per commit, the default) with the
  submitting process; submits are 64 concurrent ``JobStore.submit`` calls.
- rq: ``rq worker`` with its default ``Worker`` class (a forked work horse
  per job) against redis-server on a free loopback port (default config, no
  AOF); submits are ``Queue.enqueue_many`` batches of 64.

Then a ``shell`` job running ``true``, end to end the same way, inside the
job sandbox (bubblewrap as an unprivileged uid, rlimits: the node's default)
and with it opted out (``shell_sandbox = "none"``: the same process and
rlimits, no bubblewrap); the difference is the sandbox's cost per job.

    .venv/bin/python benchmarks/bench_jobs.py --shell-jobs 200   # 0 skips it

Then (``--vm-jobs N``, on its own) a ``vm`` job running ``true`` in a QEMU
microvm next to a sandboxed ``shell`` job in the same worker process: median
and p99 latency one job at a time, jobs/minute with N submitted at once (each
worker at its concurrency cap, ``[jobs.vm] max_concurrent`` = 2), and which
acceleration the VMs ran under.

    .venv/bin/python benchmarks/bench_jobs.py --vm-jobs 10

Needs the ``bench`` extra (``pip install rq redis``) and Debian's redis-server
(and bubblewrap for the shell rows).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 64


def noop() -> None:
    """The RQ job (imported by the worker as ``bench_jobs.noop``)."""
    return


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- aspen --------------------------------------------------------------------


class NoopWorker:
    job_types = frozenset({"noop"})
    concurrency = 4

    async def execute(self, job, ctx):
        return None


async def aspen_worker(db: str, blob_dir: str, kind: str = "noop") -> None:
    """The worker process: a pool on the shared SQLite file."""
    from aspen.jobs.executors.shell import ShellWorker
    from aspen.jobs.pool import WorkerPool
    from aspen.jobs.sandbox import Sandbox
    from aspen.jobs.store import JobStore
    from aspen.storage.blobs import LocalBlobStore
    from aspen.storage.sqlite import SqliteKeyValueStore

    kv = await SqliteKeyValueStore.open(db)
    store = JobStore(kv, await LocalBlobStore.open(blob_dir))
    if kind == "vm":  # next to a sandboxed shell worker, each at its own concurrency
        from aspen.jobs.executors.vm import VmConfig, VmWorker

        workers = [VmWorker(VmConfig()), ShellWorker(sandbox=Sandbox("required"))]
    else:
        workers = [NoopWorker() if kind == "noop" else ShellWorker(sandbox=Sandbox(kind))]
    pool = WorkerPool(store, workers, poll_interval=0.5)
    await pool.start()
    await asyncio.Event().wait()


async def aspen_round(work: Path, jobs: int, kind: str = "noop") -> float:
    from aspen.jobs.model import JobSpec, JobState
    from aspen.jobs.store import JobStore
    from aspen.storage.sqlite import SqliteKeyValueStore

    db, blob_dir = work / "kv.db", work / "blobs"
    kv = await SqliteKeyValueStore.open(db)
    store = JobStore(kv)
    worker = subprocess.Popen([sys.executable, __file__, "--aspen-worker", str(db), str(blob_dir), kind])
    try:
        while not await store.workers():  # registered: ready to claim
            await asyncio.sleep(0.05)
        spec = JobSpec(type="noop") if kind == "noop" else JobSpec(type="shell", payload={"command": ["true"]})
        t0 = time.perf_counter()
        for start in range(0, jobs, BATCH):
            await asyncio.gather(*(store.submit(spec) for _ in range(min(BATCH, jobs - start))))
        while await store.count(JobState.SUCCEEDED) < jobs:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        worker.kill()
        worker.wait()
        await kv.close()
    return jobs / elapsed


async def latency_round(work: Path, job_type: str, sequential: int, parallel: int) -> dict:
    """``true`` as a ``vm`` or sandboxed ``shell`` job: latency (submit →
    finished) of ``sequential`` jobs one at a time, then jobs/minute of
    ``parallel`` jobs submitted at once (the worker runs its concurrency cap)."""
    import statistics

    from aspen.jobs.model import JobSpec, JobState
    from aspen.jobs.store import JobStore
    from aspen.storage.sqlite import SqliteKeyValueStore

    db, blob_dir = work / "kv.db", work / "blobs"
    kv = await SqliteKeyValueStore.open(db)
    store = JobStore(kv)
    worker = subprocess.Popen([sys.executable, __file__, "--aspen-worker", str(db), str(blob_dir), "vm"])
    spec = JobSpec(type=job_type, payload={"command": ["true"]}, timeout_ms=300_000)
    ended = (JobState.SUCCEEDED, JobState.FAILED, JobState.DEAD)

    async def finished(job_id: str):
        while (job := await store.get(job_id)).state not in ended:
            await asyncio.sleep(0.02)
        if job.state != JobState.SUCCEEDED:
            raise SystemExit(f"{job_type} job failed: {job.error}")
        return job

    try:
        while not await store.workers():
            await asyncio.sleep(0.05)
        latencies, result = [], None
        for _ in range(sequential):
            t0 = time.perf_counter()
            job = await finished((await store.submit(spec)).id)
            latencies.append(time.perf_counter() - t0)
            result = job.result
        t0 = time.perf_counter()
        jobs = await asyncio.gather(*(store.submit(spec) for _ in range(parallel)))
        for job in jobs:
            await finished(job.id)
        per_minute = parallel / (time.perf_counter() - t0) * 60
        cap = (await store.workers())[0].concurrency[job_type]
    finally:
        worker.kill()
        worker.wait()
        await kv.close()
    latencies.sort()
    return {
        "median": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "per_minute": per_minute,
        "cap": cap,
        "accel": (result or {}).get("accel", "-"),
    }


def vm_main(args: argparse.Namespace) -> None:
    rows = {}
    for job_type, n in (("shell", args.vm_jobs * 4), ("vm", args.vm_jobs)):
        with tempfile.TemporaryDirectory(dir=args.dir, prefix=f"bench-jobs-{job_type}-") as tmp:
            rows[job_type] = asyncio.run(latency_round(Path(tmp), job_type, n, n))
    print(
        f"\n`true` end to end (submit → succeeded); latency of jobs one at a time, jobs/min with {args.vm_jobs}+ at once:"
    )
    print(f"  {'job':<16} {'median s':>9} {'p99 s':>8} {'jobs/min':>9} {'cap':>4}  accel")
    for job_type, label in (("shell", "shell (sandbox)"), ("vm", "vm (microvm)")):
        r = rows[job_type]
        print(f"  {label:<16} {r['median']:9.2f} {r['p99']:8.2f} {r['per_minute']:9.1f} {r['cap']:>4}  {r['accel']}")


# --- rq -----------------------------------------------------------------------


def rq_round(work: Path, jobs: int, worker_class: str | None = None) -> float:
    from redis import Redis
    from rq import Queue

    port = free_port()
    redis_proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(work), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    worker = None
    try:
        conn = Redis(host="127.0.0.1", port=port)
        for _ in range(200):
            try:
                conn.ping()
                break
            except Exception:
                time.sleep(0.05)
        queue = Queue("bench", connection=conn)
        worker = subprocess.Popen(
            [str(Path(sys.executable).with_name("rq")), "worker", "--url", f"redis://127.0.0.1:{port}", "bench"]
            + (["--worker-class", worker_class] if worker_class else []),
            cwd=str(Path(__file__).parent),
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        from rq import Worker

        while not Worker.all(connection=conn):
            time.sleep(0.05)
        from bench_jobs import (
            noop as importable_noop,  # the worker resolves "bench_jobs.noop"
        )

        t0 = time.perf_counter()
        for start in range(0, jobs, BATCH):
            n = min(BATCH, jobs - start)
            queue.enqueue_many([Queue.prepare_data(importable_noop) for _ in range(n)])
        while queue.finished_job_registry.count < jobs:
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
    finally:
        if worker is not None:
            worker.kill()
            worker.wait()
        redis_proc.kill()
        redis_proc.wait()
    return jobs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--shell-jobs", type=int, default=200)
    parser.add_argument("--vm-jobs", type=int, default=0, help="only the vm vs shell latency rows, N vm jobs")
    parser.add_argument("--aspen-worker", nargs=3, metavar=("DB", "BLOBS", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.aspen_worker:
        asyncio.run(aspen_worker(*args.aspen_worker))
        return
    if args.vm_jobs:
        vm_main(args)
        return
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed (apt-get install redis-server)")
    runs = {
        "aspen": lambda tmp: asyncio.run(aspen_round(tmp, args.jobs)),
        "rq": lambda tmp: rq_round(tmp, args.jobs),
        # Not the baseline: shows how much of RQ's time is its fork per job.
        "rq-simple": lambda tmp: rq_round(tmp, args.jobs, "rq.worker.SimpleWorker"),
    }
    if args.shell_jobs:
        runs["shell-sandbox"] = lambda tmp: asyncio.run(aspen_round(tmp, args.shell_jobs, "required"))
        runs["shell-none"] = lambda tmp: asyncio.run(aspen_round(tmp, args.shell_jobs, "none"))
    results: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(args.rounds):
        for name, run in runs.items():
            with tempfile.TemporaryDirectory(dir=args.dir, prefix=f"bench-jobs-{name}-") as tmp:
                rate = run(Path(tmp))
            results[name].append(rate)
            print(f"round {r + 1} {name:>9}: {rate:8.0f} jobs/s", flush=True)
    best = {name: max(rates) for name, rates in results.items()}
    print(f"\nno-op jobs/s, submit → succeeded, {args.jobs} jobs, best of {args.rounds}:")
    print(f"  aspen (sqlite, 1 worker process)      {best['aspen']:8.0f}")
    print(f"  rq (redis, default forking worker)    {best['rq']:8.0f}   <- baseline")
    print(f"  rq (redis, SimpleWorker, no fork)     {best['rq-simple']:8.0f}   (reference only)")
    print(f"  ratio aspen/rq                        {best['aspen'] / best['rq']:8.2f}x")
    print(f"  ratio aspen/rq-simple                 {best['aspen'] / best['rq-simple']:8.2f}x")
    if args.shell_jobs:
        print(f"\nshell `true` jobs/s, submit → succeeded, {args.shell_jobs} jobs, concurrency 4, per round:")
        for name in ("shell-sandbox", "shell-none"):
            print(f"  {name:<14} " + "  ".join(f"{r:6.1f}" for r in results[name]) + f"   best {best[name]:6.1f}")
        pairs = list(zip(results["shell-sandbox"], results["shell-none"]))
        for label, per in (("pool throughput", 1000), ("a worker slot  ", 4000)):
            costs = "  ".join(f"{per / a - per / b:5.2f}" for a, b in pairs)
            print(f"  sandbox cost, ms per job of {label}: {costs}")


if __name__ == "__main__":
    main()
