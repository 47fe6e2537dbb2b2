"""The line of a lock as one process sees it: one watch of the lock's keys,
shared by every waiter in the process, and a mirror of those keys.

etcd's recipe gives each waiter a watch of its predecessor and, when that
key goes, a read of the contenders to see whether older ones remain: a
hand-off costs the release, the event and that read. Here the mirror (key ->
create revision) is the store's state at the watch's revision — a watch
delivers every change under the prefix, complete and in order — and no key
older than a waiter's can appear later (create revisions only grow). So a
waiter holds the lock as soon as its key is the oldest in the mirror, and
the hand-off is the release and one event, with no read. A release wakes
one waiter: the one whose key became the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum

from aspen.errors import AspenError
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import KeyValue


class Turn(enum.Enum):
    HELD = "held"  # the waiter's key is the oldest: it holds the lock
    LOST = "lost"  # the waiter's key is gone (its lease ran out)
    LOOK_AGAIN = "look again"  # the watch ended: read the contenders and join a new line


class LockLine:
    """Waiters of one lock name in this process, settled on each event."""

    def __init__(self, kv: KeyValueStore, prefix: str, kvs: list[KeyValue], revision: int) -> None:
        self.mirror = {kv.key: kv.create_revision for kv in kvs}
        self.revision = revision  # the mirror is the store's state at this revision
        self.waiters: dict[str, tuple[int, asyncio.Future[Turn]]] = {}
        self.ended = False
        self._task = asyncio.create_task(self._follow(kv, prefix))

    def join(self, key: str, create_revision: int) -> asyncio.Future[Turn]:
        turn: asyncio.Future[Turn] = asyncio.get_running_loop().create_future()
        if self.ended:
            turn.set_result(Turn.LOOK_AGAIN)
            return turn
        self.waiters[key] = (create_revision, turn)
        self._settle()
        return turn

    def leave(self, key: str) -> bool:
        """Forget a waiter; True when the line is now empty and has stopped."""
        self.waiters.pop(key, None)
        if self.waiters:
            return False
        self.ended = True
        self._task.cancel()
        return True

    def _settle(self) -> None:
        oldest = min(self.mirror, key=self.mirror.__getitem__, default=None)
        for key, (created, turn) in self.waiters.items():
            if turn.done():
                continue
            if key == oldest:
                turn.set_result(Turn.HELD)
            elif key not in self.mirror and self.revision > created:
                # ``>``: events of one revision come one by one, so at
                # ``created`` our own put may not have been applied yet
                turn.set_result(Turn.LOST)

    async def _follow(self, kv: KeyValueStore, prefix: str) -> None:
        events = kv.watch(prefix, start_revision=self.revision + 1)
        try:
            async for event in events:
                if event.type == "put":
                    self.mirror.setdefault(event.kv.key, event.kv.create_revision)
                else:
                    self.mirror.pop(event.kv.key, None)
                self.revision = event.revision
                self._settle()
        except AspenError:  # compacted past us, the store closed, …: each waiter reads afresh
            pass
        finally:
            self.ended = True
            for _, turn in self.waiters.values():
                if not turn.done():
                    turn.set_result(Turn.LOOK_AGAIN)
            with contextlib.suppress(AspenError):
                await events.aclose()
