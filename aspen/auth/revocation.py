"""Revoked token blocks, shared through the store under ``__auth:revoked:``.

Every node loads the list at start and then follows it with a watch, so a
revocation written through any node is honoured by every node as soon as
the event arrives (well within a second on SQLite and etcd). Revoking a
token writes the id of its *last* block: every token appended to it or
created from it carries that id too, the token it was made from does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec

from aspen.clock import now_ms
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

REVOKED_PREFIX = "__auth:revoked:"


class Revocation(msgspec.Struct, frozen=True):
    revoked_at_ms: int
    by: str


class Revocations:
    def __init__(self, kv: KeyValueStore, on_change: Callable[[], None]) -> None:
        self._kv = kv
        self._on_change = on_change
        self._ids: set[str] = set()
        self._task: asyncio.Task | None = None

    def any_revoked(self, ids: frozenset[str]) -> bool:
        return not self._ids.isdisjoint(ids)

    async def _load(self) -> int:
        """Read the whole list; the revision to follow it from."""
        ids: set[str] = set()
        revision, token = 0, None
        while True:
            page = await self._kv.scan(REVOKED_PREFIX, limit=1000, continuation=token)
            ids.update(e.key[len(REVOKED_PREFIX) :] for e in page.entries)
            revision = revision or page.revision
            if not page.is_truncated:
                break
            token = page.continuation_token
        self._ids = ids
        self._on_change()
        return revision

    async def start(self) -> None:
        revision = await self._load()
        self._task = asyncio.create_task(self._follow(revision + 1))

    async def _follow(self, start: int) -> None:
        while True:
            try:
                async for event in self._kv.watch(REVOKED_PREFIX, start):
                    start = event.revision + 1
                    rid = event.kv.key[len(REVOKED_PREFIX) :]
                    (self._ids.add if event.type == "put" else self._ids.discard)(rid)
                    self._on_change()
                return  # the store closed
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a store hiccup or compacted history: reload, follow again
                log.warning("revocation watch failed (%s); reloading the list", exc)
                await asyncio.sleep(0.2)
                with contextlib.suppress(Exception):
                    start = await self._load() + 1

    async def revoke(self, revocation_id: str, by: str) -> None:
        record = msgspec.json.encode(Revocation(now_ms(), by))
        await self._kv.put(REVOKED_PREFIX + revocation_id, record)
        self._ids.add(revocation_id)
        self._on_change()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
