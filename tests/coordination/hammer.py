"""One client process of the linearizability tests: runs ``count`` rounds
against one primitive and appends every invocation and answer to a JSON-lines
history (flushed each line, so a SIGKILL loses nothing already recorded).
An answer that leaves the outcome unknown (the node or its store went away
mid-call) ends the process as a crash would: the call stays unanswered in the
history and a ``gave_up`` record says when this process stopped renewing.

    python -m tests.coordination.hammer URL KIND NAME HISTORY PROCESS COUNT
"""

from __future__ import annotations

import json
import random
import sys
import time

from aspen.client import SyncClient
from aspen.coordination import requests as m
from aspen.errors import AspenError, ErrorCode


class Recorder:
    def __init__(self, path: str, process: int) -> None:
        self.out = open(path, "a", buffering=1)  # noqa: SIM115 - kept open until the process ends or dies
        self.process = process
        self.n = 0

    def invoke(self, kind: str, arg: object = None) -> int:
        self.n += 1
        self._write({"id": self.n, "p": self.process, "ev": "invoke", "kind": kind, "arg": arg, "t": time.monotonic()})
        return self.n

    def done(self, op_id: int, result: object) -> None:
        self._write({"id": op_id, "p": self.process, "ev": "ok", "result": result, "t": time.monotonic()})

    def gave_up(self) -> None:
        self._write({"p": self.process, "ev": "gave_up", "t": time.monotonic()})

    def _write(self, record: dict) -> None:
        self.out.write(json.dumps(record) + "\n")


def lock(client: SyncClient, rec: Recorder, name: str) -> None:
    i = rec.invoke("acquire")
    try:
        token = client.coord(m.LockAcquire(name=name, ttl_seconds=3, timeout_seconds=15)).lock.token
    except AspenError as exc:
        if exc.code != ErrorCode.COORD_WAIT_TIMEOUT:
            raise
        rec.done(i, "timeout")
        return
    rec.done(i, token)
    time.sleep(random.uniform(0, 0.02))
    i = rec.invoke("release", token)
    try:
        client.coord(m.LockRelease(name=name, token=token))
        rec.done(i, True)
    except AspenError as exc:
        if exc.code != ErrorCode.LOCK_NOT_HELD:
            raise
        rec.done(i, False)


def counter(client: SyncClient, rec: Recorder, name: str) -> None:
    i = rec.invoke("add", 1)
    rec.done(i, client.coord(m.CounterAdd(name=name, delta=1)).value)


def semaphore(client: SyncClient, rec: Recorder, name: str) -> None:
    i = rec.invoke("acquire")
    r = client.coord(m.SemaphoreTryAcquire(name=name, capacity=2, ttl_seconds=3))
    if not r.acquired:
        rec.done(i, None)
        time.sleep(random.uniform(0, 0.01))
        return
    rec.done(i, r.permit.permit_id)
    time.sleep(random.uniform(0, 0.03))
    i = rec.invoke("release", r.permit.permit_id)
    try:
        client.coord(m.SemaphoreRelease(name=name, permit_id=r.permit.permit_id))
        rec.done(i, True)
    except AspenError as exc:
        if exc.code != ErrorCode.SEMAPHORE_NOT_HELD:
            raise
        rec.done(i, False)


def queue(client: SyncClient, rec: Recorder, name: str) -> None:
    i = rec.invoke("enqueue")
    rec.done(i, client.coord(m.QueueEnqueue(name=name, payload=b"x")).item_id)
    i = rec.invoke("dequeue")
    got = client.coord(m.QueueDequeue(name=name, consumer=str(rec.process), visibility_timeout_ms=3000)).items
    rec.done(i, got[0].id if got else None)
    if got:
        time.sleep(random.uniform(0, 0.02))
        i = rec.invoke("ack", got[0].id)
        client.coord(m.QueueAck(name=name, receipt=got[0].receipt))
        rec.done(i, True)


ROUNDS = {"lock": lock, "counter": counter, "semaphore": semaphore, "queue": queue}
UNKNOWN_OUTCOME = {ErrorCode.UNAVAILABLE, ErrorCode.STORAGE_UNAVAILABLE, ErrorCode.ETCD_UNREACHABLE, ErrorCode.TIMEOUT}
GAVE_UP = 3  # the exit code of a process that stopped on an unknown outcome


def main() -> None:
    url, kind, name, path, process, count = sys.argv[1:7]
    rec = Recorder(path, int(process))
    with SyncClient(url, timeout=30) as client:
        for _ in range(int(count)):
            try:
                ROUNDS[kind](client, rec, name)
            except AspenError as exc:
                if exc.code not in UNKNOWN_OUTCOME:
                    raise
                rec.gave_up()
                print(f"gave up: {exc}", file=sys.stderr)
                sys.exit(GAVE_UP)


if __name__ == "__main__":
    main()
