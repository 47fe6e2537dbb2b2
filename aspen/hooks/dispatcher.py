"""Delivering hook events to subscribers: one watch of the whole key space,
one lane (a bounded queue and a task) per subscriber.

The dispatcher runs as a :class:`~aspen.coordination.duty.ClusterDuty`, so
one node of a cluster delivers. Until a subscriber record exists (under
``idle_prefix``) it watches that prefix alone; then every key from the
lowest subscriber cursor, turns each change into its topic
(:func:`~aspen.hooks.topics.hook_event`) and offers it to every lane; each
subscriber decides what it may see (:meth:`Subscriber.select`). Offering
never waits: a full lane drops the event and counts it, so a slow
subscriber slows neither writers nor the other subscribers. A lane delivers
in revision order (so in order per key), retries a failing callback by the
subscriber's :class:`~aspen.jobs.model.RetryPolicy` (waiting behind it:
order holds), then counts it failed and goes on. Each lane's cursor
(the revision below which everything was handled) is persisted in batches;
a node that takes over resumes from it, so delivery is at least once.

Subscribers come from *sources*, one per kind (plugins; user hooks next),
each with its own :class:`~aspen.hooks.subscriptions.SubscriptionStore`;
a change to a key a source ``affects`` reloads that source's subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.hooks.subscriptions import Cursor, SubscriptionStore
from aspen.hooks.topics import HookEvent, hook_event
from aspen.jobs.model import RetryPolicy
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import PutOp, WatchEvent

log = logging.getLogger("aspen.hooks")

QUEUE_EVENTS = 1000  # per subscriber
QUEUE_BYTES = 16 << 20  # of values queued per subscriber
# a plugin's callback, or the hand-over of an event to a job: 0.1, 0.2, 0.4 s
DISPATCH_RETRY = RetryPolicy(max_retries=3, backoff_ms=100, max_backoff_ms=400, jitter=0.0)
FLUSH_SECONDS = 0.1
IDLE_FLUSH_SECONDS = 10.0  # an idle lane's cursor follows the store this often …
IDLE_FLUSH_REVISIONS = 16  # … when it lags by more than this


class Subscriber(Protocol):
    name: str
    start: int  # events with a revision above it are for this subscriber
    retry: RetryPolicy  # how a failing delivery is retried (DISPATCH_RETRY, unless its own)

    def select(self, hook: HookEvent) -> tuple[dict[str, Any], int] | None:
        """The payload to deliver (and its size in bytes), or None when the
        subscriber does not want, or may not see, this event."""

    async def deliver(self, payload: dict[str, Any]) -> None:
        """Hand the event over; raise on failure (the lane retries)."""


class SubscriberSource(Protocol):
    kind: str
    store: SubscriptionStore  # where the cursors are

    def affects(self, key: str) -> bool:
        """Whether a change to ``key`` may change the set of subscribers."""

    async def load(self) -> dict[str, Subscriber]: ...


class Lane:
    """One subscriber's queue, worker and cursor."""

    def __init__(self, dispatcher: HookDispatcher, store: SubscriptionStore, sub: Subscriber, cursor: Cursor) -> None:
        self.dispatcher = dispatcher
        self.store = store
        self.sub = sub
        self.counts = cursor
        self.done = max(sub.start, cursor.revision)  # every event up to here was offered
        self.seen = self.done  # the newest revision offered (perhaps in part)
        self.persisted = cursor.revision
        self.flushed_at = time.monotonic()
        self.dirty = False
        self.queue: deque[tuple[int, dict[str, Any], int]] = deque()
        self.queued_bytes = 0
        self.wake = asyncio.Event()
        self.task = asyncio.create_task(self._work(), name=f"hooks-{sub.name}")

    @property
    def handled(self) -> int:
        """The cursor: every event up to this revision was delivered, failed or dropped."""
        return min(self.done, self.queue[0][0] - 1) if self.queue else self.done

    def rewind(self) -> None:
        self.seen = self.done

    def offer(self, change_revision: int, hook: HookEvent | None) -> None:
        if change_revision > self.seen:
            self.done, self.seen = self.seen, change_revision
        if change_revision <= self.done or hook is None:
            return
        picked = self.sub.select(hook)
        if picked is None:
            return
        payload, size = picked
        d = self.dispatcher
        if len(self.queue) >= d.queue_events or self.queued_bytes + size > d.queue_bytes:
            self.count_dropped(1)
            return
        self.queue.append((change_revision, payload, size))
        self.queued_bytes += size
        self.wake.set()

    def count_dropped(self, n: int) -> None:
        self.counts.dropped += n
        self.dirty = True
        self.dispatcher.on_drop(self.sub.name, n)

    async def _work(self) -> None:
        while True:
            while not self.queue:
                self.wake.clear()
                await self.wake.wait()
            _, payload, size = self.queue[0]
            delivered = await self._deliver(payload)
            if delivered:
                self.counts.delivered += 1
            else:
                self.counts.failed += 1
            self.dispatcher.on_done(self.sub.name, delivered)
            self.queue.popleft()
            self.queued_bytes -= size
            self.dirty = True

    async def _deliver(self, payload: dict[str, Any]) -> bool:
        retry = self.sub.retry
        for attempt in range(retry.max_retries + 1):
            if attempt:
                await asyncio.sleep(retry.delay_ms(attempt) / 1000)
            try:
                await self.sub.deliver(payload)
                return True
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- any failure is retried, then counted
                error = exc
        log.warning("hook %s to %s failed, skipped: %s", payload.get("topic"), self.sub.name, error)
        why = str(error) if isinstance(error, AspenError) else f"{type(error).__name__}: {error}"  # "CODE: message"
        self.counts.last_error, self.counts.last_error_ms = why[:300], now_ms()
        return False

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class HookDispatcher:
    def __init__(
        self,
        kv: KeyValueStore,
        sources: Sequence[SubscriberSource],
        *,
        queue_events: int = QUEUE_EVENTS,
        queue_bytes: int = QUEUE_BYTES,
        on_drop: Callable[[str, int], None] = lambda name, n: None,
        on_done: Callable[[str, bool], None] = lambda name, delivered: None,
        idle_prefix: str | None = None,
    ) -> None:
        """``idle_prefix``: where a subscriber's record is written; until a key
        exists there, only that prefix is watched, not the whole key space.
        ``on_drop`` and ``on_done`` (delivered, or failed after its retries)
        see every event a lane counts, for metrics."""
        self.kv = kv
        self.idle_prefix = idle_prefix
        self.sources = {s.kind: s for s in sources}
        self.queue_events = queue_events
        self.queue_bytes = queue_bytes
        self.on_drop = on_drop
        self.on_done = on_done
        self.lanes: dict[tuple[str, str], Lane] = {}
        self._rewind = False

    def lane(self, kind: str, name: str) -> Lane | None:
        return self.lanes.get((kind, name))

    async def run(self) -> None:
        """The duty's work: deliver until cancelled, then persist the cursors."""
        flusher = None
        try:
            if self.idle_prefix is not None:
                await self._until_any(self.idle_prefix)
            for source in self.sources.values():
                await self._reload(source)
            flusher = asyncio.create_task(self._flush_loop(), name="hooks-flush")
            while True:
                await self._stream()
        finally:
            if flusher is not None:
                flusher.cancel()
            lanes, self.lanes = list(self.lanes.values()), {}
            for lane in lanes:
                await lane.stop()
            with contextlib.suppress(Exception):
                await asyncio.shield(self._flush(lanes, everything=True))

    async def _until_any(self, prefix: str) -> None:
        """Return once a key exists under ``prefix``: a cluster without
        subscribers pays for a watch of that prefix alone."""
        revision = await self.kv.current_revision()
        if (await self.kv.scan(prefix, limit=1)).entries:
            return
        async with contextlib.aclosing(self.kv.watch(prefix, revision + 1)) as changes:
            async for change in changes:
                if change.type == "put":
                    return

    async def _stream(self) -> None:
        """One watch from the lowest cursor, until a new subscriber needs an
        older revision (rewind) or the history is compacted."""
        if self.lanes:
            start = min(lane.done for lane in self.lanes.values()) + 1
        else:
            start = await self.kv.current_revision() + 1
        for lane in self.lanes.values():
            lane.rewind()
        self._rewind = False
        try:
            async with contextlib.aclosing(self.kv.watch("", start)) as changes:
                async for change in changes:
                    await self._dispatch(change)
                    if self._rewind:
                        return
        except AspenError as exc:
            if exc.code != ErrorCode.COMPACTED:
                raise
            await self._skip_compacted()

    async def _dispatch(self, change: WatchEvent) -> None:
        hook = hook_event(change)
        for lane in self.lanes.values():
            lane.offer(change.revision, hook)
        for source in self.sources.values():
            if source.affects(change.kv.key):
                await self._reload(source, at=change.revision)

    async def _reload(self, source: SubscriberSource, *, at: int | None = None) -> None:
        wanted = await source.load()
        for (kind, name), lane in list(self.lanes.items()):
            if kind == source.kind and name not in wanted:
                del self.lanes[(kind, name)]  # removed (its cursor is gone) or disabled: resumes from the last flush
                await lane.stop()
        for name, sub in wanted.items():
            lane = self.lanes.get((source.kind, name))
            if lane is not None:
                lane.sub = sub  # new patterns or manifest; queue and cursor stay
                continue
            lane = self.lanes[(source.kind, name)] = Lane(self, source.store, sub, await source.store.cursor(name))
            if at is not None and lane.done < at:
                self._rewind = True  # it resumes before where the watch is

    async def _skip_compacted(self) -> None:
        """Resume at the current revision; each lane counts what it skipped."""
        current = await self.kv.current_revision()
        for lane in self.lanes.values():
            if lane.done < current:
                log.warning("hooks for %s: revisions %d-%d were compacted", lane.sub.name, lane.done + 1, current)
                lane.count_dropped(current - lane.done)
                lane.done = lane.seen = current

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self._flush(list(self.lanes.values()))
            except AspenError as exc:
                log.warning("cannot persist hook cursors: %s", exc)

    async def _flush(self, lanes: list[Lane], *, everything: bool = False) -> None:
        """Write the cursors that changed in one batch (one revision): a lane
        whose counts moved, or an idle one lagging the store, or all."""
        now = time.monotonic()
        due = [
            lane
            for lane in lanes
            if lane.dirty
            or (everything and lane.handled > lane.persisted)
            or (lane.handled > lane.persisted + IDLE_FLUSH_REVISIONS and now - lane.flushed_at > IDLE_FLUSH_SECONDS)
        ]
        if not due:
            return
        ops = []
        for lane in due:
            lane.counts.revision = lane.handled
            lane.dirty = False
            ops.append(PutOp(lane.store.cursor_key(lane.sub.name), msgspec.json.encode(lane.counts)))
        await self.kv.batch_write(ops)
        for lane in due:
            lane.persisted, lane.flushed_at = lane.counts.revision, now
