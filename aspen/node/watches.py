"""Watches that outlive one HTTP request.

A ``WatchCreate`` RPC registers a watch here and answers at once; the events
are then read from ``GET /v1/watch/{id}``. The hub stores only where each
watch resumes (``next_revision``), so a reader that reconnects continues
without a gap, and a watch nobody reads expires after ``idle_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.storage.keyspace import is_secret
from aspen.storage.limits import check_prefix, check_revision
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import WatchEvent

KEEPALIVE_SECONDS = 15.0


@dataclass(slots=True)
class Watch:
    id: int
    prefix: str
    next_revision: int
    owner: str | None = None  # the caller that created it; None: the node itself
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0
    last_used: float = field(default_factory=time.monotonic)


class WatchHub:
    """Registered watches, each owned by the caller that made it: another
    caller asking for it gets ``WATCH_NOT_FOUND``, as if it did not exist.
    ``max_watches`` bounds the watches of the whole node (registered ones and
    live streams), ``max_per_caller`` those one caller has registered."""

    def __init__(
        self,
        kv: KeyValueStore,
        stopping: asyncio.Event,
        *,
        idle_seconds: float = 60.0,
        max_watches: int = 10_000,
        max_per_caller: int = 256,
    ) -> None:
        self._kv = kv
        self._stopping = stopping
        self._idle = idle_seconds
        self._ids = itertools.count(1)
        self._watches: dict[int, Watch] = {}
        self.max_watches = max_watches
        self.max_per_caller = max_per_caller
        self.streams = 0  # live event streams (each registered watch being read, each ad-hoc stream)

    async def create(self, prefix: str, start_revision: int | None, owner: str | None = None) -> Watch:
        check_prefix(prefix)
        if start_revision is None:
            start_revision = await self._kv.current_revision() + 1
        else:
            check_revision(start_revision)
        self._expire()
        self.check_node_quota()
        mine = sum(1 for w in self._watches.values() if w.owner == owner)
        if owner is not None and mine >= self.max_per_caller:
            raise quota_exceeded("watches_per_caller", self.max_per_caller, mine)
        watch = Watch(next(self._ids), prefix, start_revision, owner)
        self._watches[watch.id] = watch
        return watch

    def check_node_quota(self) -> None:
        used = len(self._watches) + self.streams
        if used >= self.max_watches:
            raise quota_exceeded("watches_per_node", self.max_watches, used)

    def get(self, watch_id: int, owner: str | None = None) -> Watch:
        watch = self._watches.get(watch_id)
        if watch is None or owner is not None and watch.owner != owner:
            raise AspenError(ErrorCode.WATCH_NOT_FOUND, f"no watch {watch_id} (cancelled, expired or never created)")
        return watch

    def cancel(self, watch_id: int, owner: str | None = None) -> bool:
        watch = self._watches.get(watch_id)
        if watch is None or owner is not None and watch.owner != owner:
            return False
        del self._watches[watch_id]
        watch.cancelled.set()
        return True

    def _expire(self) -> None:
        cutoff = time.monotonic() - self._idle
        for w in [w for w in self._watches.values() if w.readers == 0 and w.last_used < cutoff]:
            self.cancel(w.id)

    async def follow(self, watch: Watch) -> AsyncIterator[WatchEvent | None]:
        """Events of a registered watch, advancing its resume point."""
        watch.readers += 1
        try:
            async for event in self.events(watch.prefix, watch.next_revision, watch.cancelled):
                if event is not None:
                    watch.next_revision = event.revision + 1
                yield event
        finally:
            watch.readers -= 1
            watch.last_used = time.monotonic()

    async def events(
        self, prefix: str, start_revision: int | None, cancelled: asyncio.Event | None = None
    ) -> AsyncIterator[WatchEvent | None]:
        """Store events until ``cancelled`` or node shutdown; ``None`` every
        ``KEEPALIVE_SECONDS`` without an event (lets streams notice a dead peer)."""
        check_prefix(prefix)
        source = self._kv.watch(prefix, start_revision)
        self.streams += 1
        stops = [asyncio.ensure_future(self._stopping.wait())]
        if cancelled is not None:
            stops.append(asyncio.ensure_future(cancelled.wait()))
        pending_next: asyncio.Future | None = None
        try:
            while True:
                if pending_next is None:
                    pending_next = asyncio.ensure_future(anext(source))
                done, _ = await asyncio.wait(
                    [pending_next, *stops], timeout=KEEPALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
                if pending_next in done:
                    fut, pending_next = pending_next, None
                    try:
                        event = fut.result()
                    except StopAsyncIteration:
                        return
                    if not is_secret(event.kv.key):  # the cluster's secrets never leave the node
                        yield event
                elif done:
                    return
                else:
                    yield None
        finally:
            self.streams -= 1
            for f in stops:
                f.cancel()
            if pending_next is not None:
                pending_next.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, AspenError):
                    await pending_next
            with contextlib.suppress(RuntimeError):
                await source.aclose()  # type: ignore[attr-defined]
