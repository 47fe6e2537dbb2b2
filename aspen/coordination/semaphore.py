"""Counting semaphores with per-holder leases.

``__coord:sem:{name}`` holds the capacity; every grant is its own key
``…:h:{lease id}`` attached to its own lease, holding the holder and its
permit count, so a dead holder's permits come back when its lease expires.
Acquire reads the guard and the holders in one snapshot and commits only
if the guard's version is still the one read, bumping it — so concurrent
acquires serialise and the permits in use never exceed the capacity;
releases and expiries only free permits and need no guard. A blocked
acquire waits on a watch of the holders for a delete.
"""

from __future__ import annotations

import time

import msgspec

from aspen import clock
from aspen.coordination.space import (
    CAS_RETRIES,
    Holder,
    base_key,
    check_ttl,
    check_wait,
    conflict,
    decode_holder,
    encode,
    is_delete,
    revoke_quietly,
    wait_for,
    wait_timeout,
)
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import Compare, GetOp, PutOp, RangeOp

MAX_CAPACITY = 1_000_000
MAX_HOLDERS = 256
DEFAULT_TTL = 30


class Permit(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    permit_id: int  # the grant's lease: release and renew name it
    holder: str
    owner: str
    permits: int
    token: int  # the grant key's create revision (increases per grant)
    deadline_ms: int = 0


class SemaphoreState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    capacity: int
    in_use: int
    holders: list[Permit]


class _Guard(msgspec.Struct, frozen=True):
    capacity: int


_guard = msgspec.msgpack.Decoder(_Guard)


def check_capacity(capacity: object) -> int:
    if not isinstance(capacity, int) or isinstance(capacity, bool) or not 1 <= capacity <= MAX_CAPACITY:
        raise AspenError(
            ErrorCode.SEMAPHORE_PERMITS_OUT_OF_RANGE, f"capacity must be 1..{MAX_CAPACITY}, got {capacity!r}",
            max=MAX_CAPACITY,
        )  # fmt: skip
    return capacity


def not_held(name: str, permit_id: int) -> AspenError:
    return AspenError(
        ErrorCode.SEMAPHORE_NOT_HELD, f"semaphore {name!r} has no grant {permit_id}", name=name, permit_id=permit_id
    )


class Semaphores:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def keys(name: str) -> tuple[str, str]:
        guard = base_key("sem", name)
        return guard, guard + ":h:"

    def _permits(self, name: str, kvs: list) -> list[Permit]:
        out = []
        for kv in kvs:
            h = decode_holder(kv.value)
            out.append(
                Permit(
                    name=name,
                    permit_id=kv.lease,
                    holder=h.label,
                    owner=h.owner,
                    permits=h.permits,
                    token=kv.create_revision,
                )
            )
        return out

    async def _snapshot(self, name: str) -> tuple[int | None, int, list[Permit], int]:
        """(stored capacity, guard version, holders, revision) at one revision."""
        guard, holders = self.keys(name)
        r = await self.kv.transaction([], [GetOp(guard), RangeOp(holders, limit=MAX_HOLDERS + 1)])
        g = r.results[0].kv
        return (
            (None if g is None else _guard.decode(g.value).capacity),
            (0 if g is None else g.version),
            self._permits(name, r.results[1].kvs),
            r.revision,
        )

    async def try_acquire(
        self, name: str, capacity: int, permits: int = 1, *, holder: str = "", owner: str = "", ttl: int = DEFAULT_TTL
    ) -> Permit | None:
        capacity, ttl = check_capacity(capacity), check_ttl(ttl)
        got, _ = await self._try(name, capacity, permits, holder, owner, ttl)
        return got

    async def _try(
        self, name: str, capacity: int, permits: int, holder: str, owner: str, ttl: int
    ) -> tuple[Permit | None, int]:
        if not isinstance(permits, int) or isinstance(permits, bool) or not 1 <= permits <= capacity:
            raise AspenError(
                ErrorCode.SEMAPHORE_PERMITS_OUT_OF_RANGE,
                f"permits must be 1..{capacity}, got {permits!r}",
                max=capacity,
            )
        guard, holders_prefix = self.keys(name)
        lease_id = 0
        try:
            for _ in range(CAS_RETRIES):
                stored, version, holders, revision = await self._snapshot(name)
                if stored is not None and stored != capacity and holders:
                    raise AspenError(
                        ErrorCode.SEMAPHORE_CAPACITY_MISMATCH,
                        f"semaphore {name!r} has capacity {stored} while held, not {capacity}",
                        capacity=stored,
                    )
                if sum(p.permits for p in holders) + permits > capacity:
                    return None, revision
                if len(holders) >= MAX_HOLDERS:
                    raise AspenError(
                        ErrorCode.SEMAPHORE_TOO_MANY_HOLDERS,
                        f"semaphore {name!r} has {MAX_HOLDERS} holders",
                        max=MAX_HOLDERS,
                    )
                if not lease_id:
                    lease_id = (await self.kv.lease_grant(ttl)).id
                    granted_ms = clock.now_ms()
                key = f"{holders_prefix}{lease_id}"
                record = encode(Holder(owner, holder, permits=permits, ttl=ttl))
                r = await self.kv.transaction(
                    [Compare(guard, "version", "==", version)],
                    [PutOp(guard, encode(_Guard(capacity))), PutOp(key, record, lease=lease_id)],
                )
                if r.succeeded:
                    permit_id, lease_id = lease_id, 0
                    return Permit(
                        name=name, permit_id=permit_id, holder=holder, owner=owner, permits=permits,
                        token=r.revision, deadline_ms=granted_ms + ttl * 1000,
                    ), r.revision  # fmt: skip
            raise conflict(guard)
        finally:
            if lease_id:
                await revoke_quietly(self.kv, lease_id)

    async def acquire(
        self, name: str, capacity: int, permits: int = 1, *, holder: str = "", owner: str = "",
        ttl: int = DEFAULT_TTL, timeout: float = 10.0,
    ) -> Permit:  # fmt: skip
        """Wait (on a watch of the holders, up to ``timeout``) for ``permits``."""
        capacity, ttl, timeout = check_capacity(capacity), check_ttl(ttl), check_wait(timeout)
        give_up = time.monotonic() + timeout
        _, prefix = self.keys(name)
        while True:
            got, revision = await self._try(name, capacity, permits, holder, owner, ttl)
            if got is not None:
                return got
            if not await wait_for(self.kv, prefix, revision, give_up - time.monotonic(), is_delete):
                raise wait_timeout(name, timeout)

    async def _grant(self, name: str, permit_id: int, owner: str | None):
        _, prefix = self.keys(name)
        if not isinstance(permit_id, int) or isinstance(permit_id, bool) or permit_id <= 0:
            raise not_held(name, permit_id)
        kv = await self.kv.get(f"{prefix}{permit_id}")
        if kv is None or (owner is not None and decode_holder(kv.value).owner != owner):
            raise not_held(name, permit_id)
        return kv

    async def release(self, name: str, permit_id: int, *, owner: str | None = None) -> None:
        await self._grant(name, permit_id, owner)
        try:
            await self.kv.lease_revoke(permit_id)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(name, permit_id) from None
            raise

    async def renew(self, name: str, permit_id: int, *, owner: str | None = None) -> int:
        """Restart a grant's TTL; returns the new deadline (ms)."""
        await self._grant(name, permit_id, owner)
        try:
            info = await self.kv.lease_keepalive(permit_id)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_held(name, permit_id) from None
            raise
        return clock.now_ms() + max(0, info.remaining_ttl) * 1000

    async def status(self, name: str) -> SemaphoreState:
        stored, _, holders, _ = await self._snapshot(name)
        return SemaphoreState(name=name, capacity=stored or 0, in_use=sum(p.permits for p in holders), holders=holders)
