"""A worker process for the chaos test: a pool running ``chaos`` no-op jobs
on a shared SQLite file, appending each completion the store accepted to a
file (one line per accepted completion, written with O_APPEND)."""

from __future__ import annotations

import asyncio
import os
import random
import sys

from aspen.jobs.pool import WorkerPool
from aspen.jobs.store import JobStore
from aspen.storage.blobs import LocalBlobStore
from aspen.storage.sqlite import SqliteKeyValueStore

CONCURRENCY = 4


class Noop:
    """Long enough (0.1-0.6 s) that the SIGKILLs hit running jobs."""

    job_types = frozenset({"chaos"})
    concurrency = CONCURRENCY

    async def execute(self, job, ctx):
        await asyncio.sleep(random.uniform(0.1, 0.6))
        return {"pid": os.getpid()}


class RecordingStore(JobStore):
    def __init__(self, kv, blobs, record_fd: int) -> None:
        super().__init__(kv, blobs)
        self.record_fd = record_fd

    async def complete(self, job_id, token, result=None, *, log_blob=None):
        job = await super().complete(job_id, token, result, log_blob=log_blob)
        os.write(self.record_fd, f"{job_id} {token} {os.getpid()}\n".encode())
        return job


async def main(db: str, blob_dir: str, record: str) -> None:
    kv = await SqliteKeyValueStore.open(db, lease_check_interval=0.2)
    blobs = await LocalBlobStore.open(blob_dir)
    fd = os.open(record, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = RecordingStore(kv, blobs, fd)
    pool = WorkerPool(store, [Noop()], lease_ttl=2, poll_interval=0.5, maintenance_interval=0.5)
    await pool.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
