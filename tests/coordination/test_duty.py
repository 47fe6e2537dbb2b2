"""A duty runs on one node at a time, moves at once when its leader stops,
and within its TTL when the leader vanishes without resigning."""

from __future__ import annotations

import asyncio
import time

from aspen.coordination.duty import DUTY_SPACE, ClusterDuty
from aspen.coordination.election import Elections


async def _until(cond, timeout: float = 15.0) -> None:
    give_up = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < give_up, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_one_node_works_and_the_duty_moves(any_kv) -> None:
    running: dict[str, int] = {"a": 0, "b": 0}

    def worker(node: str):
        async def work() -> None:
            running[node] += 1
            try:
                await asyncio.Event().wait()
            finally:
                running[node] -= 1

        return work

    a = ClusterDuty(any_kv, "timers", "a", worker("a"), ttl=3)
    b = ClusterDuty(any_kv, "timers", "b", worker("b"), ttl=3)
    a.start()
    await _until(lambda: a.leading)
    b.start()
    await asyncio.sleep(1.5)  # b stands, and must not run while a leads
    assert (running, a.leading, b.leading) == ({"a": 1, "b": 0}, True, False)
    await a.stop()  # resigns: b takes over without waiting for the TTL
    started = time.monotonic()
    await _until(lambda: b.leading and running["b"] == 1, timeout=2.5)
    assert time.monotonic() - started < 2.5
    assert running["a"] == 0
    await b.stop()
    assert running == {"a": 0, "b": 0}


async def test_a_candidacy_lives_under_the_reserved_duty_space(any_kv) -> None:
    duty = ClusterDuty(any_kv, "hooks", "n1", asyncio.Event().wait, ttl=3)
    duty.start()
    try:
        await _until(lambda: duty.leading)
        page = await any_kv.scan(DUTY_SPACE, limit=10)
        assert [kv.key.startswith(DUTY_SPACE + "elect:hooks:c:") for kv in page.entries] == [True]
        assert await Elections(any_kv).leader("hooks") is None  # a client's election of that name is another one
    finally:
        await duty.stop()
    assert (await any_kv.scan(DUTY_SPACE, limit=10)).entries == []


async def test_a_vanished_leader_is_replaced_within_its_ttl(any_kv) -> None:
    dead = await Elections(any_kv, space=DUTY_SPACE).campaign("gc", owner="a", ttl=2)  # never renewed
    b = ClusterDuty(any_kv, "gc", "b", asyncio.Event().wait, ttl=2)
    b.start()
    try:
        await asyncio.sleep(0.5)
        assert not b.leading
        await _until(lambda: b.leading, timeout=8)
        assert b.leader.lease_id != dead.lease_id and b.leader.token > dead.token
    finally:
        await b.stop()


async def test_a_restarted_node_drops_its_previous_candidacy_at_once(any_kv) -> None:
    """A node that crashed left a candidacy with a long TTL; its next process (same
    node id) leads at once, while another node's candidacy is waited for."""
    elections = Elections(any_kv, space=DUTY_SPACE)
    before_crash = await elections.campaign("timers", owner="n1", candidate="n1", ttl=60)  # never renewed
    other = await elections.campaign("hooks", owner="n2", candidate="n2", ttl=60)
    timers = ClusterDuty(any_kv, "timers", "n1", asyncio.Event().wait, ttl=60)
    hooks = ClusterDuty(any_kv, "hooks", "n1", asyncio.Event().wait, ttl=60)
    timers.start()
    hooks.start()
    try:
        await _until(lambda: timers.leading, timeout=5)  # not the 60 s the old lease has left
        assert timers.leader.token > before_crash.token
        assert [kv.lease for kv in await elections.candidates("timers")] == [timers.leader.lease_id]
        assert not hooks.leading  # n2's candidacy is another node's: it stays
        assert (await elections.leader("hooks")).lease_id == other.lease_id
        await elections.resign("hooks", other.lease_id)
        await _until(lambda: hooks.leading, timeout=5)
    finally:
        await timers.stop()
        await hooks.stop()
