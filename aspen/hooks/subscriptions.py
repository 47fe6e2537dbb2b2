"""Where a subscriber's patterns and its delivery cursor are kept.

A subscriber kind keeps both in its own reserved space: one record of
patterns per subscriber (``{subs_prefix}{name}``), changed by
compare-and-swap so a limit holds however many nodes change it at once, and
one cursor (``{cursor_prefix}{name}``): the revision up to which every event
was handled (delivered, failed or dropped), with the counts. ``since`` is the
revision at which the record was created: a new subscriber receives what is
committed after it subscribed, not the past.
"""

from __future__ import annotations

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.hooks.topics import check_pattern
from aspen.storage.protocol import KeyValueStore

MAX_SUBSCRIPTIONS = 16
MAX_CAS_ATTEMPTS = 32


class Subscriptions(msgspec.Struct, frozen=True):
    patterns: tuple[str, ...] = ()
    since: int = 0  # events with a revision above it are delivered


class Cursor(msgspec.Struct):
    revision: int = 0  # every event up to here was handled
    delivered: int = 0
    dropped: int = 0  # queue overflow or a compacted gap
    failed: int = 0  # retried, then skipped
    last_error: str = ""  # why the newest failed event failed ("CODE: message", at most 300 characters)
    last_error_ms: int = 0  # when (wall clock)


def decode_subscriptions(raw: bytes) -> Subscriptions:
    try:
        return msgspec.json.decode(raw, type=Subscriptions)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Subscriptions()


def decode_cursor(raw: bytes | None) -> Cursor:
    if raw is None:
        return Cursor()
    try:
        return msgspec.json.decode(raw, type=Cursor)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Cursor()


class SubscriptionStore:
    def __init__(
        self,
        kv: KeyValueStore,
        subs_prefix: str,
        cursor_prefix: str,
        *,
        limit: int = MAX_SUBSCRIPTIONS,
        too_many: ErrorCode = ErrorCode.PLUGIN_TOO_MANY_SUBSCRIPTIONS,
    ) -> None:
        self.kv = kv
        self.subs_prefix = subs_prefix
        self.cursor_prefix = cursor_prefix
        self.limit = limit
        self.too_many = too_many

    def subs_key(self, name: str) -> str:
        return self.subs_prefix + name

    def cursor_key(self, name: str) -> str:
        return self.cursor_prefix + name

    async def get(self, name: str) -> Subscriptions:
        kv = await self.kv.get(self.subs_key(name))
        return Subscriptions() if kv is None else decode_subscriptions(kv.value)

    async def cursor(self, name: str) -> Cursor:
        kv = await self.kv.get(self.cursor_key(name))
        return decode_cursor(None if kv is None else kv.value)

    async def subscribe(self, name: str, pattern: object) -> tuple[str, ...]:
        """Add ``pattern`` (idempotent: an existing one writes nothing)."""
        pattern = check_pattern(pattern)

        def add(subs: Subscriptions) -> tuple[str, ...] | None:
            if pattern in subs.patterns:
                return None
            if len(subs.patterns) >= self.limit:
                raise AspenError(
                    self.too_many,
                    f"'{name}' already has {len(subs.patterns)} hook subscriptions, at most {self.limit}",
                    limit=self.limit,
                )
            return (*subs.patterns, pattern)

        return (await self._change(name, add))[0]

    async def unsubscribe(self, name: str, pattern: object) -> bool:
        pattern = check_pattern(pattern)

        def drop(subs: Subscriptions) -> tuple[str, ...] | None:
            return tuple(p for p in subs.patterns if p != pattern) if pattern in subs.patterns else None

        return (await self._change(name, drop))[1]

    async def _change(self, name: str, change) -> tuple[tuple[str, ...], bool]:
        """Apply ``change`` (patterns -> new patterns, None: unchanged) by CAS;
        the last pattern removed deletes the record."""
        key = self.subs_key(name)
        for _ in range(MAX_CAS_ATTEMPTS):
            current = await self.kv.get(key)
            subs = Subscriptions() if current is None else decode_subscriptions(current.value)
            patterns = change(subs)
            if patterns is None:
                return subs.patterns, False
            if not patterns:
                assert current is not None
                done = (await self.kv.compare_and_delete(key, current.value)).succeeded
            else:
                since = subs.since if current is not None else await self.kv.current_revision()
                raw = msgspec.json.encode(Subscriptions(patterns, since))
                done = (await self.kv.compare_and_swap(key, None if current is None else current.value, raw)).succeeded
            if done:
                return patterns, True
        raise AspenError(ErrorCode.UNAVAILABLE, f"'{name}': hook subscriptions changed too often meanwhile; retry")

    async def forget(self, name: str) -> None:
        """Drop a removed subscriber's patterns and cursor."""
        await self.kv.delete(self.subs_key(name))
        await self.kv.delete(self.cursor_key(name))
