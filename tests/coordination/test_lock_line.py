"""The waiters of one process share a lock's line (one watch, a mirror of
the contenders): a hand-off needs no read, a failed watch makes them read
afresh, a waiter whose lease goes is told so. On every store backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from aspen.coordination import Locks
from aspen.errors import AspenError, ErrorCode
from tests.coordination.counting import CountingStore


async def poll(condition, timeout: float = 10.0) -> None:
    give_up = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < give_up, "condition not met in time"
        await asyncio.sleep(0.02)


async def contenders(kv, name: str) -> list:
    return (await kv.scan(Locks.prefix(name))).entries


async def queue_waiters(kv, locks: Locks, name: str, count: int) -> list[asyncio.Task]:
    """``count`` waiters, entered one after another (their order is known)."""
    tasks = []
    for _ in range(count):
        tasks.append(asyncio.create_task(locks.acquire(name, timeout=30)))
        expected = len(tasks) + 1

        async def entered(expected=expected):
            return len(await contenders(kv, name)) == expected

        await poll(entered)
    return tasks


async def test_waiters_share_one_watch_and_a_release_hands_on_with_no_read(any_kv):
    counting = CountingStore(any_kv)
    waiting = Locks(counting)
    held = await Locks(any_kv).acquire("line")
    tasks = await queue_waiters(any_kv, waiting, "line", 3)
    assert counting.watches == 1  # one watch for the three waiters
    before = counting.calls
    await Locks(any_kv).release("line", held.token)
    first = await asyncio.wait_for(tasks[0], 5)
    assert counting.calls == before  # the hand-off read nothing
    assert first.token > held.token and not tasks[1].done() and not tasks[2].done()
    holding, tokens = first, [first.token]
    for task in tasks[1:]:
        await waiting.release_holding(holding)
        holding = await asyncio.wait_for(task, 5)
        tokens.append(holding.token)
    await waiting.release_holding(holding)
    assert tokens == sorted(tokens) and len(set(tokens)) == 3  # first come, first served
    assert await waiting.status("line") is None
    assert counting.watches == 1


async def test_a_failed_shared_watch_makes_the_waiters_read_afresh(any_kv):
    counting = CountingStore(any_kv, fail_watches=1)
    waiting = Locks(counting)
    held = await Locks(any_kv).acquire("flaky")
    waiter = asyncio.create_task(waiting.acquire("flaky", timeout=30))

    async def rewatched():
        return counting.watches == 2

    await poll(rewatched)  # the failed line, then a new one from a fresh read
    assert not waiter.done()
    await Locks(any_kv).release("flaky", held.token)
    got = await asyncio.wait_for(waiter, 5)
    assert got.token > held.token


async def test_a_waiter_whose_lease_goes_is_told_so(any_kv):
    waiting = Locks(any_kv)
    held = await waiting.acquire("gone")
    (waiter,) = await queue_waiters(any_kv, waiting, "gone", 1)
    theirs = next(kv for kv in await contenders(any_kv, "gone") if kv.create_revision != held.token)
    await any_kv.lease_revoke(theirs.lease)
    with pytest.raises(AspenError) as exc:
        await asyncio.wait_for(waiter, 5)
    assert exc.value.code == ErrorCode.LEASE_NOT_FOUND
    assert (await waiting.status("gone")).token == held.token  # the holder keeps it
