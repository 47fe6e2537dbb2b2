"""Mutual-exclusion locks with fencing tokens.

One key per lock, ``__coord:lock:{name}``, attached to a lease of the
lock's TTL: while it exists the lock is held; when the holder releases (the
lease is revoked) or dies (the lease expires) the key goes and every waiter's
watch sees the delete. The fencing token is the key's ``create_revision``:
the store's revision only ever grows (across restarts too, on both
backends), so the tokens of successive holders of a lock strictly increase —
a resource that remembers the highest token it has seen can refuse a stale
holder. Acquire is one transaction (create if absent, else read the holder);
a blocked acquire waits on a watch of the key, never polls.
"""

from __future__ import annotations

import time

import msgspec

from aspen import clock
from aspen.coordination.space import (
    Holder,
    base_key,
    check_ttl,
    check_wait,
    decode_holder,
    encode,
    is_delete,
    revoke_quietly,
    wait_for,
    wait_timeout,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, GetOp, KeyValue, PutOp

DEFAULT_TTL = 30


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


class Locks:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def key(name: str) -> str:
        return base_key("lock", name)

    async def _attempt(self, key: str, record: bytes, lease_id: int) -> tuple[bool, KeyValue | None, int]:
        r = await self.kv.transaction(
            [Compare(key, "exists", "==", False)], [PutOp(key, record, lease=lease_id), GetOp(key)], [GetOp(key)]
        )
        return r.succeeded, r.results[-1].kv, r.revision

    def _state(self, name: str, kv: KeyValue, deadline_ms: int = 0) -> LockState:
        h = decode_holder(kv.value)
        return LockState(
            name=name, holder=h.label, owner=h.owner, token=kv.create_revision, lease_id=kv.lease, ttl=h.ttl,
            deadline_ms=deadline_ms,
        )  # fmt: skip

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
        key, ttl = self.key(name), check_ttl(ttl)
        lease = await self.kv.lease_grant(ttl)
        granted_ms = clock.now_ms()
        ok, kv, _ = await self._attempt(key, encode(Holder(owner, holder, ttl=ttl)), lease.id)
        if ok:
            return TryResult(True, self._state(name, kv, granted_ms + ttl * 1000))
        await revoke_quietly(self.kv, lease.id)
        return TryResult(False, None if kv is None else self._state(name, kv, await self._deadline(kv)))

    async def acquire(
        self, name: str, *, holder: str = "", owner: str = "", ttl: int = DEFAULT_TTL, timeout: float = 10.0
    ) -> LockState:
        """Take the lock, waiting up to ``timeout`` seconds for it on a watch;
        ``COORD_WAIT_TIMEOUT`` when it stays held."""
        key, ttl, timeout = self.key(name), check_ttl(ttl), check_wait(timeout)
        record = encode(Holder(owner, holder, ttl=ttl))
        give_up = time.monotonic() + timeout
        lease_id, granted = 0, 0.0
        try:
            while True:
                if not lease_id or time.monotonic() - granted > ttl / 2:  # a fresh lease: the full TTL once held
                    if lease_id:
                        await revoke_quietly(self.kv, lease_id)
                        lease_id = 0
                    lease_id, granted = (await self.kv.lease_grant(ttl)).id, time.monotonic()
                granted_ms = clock.now_ms() - int((time.monotonic() - granted) * 1000)
                try:
                    ok, kv, revision = await self._attempt(key, record, lease_id)
                except AspenError as exc:
                    if exc.code != ErrorCode.LEASE_NOT_FOUND:
                        raise
                    lease_id = 0  # it ran out while we waited: take a new one
                    continue
                if ok:
                    lease_id, state = 0, self._state(name, kv, granted_ms + ttl * 1000)
                    return state
                if kv is None:
                    continue  # freed between the compare and the read
                left = give_up - time.monotonic()
                if not await wait_for(self.kv, key, revision, left, lambda e: is_delete(e) and e.kv.key == key):
                    raise wait_timeout(name, timeout)
        finally:
            if lease_id:  # not acquired: the lease holds nothing
                await revoke_quietly(self.kv, lease_id)

    async def _held(self, name: str, token: int, owner: str | None) -> KeyValue:
        kv = await self.kv.get(self.key(name))
        if kv is None or kv.create_revision != token or (owner is not None and decode_holder(kv.value).owner != owner):
            raise not_held(name, token)
        return kv

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

    async def status(self, name: str) -> LockState | None:
        kv = await self.kv.get(self.key(name))
        return None if kv is None else self._state(name, kv, await self._deadline(kv))
