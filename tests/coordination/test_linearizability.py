"""Several client processes hammer one primitive through a real node while
some are SIGKILLed; the recorded history must be linearizable against the
primitive's sequential model (:mod:`tests.coordination.linearizability`),
on SQLite and on etcd — where one etcd member is SIGKILLed mid-run too, and
a client whose call then ends with an unknown outcome stops as if killed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from aspen.client import SyncClient
from aspen.coordination import requests as m
from tests.coordination.hammer import GAVE_UP
from tests.coordination.linearizability import (
    INF,
    Op,
    check,
    counter_step,
    lock_step,
    queue_step,
    semaphore_step,
)

PROCESSES = 4
KILLS = 2


def hammer(node, kind: str, name: str, tmp_path: Path, rounds: int) -> tuple[list[Op], dict[int, float]]:
    """Run the client processes, SIGKILL ``KILLS`` of them at random moments
    (each replaced by a fresh one) and, on etcd, one etcd member (restarted
    once the clients are done); return the history and who was killed."""
    path = tmp_path / f"{kind}.jsonl"
    rng = random.Random(os.getpid())
    etcd, member = getattr(node, "etcd", None), None
    member_kill_at = time.monotonic() + rng.uniform(0.3, 1.5) if etcd is not None else None

    def spawn(process: int) -> subprocess.Popen:
        args = [
            sys.executable,
            "-m",
            "tests.coordination.hammer",
            node.url,
            kind,
            name,
            str(path),
            str(process),
            str(rounds),
        ]
        return subprocess.Popen(args, stderr=subprocess.PIPE)

    procs = {p: spawn(p) for p in range(1, PROCESSES + 1)}
    killed: dict[int, float] = {}
    replaced: set[int] = set()  # processes that gave up and got a successor
    deadline = time.monotonic() + 120
    kill_at = sorted(time.monotonic() + rng.uniform(0.3, 2.0) for _ in range(KILLS))
    while any(p.poll() is None for p in procs.values()):
        assert time.monotonic() < deadline, "client processes did not finish in time"
        if member_kill_at is not None and time.monotonic() >= member_kill_at:
            member_kill_at, member = None, rng.randrange(len(etcd.members))
            etcd.kill_member(member)
        for n in [n for n, p in procs.items() if p.poll() == GAVE_UP and n not in replaced]:
            replaced.add(n)
            procs[max(procs) + 1] = spawn(max(procs) + 1)
        if kill_at and time.monotonic() >= kill_at[0]:
            kill_at.pop(0)
            alive = [n for n, p in procs.items() if p.poll() is None]
            if alive:
                victim = rng.choice(alive)
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                killed[victim] = time.monotonic()
                procs[max(procs) + 1] = spawn(max(procs) + 1)
        time.sleep(0.02)
    if member is not None:
        etcd.start_member(member)
        etcd.wait_healthy(60)
    history, gave_up = parse(path)
    for n, p in procs.items():
        if n not in killed:
            allowed = (0, GAVE_UP) if member is not None else (0,)
            assert p.returncode in allowed, p.stderr.read().decode()
    return history, {**killed, **gave_up}


def parse(path: Path) -> tuple[list[Op], dict[int, float]]:
    """The operations, and when each process that gave up stopped."""
    invoked: dict[tuple[int, int], dict] = {}
    answered: dict[tuple[int, int], dict] = {}
    gave_up: dict[int, float] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue  # a line cut by the SIGKILL is only ever the last one of its process
        rec = json.loads(line)
        if rec["ev"] == "gave_up":
            gave_up[rec["p"]] = rec["t"]
            continue
        (invoked if rec["ev"] == "invoke" else answered)[(rec["p"], rec["id"])] = rec
    ops = []
    for key, inv in invoked.items():
        ans = answered.get(key)
        ops.append(
            Op(inv["p"], inv["t"], ans["t"] if ans else INF, inv["kind"], inv["arg"], ans["result"] if ans else None)
        )
    return ops, gave_up


def assert_linearizable(history: list[Op], initial, step) -> None:
    verdict = check(history, initial, step)
    assert verdict, f"not linearizable; longest valid prefix: {verdict.stuck[-5:]}"


def test_lock_is_linearizable_with_increasing_fencing_tokens(node, tmp_path):
    history, killed = hammer(node, "lock", f"lin-{uuid.uuid4().hex[:8]}", tmp_path, rounds=8)
    tokens = [
        o.result for o in sorted(history, key=lambda o: o.end) if o.kind == "acquire" and isinstance(o.result, int)
    ]
    assert len(tokens) >= PROCESSES * 4
    assert_linearizable(history, (None, None, 0), lock_step(killed))


def test_counter_loses_no_increment(node, tmp_path):
    name = f"lin-{uuid.uuid4().hex[:8]}"
    history, _ = hammer(node, "counter", name, tmp_path, rounds=12)
    with SyncClient(node.url) as client:
        start = time.monotonic()
        value = client.coord(m.CounterGet(name=name)).value
        history.append(Op(0, start, time.monotonic(), "get", None, value))
    done = sum(1 for o in history if o.kind == "add" and not o.unknown)
    unknown = sum(1 for o in history if o.kind == "add" and o.unknown)
    assert done <= value <= done + unknown
    assert_linearizable(history, 0, counter_step)


def test_semaphore_never_over_admits(node, tmp_path):
    history, killed = hammer(node, "semaphore", f"lin-{uuid.uuid4().hex[:8]}", tmp_path, rounds=10)
    assert any(o.kind == "acquire" and o.result is None for o in history), "never contended: the test proves nothing"
    assert_linearizable(history, (), semaphore_step(2, killed))


def test_queue_delivers_once_within_visibility_and_loses_nothing(node, tmp_path):
    name = f"lin-{uuid.uuid4().hex[:8]}"
    history, killed = hammer(node, "queue", name, tmp_path, rounds=8)
    with SyncClient(node.url) as client:  # drain, after the killed consumers' visibility ran out
        while True:
            start = time.monotonic()
            got = client.coord(
                m.QueueDequeueWait(name=name, consumer="0", visibility_timeout_ms=60_000, timeout_seconds=4)
            )
            history.append(Op(0, start, time.monotonic(), "dequeue", None, got.items[0].id if got.items else None))
            if not got.items:
                break
            start = time.monotonic()
            client.coord(m.QueueAck(name=name, receipt=got.items[0].receipt))
            history.append(Op(0, start, time.monotonic(), "ack", got.items[0].id, True))
        status = client.coord(m.QueueStatus(name=name)).status
        dead = client.coord(m.QueueGetDLQ(name=name)).items
    enqueued = {o.result for o in history if o.kind == "enqueue" and not o.unknown}
    acked = [o.arg for o in history if o.kind == "ack" and not o.unknown]
    maybe_acked = {o.arg for o in history if o.kind == "ack" and o.unknown}  # the ack's answer died with its process
    assert enqueued <= set(acked) | maybe_acked, f"lost items: {sorted(enqueued - set(acked) - maybe_acked)}; {status}"
    assert len(acked) == len(set(acked)), "an item was acked twice"
    assert status.visible == status.in_flight == 0 and status.enqueued == status.acked and not dead
    assert_linearizable(history, ((), ()), queue_step(killed, history))
