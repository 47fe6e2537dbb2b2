"""Coordination primitives on etcd against etcd's own recipes, on the same
cluster, through the same client, in the same run.

    python benchmarks/bench_coord.py [--seconds 3] [--rounds 2] [--members 3] [--workers 16]

- lock, uncontended: one task, acquire + release in a loop.
  aspen: ``Locks.acquire`` (lease grant, one transaction: put our key and
  read the contenders; wait on the process's shared line of the lock until
  our key is the oldest, with no read) and
  ``Locks.release_holding`` (revoke the lease, which deletes our key and so
  hands the lock on; ``release`` by token, as the RPC does, reads the
  contenders first and revokes) — three round trips.
  etcd: the recipe ``etcdctl lock`` runs (clientv3/concurrency: a session
  lease, a transaction that puts ``{name}/{lease}`` if absent and reads the
  owner, wait for the older keys' deletes, delete on unlock, revoke the
  session) — four round trips.
- lock, 16-way contended: ``--workers`` tasks on one lock; completed
  acquire+release cycles per second in total. Once through one store client
  (the waiters of one node share its line), once spread over ``--clients``
  clients, each with its own line, as waiters on several nodes are: every
  line then receives every change of the lock's keys.
- counter: ``--workers`` tasks incrementing one counter (``Counters.add``)
  against a raw read + compare-and-swap loop on a plain key.
Backends alternate; each keeps its best round. Not part of the test run.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from aspen.cluster.etcd_launcher import EtcdCluster
from aspen.coordination import Counters, Locks
from aspen.storage.etcd import EtcdKeyValueStore
from aspen.storage.records import Compare, PutOp, RangeOp


class EtcdRecipeLock:
    """clientv3/concurrency.Mutex on the store protocol, as ``etcdctl lock`` uses it."""

    def __init__(self, kv, name: str, ttl: int = 10) -> None:
        self.kv, self.prefix, self.ttl = kv, f"recipe/{name}/", ttl

    async def lock(self) -> tuple[int, str]:
        lease = (await self.kv.lease_grant(self.ttl)).id  # NewSession
        key = f"{self.prefix}{lease:x}"
        r = await self.kv.transaction(
            [Compare(key, "create_revision", "==", 0)],
            [PutOp(key, b"", lease=lease), RangeOp(self.prefix)],
            [RangeOp(self.prefix)],
        )
        revision = r.revision
        while True:
            kvs = r.results[-1].kvs
            mine = next(kv for kv in kvs if kv.key == key)
            older = [kv for kv in kvs if kv.create_revision < mine.create_revision]
            if not older:
                return lease, key
            # waitDeletes: wait for the newest older key (the predecessor) only, then look again
            predecessor = max(older, key=lambda kv: kv.create_revision).key
            events = self.kv.watch(predecessor, start_revision=revision + 1)
            try:
                async for e in events:
                    if e.type == "delete" and e.kv.key == predecessor:
                        revision = e.revision
                        break
            finally:
                await events.aclose()
            r = await self.kv.transaction([], [RangeOp(self.prefix)])

    async def unlock(self, lease: int, key: str) -> None:
        await self.kv.delete(key)  # Mutex.Unlock
        await self.kv.lease_revoke(lease)  # Session.Close


async def cycles(seconds: float, workers: int, one) -> float:
    """Cycles per second of ``workers`` tasks; ``one(i)`` is worker i's cycle."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        while time.monotonic() < stop:
            await one(i)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(workers)))
    return done / (time.monotonic() - started)


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = EtcdCluster(Path(tmp), size=args.members)
        cluster.start(timeout=60)
        try:
            kv = await EtcdKeyValueStore.open(cluster.endpoints)
            locks, counters = Locks(kv), Counters(kv)
            recipe = EtcdRecipeLock(kv, "bench")
            # --clients: as many store clients (each with its own Locks: its own line), workers spread over them
            clients = [await EtcdKeyValueStore.open(cluster.endpoints) for _ in range(args.clients)]
            spread_locks = [Locks(c) for c in clients]
            spread_recipes = [EtcdRecipeLock(c, "spread") for c in clients]

            async def aspen_lock(i: int) -> None:
                await locks.release_holding(await locks.acquire("bench", ttl=10, timeout=60))

            async def recipe_lock(i: int) -> None:
                await recipe.unlock(*await recipe.lock())

            async def aspen_spread(i: int) -> None:
                mine = spread_locks[i % args.clients]
                await mine.release_holding(await mine.acquire("spread", ttl=10, timeout=60))

            async def recipe_spread(i: int) -> None:
                mine = spread_recipes[i % args.clients]
                await mine.unlock(*await mine.lock())

            async def aspen_incr(i: int) -> None:
                await counters.add("bench", 1)

            async def raw_incr(i: int) -> None:
                current = await kv.get("raw/counter")
                while True:
                    new = str(int(current.value) + 1 if current else 1).encode()
                    r = await kv.compare_and_swap("raw/counter", current.value if current else None, new)
                    if r.succeeded:
                        return
                    current = r.actual

            cases = [
                ("lock acquire+release, uncontended", 1, aspen_lock, recipe_lock, "etcd recipe"),
                (
                    f"lock acquire+release, {args.workers}-way contended",
                    args.workers,
                    aspen_lock,
                    recipe_lock,
                    "etcd recipe",
                ),
                (f"counter increment, {args.workers} writers", args.workers, aspen_incr, raw_incr, "raw CAS loop"),
            ]
            if args.clients > 1:
                label = f"lock acquire+release, {args.workers}-way contended over {args.clients} clients"
                cases.insert(2, (label, args.workers, aspen_spread, recipe_spread, "etcd recipe"))
            print(f"etcd {args.members} member(s), {args.seconds}s per round, best of {args.rounds}\n")
            print("| case | aspen ops/s | baseline | baseline ops/s | ratio |\n|---|---:|---|---:|---:|")
            for label, n, ours, theirs, base in cases:
                best_ours = best_theirs = 0.0
                for i in range(args.rounds):  # alternate who goes first
                    if i % 2:
                        best_ours = max(best_ours, await cycles(args.seconds, n, ours))
                    best_theirs = max(best_theirs, await cycles(args.seconds, n, theirs))
                    if not i % 2:
                        best_ours = max(best_ours, await cycles(args.seconds, n, ours))
                print(f"| {label} | {best_ours:.0f} | {base} | {best_theirs:.0f} | {best_ours / best_theirs:.2f}x |")
            for c in (kv, *clients):
                await c.close()
        finally:
            cluster.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--members", type=int, default=3)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--clients", type=int, default=4, help="store clients for the spread contended case (1: skip it)")
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
