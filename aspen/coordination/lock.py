"""Mutual-exclusion locks with fencing tokens: etcd's lock recipe on the
protocol.

Every contender puts ``__coord:lock:{name}:{lease id}`` on a lease of the
lock's TTL; the holder is the key with the lowest ``create_revision``, and
that revision is the **fencing token**. The store's revision only ever
grows (across restarts too, on both backends) and keys hold the lock in the
order they were created, so the tokens of successive holders strictly
increase — a resource that remembers the highest token it has seen can
refuse a stale holder. The waiters of one process share one watch of the
lock's keys (:mod:`lock_line`), so a release wakes one waiter with no read
(no herd, no polling); a holder that dies loses the lock when its lease
expires. Release revokes the lease.
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from aspen import clock
from aspen.coordination.lock_line import LockLine, Turn
from aspen.coordination.space import (
    Holder,
    base_key,
    check_ttl,
    check_wait,
    decode_holder,
    encode,
    revoke_quietly,
    wait_timeout,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import KeyValue, PutOp, RangeOp

DEFAULT_TTL = 30
MAX_WAITERS = 1000


class LockState(msgspec.Struct, frozen=True, kw_only=True):
    """A lock as it stands: its holder, fencing token and lease deadline."""

    name: str
    holder: str  # the label the holder chose
    owner: str  # the authenticated caller that holds it ("" in-process)
    token: int  # fencing token of this holding
    lease_id: int
    ttl: int
    deadline_ms: int  # when the lease expires unless renewed (0: unknown)


class TryResult(msgspec.Struct, frozen=True):
    acquired: bool
    lock: LockState | None  # ours when acquired, else the current holder's (None: freed meanwhile)


def not_held(name: str, token: int) -> AspenError:
    return AspenError(ErrorCode.LOCK_NOT_HELD, f"lock {name!r} is not held with token {token}", name=name, token=token)


def _by_age(kvs: list[KeyValue]) -> list[KeyValue]:
    return sorted(kvs, key=lambda kv: kv.create_revision)


class Locks:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self._lines: dict[str, LockLine] = {}  # lock prefix -> this process's waiters on it

    @staticmethod
    def prefix(name: str) -> str:
        return base_key("lock", name) + ":"

    def _state(self, name: str, kv: KeyValue, deadline_ms: int = 0) -> LockState:
        h = decode_holder(kv.value)
        return LockState(
            name=name, holder=h.label, owner=h.owner, token=kv.create_revision, lease_id=kv.lease, ttl=h.ttl,
            deadline_ms=deadline_ms,
        )  # fmt: skip

    async def _contenders(self, prefix: str) -> tuple[list[KeyValue], int]:
        r = await self.kv.transaction([], [RangeOp(prefix, limit=MAX_WAITERS + 1)])
        return _by_age(r.results[0].kvs), r.revision

    async def _enter(self, name: str, holder: str, owner: str, ttl: int) -> tuple[int, str, list[KeyValue], int]:
        """Join the line: (lease, our key, contenders oldest first, revision)."""
        prefix = self.prefix(name)
        lease_id = (await self.kv.lease_grant(ttl)).id
        key = f"{prefix}{lease_id}"
        try:
            r = await self.kv.transaction(
                [],
                [
                    PutOp(key, encode(Holder(owner, holder, ttl=ttl)), lease=lease_id),
                    RangeOp(prefix, limit=MAX_WAITERS + 1),
                ],
            )
        except BaseException:
            await revoke_quietly(self.kv, lease_id)
            raise
        kvs = r.results[1].kvs
        if len(kvs) > MAX_WAITERS:
            await revoke_quietly(self.kv, lease_id)
            raise AspenError(
                ErrorCode.LOCK_TOO_MANY_WAITERS, f"lock {name!r} has {MAX_WAITERS} waiters", max=MAX_WAITERS
            )
        return lease_id, key, _by_age(kvs), r.revision

    async def _deadline(self, kv: KeyValue) -> int:
        try:
            info = await self.kv.lease_time_to_live(kv.lease)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                return 0
            raise
        return clock.now_ms() + max(0, info.remaining_ttl) * 1000

    async def try_acquire(self, name: str, *, holder: str = "", owner: str = "", ttl: int = DEFAULT_TTL) -> TryResult:
        """Take the lock if free; else say who holds it and until when."""
        ttl = check_ttl(ttl)
        started = clock.now_ms()
        lease_id, key, kvs, _ = await self._enter(name, holder, owner, ttl)
        if kvs[0].key == key:
            return TryResult(True, self._state(name, kvs[0], started + ttl * 1000))
        await revoke_quietly(self.kv, lease_id)
        first = kvs[0]
        return TryResult(False, self._state(name, first, await self._deadline(first)))

    async def acquire(
        self, name: str, *, holder: str = "", owner: str = "", ttl: int = DEFAULT_TTL, timeout: float = 10.0
    ) -> LockState:
        """Take the lock, waiting up to ``timeout`` seconds on a watch of the
        contender just before us; ``COORD_WAIT_TIMEOUT`` when it stays held."""
        ttl, timeout = check_ttl(ttl), check_wait(timeout)
        give_up = time.monotonic() + timeout
        started = clock.now_ms()
        prefix = self.prefix(name)
        lease_id, key, kvs, revision = await self._enter(name, holder, owner, ttl)
        if kvs[0].key == key:
            return self._state(name, kvs[0], started + ttl * 1000)
        mine = next(kv for kv in kvs if kv.key == key)
        line = self._line(prefix, kvs, revision)
        turn = line.join(key, mine.create_revision)
        won = False
        try:
            while True:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise wait_timeout(name, timeout)
                # wake on our turn; at least every ttl/2 to keep our place alive
                await asyncio.wait([turn], timeout=min(left, ttl / 2))
                if not turn.done():
                    if give_up - time.monotonic() <= 0:
                        raise wait_timeout(name, timeout)
                    await self.kv.lease_keepalive(lease_id)
                    started = clock.now_ms()
                elif turn.result() is Turn.HELD:
                    won = True
                    return self._state(name, mine, started + ttl * 1000)
                elif turn.result() is Turn.LOST:
                    raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"the wait for lock {name!r} outlived its lease")
                else:  # the shared watch ended: read the line afresh
                    self._leave(prefix, line, key)
                    kvs, revision = await self._contenders(prefix)
                    line = self._line(prefix, kvs, revision)
                    turn = line.join(key, mine.create_revision)
        finally:
            self._leave(prefix, line, key)
            if not won:
                await revoke_quietly(self.kv, lease_id)

    def _line(self, prefix: str, kvs: list[KeyValue], revision: int) -> LockLine:
        """This process's line for the lock, started from the caller's read
        of the contenders when there is none."""
        line = self._lines.get(prefix)
        if line is None or line.ended:
            line = self._lines[prefix] = LockLine(self.kv, prefix, kvs, revision)
        return line

    def _leave(self, prefix: str, line: LockLine, key: str) -> None:
        if line.leave(key) and self._lines.get(prefix) is line:
            del self._lines[prefix]

    async def _held(self, name: str, token: int, owner: str | None) -> KeyValue:
        kvs, _ = await self._contenders(self.prefix(name))
        first = kvs[0] if kvs else None
        if (
            first is None
            or first.create_revision != token
            or (owner is not None and decode_holder(first.value).owner != owner)
        ):
            raise not_held(name, token)
        return first

    async def renew(self, name: str, token: int, *, owner: str | None = None) -> LockState:
        """Restart the TTL of a holding (``owner`` None: any owner, in-process)."""
        kv = await self._held(name, token, owner)
        try:
            info = await self.kv.lease_keepalive(kv.lease)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(name, token) from None
            raise
        if info.remaining_ttl < 0:
            raise not_held(name, token)
        return self._state(name, kv, clock.now_ms() + info.remaining_ttl * 1000)

    async def release(self, name: str, token: int, *, owner: str | None = None) -> None:
        """Give the lock up; ``LOCK_NOT_HELD`` when this token lost it already."""
        kv = await self._held(name, token, owner)
        try:
            await self.kv.lease_revoke(kv.lease)  # the lease belongs to this holding alone
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(name, token) from None
            raise

    async def release_holding(self, lock: LockState) -> None:
        """Release what :meth:`acquire` returned without a lookup: revoke its
        lease, which deletes our key in the same step and so hands the lock
        on. The lease carries this holding alone, so this cannot free
        another's; one round trip where the etcd recipe spends two (delete,
        then revoke)."""
        try:
            await self.kv.lease_revoke(lock.lease_id)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(lock.name, lock.token) from None
            raise

    async def status(self, name: str) -> LockState | None:
        kvs, _ = await self._contenders(self.prefix(name))
        return None if not kvs else self._state(name, kvs[0], await self._deadline(kvs[0]))
