"""The hook dispatcher on a real store (SQLite and etcd), with a subscriber
kind of the tests' own: order per key, at least once across a restart from
the durable cursor, a slow subscriber that overflows without slowing writers
or others, a failing callback that is skipped, a compacted cursor."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from aspen.hooks.dispatcher import DISPATCH_RETRY, HookDispatcher
from aspen.hooks.subscriptions import SubscriptionStore
from aspen.hooks.topics import HookEvent
from aspen.jobs.model import RetryPolicy
from aspen.storage.records import DeleteOp, PutOp


class Recorder:
    """A subscriber: what it was handed, in order; ``delay`` per call; ``fail`` raises."""

    retry = DISPATCH_RETRY

    def __init__(self, name: str, prefix: str, *, delay: float = 0.0, fail: bool = False) -> None:
        self.name, self.prefix, self.delay, self.fail = name, prefix, delay, fail
        self.start = 0
        self.got: list[tuple[str, int, str]] = []
        self.calls = 0

    def select(self, hook: HookEvent) -> tuple[dict[str, Any], int] | None:
        if not hook.is_kv or not hook.key.startswith(self.prefix):
            return None
        return {"topic": hook.topic, "event": hook.event}, 64

    async def deliver(self, payload: dict[str, Any]) -> None:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("refused")
        event = payload["event"]
        self.got.append((event["key"], event["revision"], payload["topic"]))


class Recorders:
    kind = "test"

    def __init__(self, kv, subs: list[Recorder]) -> None:
        self.store = SubscriptionStore(kv, "__plugins:testhooks:subs:", "__plugins:testhooks:cursor:")
        self.subs = subs
        self.since = 0

    def affects(self, key: str) -> bool:
        return False

    async def load(self) -> dict[str, Recorder]:
        for sub in self.subs:
            sub.start = self.since
        return {s.name: s for s in self.subs}


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


class Running:
    def __init__(self, kv, subs: list[Recorder], **kwargs) -> None:
        self.source = Recorders(kv, subs)
        self.dispatcher = HookDispatcher(kv, [self.source], **kwargs)
        self.task: asyncio.Task | None = None

    async def start(self, since: int) -> Running:
        self.source.since = since
        self.task = asyncio.create_task(self.dispatcher.run())
        await until(lambda: len(self.dispatcher.lanes) == len(self.source.subs))
        await asyncio.sleep(0.1)  # the watch is open
        return self

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_every_event_in_order_per_key(kv):
    since = await kv.current_revision()
    sub = Recorder("a", "k:")
    other = Recorder("b", "other:")
    run = await Running(kv, [sub, other]).start(since)
    committed: dict[str, list[int]] = {}

    async def writer(key: str) -> None:
        for i in range(30):
            rev = await kv.put(key, str(i).encode()) if i % 7 != 6 else await kv.batch_write([DeleteOp(key)])
            committed.setdefault(key, []).append(rev)

    await asyncio.gather(*(writer(f"k:{n}") for n in range(4)), kv.put("elsewhere", b"x"))
    await kv.batch_write([PutOp("k:batch1", b"1"), PutOp("k:batch2", b"2")])  # one revision, two events
    await until(lambda: len(sub.got) >= 122)
    await run.stop()
    for key, revisions in committed.items():
        assert [r for k, r, _ in sub.got if k == key] == revisions  # all, once, in commit order
    assert {k for k, _, _ in sub.got} == {*committed, "k:batch1", "k:batch2"}
    assert ("k:0", committed["k:0"][6], "hooks.kv.delete_committed") in sub.got
    assert other.got == []


async def test_a_restart_resumes_from_the_cursor(kv):
    since = await kv.current_revision()
    sub = Recorder("a", "k:")
    run = await Running(kv, [sub]).start(since)
    revisions = [await kv.put(f"k:{i}", b"v") for i in range(20)]
    await until(lambda: len(sub.got) == 20)
    await run.stop()  # persists the cursor
    revisions += [await kv.put(f"k:{i}", b"w") for i in range(20, 40)]  # committed while nobody delivers
    again = Recorder("a", "k:")
    run = await Running(kv, [again]).start(since)
    await until(lambda: {r for _, r, _ in again.got} >= set(revisions[20:]))
    await run.stop()
    delivered = [r for _, r, _ in sub.got + again.got]
    assert set(delivered) == set(revisions) and len(delivered) <= len(revisions) + 1  # at most the last again
    cursor = await Recorders(kv, []).store.cursor("a")
    assert cursor.revision >= revisions[-1] - 1 and cursor.delivered >= 20


async def test_a_slow_subscriber_drops_without_slowing_writers_or_others(kv):
    since = await kv.current_revision()
    slow, fast = Recorder("slow", "k:", delay=0.2), Recorder("fast", "k:")
    dropped: list[tuple[str, int]] = []
    run = await Running(kv, [slow, fast], queue_events=4, on_drop=lambda name, n: dropped.append((name, n))).start(
        since
    )
    started = time.monotonic()
    for i in range(100):
        await kv.put(f"k:{i}", b"v")
    writing = time.monotonic() - started
    await until(lambda: len(fast.got) == 100)
    lane = run.dispatcher.lane("test", "slow")
    await until(lambda: lane.counts.delivered + lane.counts.dropped == 100)
    await run.stop()
    assert lane.counts.dropped >= 90 and sum(n for name, n in dropped if name == "slow") == lane.counts.dropped
    assert writing < 10  # 100 writes, never waiting for the 0.2 s callbacks (that alone would be 20 s)
    assert not [d for d in dropped if d[0] == "fast"]


async def test_a_failing_callback_is_retried_by_its_policy_then_skipped(kv):
    since = await kv.current_revision()
    bad = Recorder("bad", "k:", fail=True)
    bad.retry = RetryPolicy(max_retries=1, backoff_ms=10, max_backoff_ms=10)
    done: list[tuple[str, bool]] = []
    run = await Running(kv, [bad], on_done=lambda name, ok: done.append((name, ok))).start(since)
    await kv.put("k:1", b"v")
    await kv.put("k:2", b"v")
    lane = run.dispatcher.lane("test", "bad")
    await until(lambda: lane.counts.failed == 2, timeout=10)
    await run.stop()
    assert lane.counts.delivered == 0 and not lane.queue
    assert bad.calls == 4 and done == [("bad", False), ("bad", False)]  # the subscriber's one retry each


async def test_a_compacted_cursor_resumes_at_the_current_revision(kv):
    since = await kv.current_revision()
    sub = Recorder("a", "k:")
    run = await Running(kv, [sub]).start(since)
    await kv.put("k:first", b"v")
    await until(lambda: len(sub.got) == 1)
    await run.stop()
    for i in range(10):
        await kv.put(f"k:gone{i}", b"v")
    await kv.compact(await kv.current_revision())
    again = Recorder("a", "k:")
    run = await Running(kv, [again]).start(since)
    lane = run.dispatcher.lane("test", "a")
    await until(lambda: lane.counts.dropped >= 10)
    rev = await kv.put("k:after", b"v")
    await until(lambda: ("k:after", rev, "hooks.kv.write_committed") in again.got)
    await run.stop()
    assert not [k for k, _, _ in again.got if k.startswith("k:gone")]


async def test_an_idle_dispatcher_waits_for_a_subscriber_record(kv):
    since = await kv.current_revision()
    sub = Recorder("a", "k:")
    run = Running(kv, [sub], idle_prefix="__plugins:testhooks:subs:")
    run.source.since = since
    run.task = asyncio.create_task(run.dispatcher.run())
    await kv.put("k:before", b"v")
    await asyncio.sleep(0.3)  # long enough for a dispatcher that did not wait to have loaded its lanes
    assert run.dispatcher.lanes == {} and sub.got == []  # watching the subscriber records only
    await kv.put("__plugins:testhooks:subs:a", b"{}")  # a subscriber appears
    await until(lambda: len(run.dispatcher.lanes) == 1)
    later = await kv.put("k:after", b"v")
    await until(lambda: ("k:after", later, "hooks.kv.write_committed") in sub.got)
    await run.stop()
