"""Read-write locks, writer-preferring: etcd's rwmutex recipe on the protocol.

Every contender puts ``__coord:rwlock:{name}:{lease}`` (its mode in the
value) on a lease of its TTL; keys are served in creation order. A writer
holds once its key is the oldest; a reader holds once no older key is a
writer — so a reader that arrives after a waiting writer waits behind it
(writer preference, no writer starvation). The fencing token is the key's
``create_revision``. A writer downgrades by rewriting its value to read
mode, which keeps its place (a put does not change ``create_revision``).
Waiters watch only the key that blocks them.
"""

from __future__ import annotations

import time
from typing import Literal

import msgspec

from aspen.coordination.space import (
    Holder,
    base_key,
    check_ttl,
    check_wait,
    decode_holder,
    encode,
    revoke_quietly,
    wait_for,
    wait_timeout,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, KeyValue, PutOp, RangeOp

Mode = Literal["read", "write"]
MAX_READERS = 128
MAX_PENDING_WRITERS = 64
DEFAULT_TTL = 30


class RWHolding(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    mode: Mode
    holder: str
    owner: str
    token: int
    lease_id: int


class RWLockState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    mode: Literal["free", "read", "write"]
    holders: list[RWHolding]  # those holding now
    pending_writers: int


def _mode(kv: KeyValue) -> Mode:
    return "write" if decode_holder(kv.value).permits else "read"  # permits=1 marks a writer


def _holding(name: str, kv: KeyValue) -> RWHolding:
    h = decode_holder(kv.value)
    return RWHolding(
        name=name, mode=_mode(kv), holder=h.label, owner=h.owner, token=kv.create_revision, lease_id=kv.lease
    )


def _blocker(kvs: list[KeyValue], mine: KeyValue) -> KeyValue | None:
    """The key ``mine`` waits for (None: it holds)."""
    older = [kv for kv in kvs if kv.create_revision < mine.create_revision]
    if _mode(mine) == "write":
        return older[-1] if older else None
    writers = [kv for kv in older if _mode(kv) == "write"]
    return writers[-1] if writers else None


def not_held(name: str, token: int) -> AspenError:
    return AspenError(
        ErrorCode.LOCK_NOT_HELD, f"rwlock {name!r} is not held with token {token}", name=name, token=token
    )


class RWLocks:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def prefix(name: str) -> str:
        return base_key("rwlock", name) + ":"

    async def _contenders(self, name: str) -> tuple[list[KeyValue], int]:
        r = await self.kv.transaction([], [RangeOp(self.prefix(name), limit=MAX_READERS + MAX_PENDING_WRITERS + 2)])
        return sorted(r.results[0].kvs, key=lambda kv: kv.create_revision), r.revision

    async def acquire(
        self, name: str, mode: Mode, *, holder: str = "", owner: str = "", ttl: int = DEFAULT_TTL,
        timeout: float = 10.0, wait: bool = True,
    ) -> RWHolding | None:  # fmt: skip
        """Take ``mode``; with ``wait=False`` answer None at once when blocked."""
        if mode not in ("read", "write"):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"mode is read or write, got {mode!r}")
        ttl, timeout = check_ttl(ttl), check_wait(timeout)
        give_up = time.monotonic() + timeout
        kvs, _ = await self._contenders(name)
        readers = sum(1 for kv in kvs if _mode(kv) == "read")
        writers = len(kvs) - readers
        if mode == "read" and readers >= MAX_READERS:
            raise AspenError(
                ErrorCode.RWLOCK_TOO_MANY_READERS, f"rwlock {name!r} has {MAX_READERS} readers", max=MAX_READERS
            )
        if mode == "write" and writers >= MAX_PENDING_WRITERS:
            raise AspenError(
                ErrorCode.RWLOCK_TOO_MANY_WRITERS,
                f"rwlock {name!r} has {MAX_PENDING_WRITERS} writers",
                max=MAX_PENDING_WRITERS,
            )
        lease_id = (await self.kv.lease_grant(ttl)).id
        key, won = f"{self.prefix(name)}{lease_id}", False
        try:
            await self.kv.put(key, encode(Holder(owner, holder, permits=int(mode == "write"), ttl=ttl)), lease=lease_id)
            while True:
                kvs, revision = await self._contenders(name)
                mine = next((kv for kv in kvs if kv.key == key), None)
                if mine is None:
                    raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"the wait for rwlock {name!r} outlived its lease")
                blocker = _blocker(kvs, mine)
                if blocker is None:
                    won = True
                    return _holding(name, mine)
                left = give_up - time.monotonic()
                if not wait or left <= 0:
                    if not wait:
                        return None
                    raise wait_timeout(name, timeout)
                # the blocker goes (delete) or, for a reader behind a writer, downgrades (put)
                if not await wait_for(self.kv, blocker.key, revision, min(left, ttl / 2),
                                      lambda e, k=blocker.key: e.kv.key == k):  # fmt: skip
                    if give_up - time.monotonic() <= 0:
                        raise wait_timeout(name, timeout)
                    await self.kv.lease_keepalive(lease_id)
        finally:
            if not won:
                await revoke_quietly(self.kv, lease_id)

    async def _held(self, name: str, token: int, owner: str | None, mode: Mode) -> KeyValue:
        kvs, _ = await self._contenders(name)
        mine = next((kv for kv in kvs if kv.create_revision == token), None)
        if (
            mine is None or _mode(mine) != mode or _blocker(kvs, mine) is not None
            or (owner is not None and decode_holder(mine.value).owner != owner)
        ):  # fmt: skip
            raise not_held(name, token)
        return mine

    async def release(self, name: str, token: int, mode: Mode, *, owner: str | None = None) -> None:
        kv = await self._held(name, token, owner, mode)
        try:
            await self.kv.lease_revoke(kv.lease)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(name, token) from None
            raise

    async def downgrade(self, name: str, token: int, *, owner: str | None = None) -> RWHolding:
        """Turn a write holding into a read one, keeping its place and token."""
        kv = await self._held(name, token, owner, "write")
        h = decode_holder(kv.value)
        r = await self.kv.transaction(
            [Compare(kv.key, "mod_revision", "==", kv.mod_revision)],
            [PutOp(kv.key, encode(Holder(h.owner, h.label, permits=0, ttl=h.ttl)), lease=kv.lease)],
        )
        if not r.succeeded:
            raise not_held(name, token)
        return RWHolding(name=name, mode="read", holder=h.label, owner=h.owner, token=token, lease_id=kv.lease)

    async def status(self, name: str) -> RWLockState:
        kvs, _ = await self._contenders(name)
        holding = [_holding(name, kv) for kv in kvs if _blocker(kvs, kv) is None]
        mode = "free" if not holding else holding[0].mode
        pending = sum(1 for kv in kvs if _mode(kv) == "write" and _blocker(kvs, kv) is not None)
        return RWLockState(name=name, mode=mode, holders=holding, pending_writers=pending)
