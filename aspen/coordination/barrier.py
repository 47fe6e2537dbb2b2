"""Double barriers (etcd's recipe): ``enter`` blocks until ``count``
participants have entered, then releases them all at once; ``leave``
blocks until every participant has left, so the barrier can be used again.

Each participant is ``__coord:barrier:{name}:p:{lease}`` on a lease of its
TTL (a dead participant's key goes with its lease); the participant that
completes the count puts ``…:ready``, whose put every waiter is watching.
The last to leave deletes it.
"""

from __future__ import annotations

import time

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
from aspen.storage.records import Compare, DeleteOp, GetOp, PutOp, RangeOp

MAX_PARTICIPANTS = 1000
DEFAULT_TTL = 60


class BarrierState(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    participants: int
    is_ready: bool  # entered by enough participants and not yet left by all
    participant_id: int = 0  # ours (the lease): leave names it


def check_count(count: object) -> int:
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_PARTICIPANTS:
        raise AspenError(
            ErrorCode.BARRIER_COUNT_OUT_OF_RANGE,
            f"count must be 1..{MAX_PARTICIPANTS}, got {count!r}",
            max=MAX_PARTICIPANTS,
        )
    return count


class Barriers:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv

    @staticmethod
    def keys(name: str) -> tuple[str, str]:
        base = base_key("barrier", name)
        return base + ":p:", base + ":ready"

    async def enter(
        self,
        name: str,
        count: int,
        *,
        participant: str = "",
        owner: str = "",
        ttl: int = DEFAULT_TTL,
        timeout: float = 10.0,
    ) -> BarrierState:
        count, ttl, timeout = check_count(count), check_ttl(ttl), check_wait(timeout)
        prefix, ready = self.keys(name)
        give_up = time.monotonic() + timeout
        lease_id = (await self.kv.lease_grant(ttl)).id
        entered = False
        try:
            r = await self.kv.transaction(
                [], [PutOp(f"{prefix}{lease_id}", encode(Holder(owner, participant, ttl=ttl)), lease=lease_id),
                     RangeOp(prefix, limit=MAX_PARTICIPANTS + 1), GetOp(ready)],
            )  # fmt: skip
            present = len(r.results[1].kvs)
            if present > MAX_PARTICIPANTS:
                raise AspenError(
                    ErrorCode.BARRIER_COUNT_OUT_OF_RANGE, f"barrier {name!r} is full", max=MAX_PARTICIPANTS
                )
            if r.results[2].kv is None and present >= count:
                await self.kv.put(ready, b"")
            elif r.results[2].kv is None:
                opened = await wait_for(self.kv, ready, r.revision, give_up - time.monotonic(),
                                        lambda e: e.type == "put" and e.kv.key == ready)  # fmt: skip
                if not opened:
                    raise wait_timeout(name, timeout)
            entered = True
            return BarrierState(name=name, participants=max(present, count), is_ready=True, participant_id=lease_id)
        finally:
            if not entered:
                await revoke_quietly(self.kv, lease_id)

    async def leave(
        self, name: str, participant_id: int, *, owner: str | None = None, timeout: float = 10.0
    ) -> BarrierState:
        """Leave, then wait until everyone has (the barrier is then reset).
        ``owner`` (None: anyone, in-process) must be the one that entered."""
        timeout = check_wait(timeout)
        prefix, ready = self.keys(name)
        give_up = time.monotonic() + timeout
        if not isinstance(participant_id, int) or isinstance(participant_id, bool) or participant_id <= 0:
            raise AspenError(ErrorCode.BARRIER_NOT_ENTERED, f"{participant_id!r} is not in barrier {name!r}")
        mine = await self.kv.get(f"{prefix}{participant_id}")
        if mine is None or (owner is not None and decode_holder(mine.value).owner != owner):
            raise AspenError(ErrorCode.BARRIER_NOT_ENTERED, f"{participant_id} is not in barrier {name!r}")
        await revoke_quietly(self.kv, participant_id)
        while True:
            r = await self.kv.transaction([], [RangeOp(prefix, limit=1)])
            if not r.results[0].kvs:
                await self.kv.transaction([Compare(ready, "exists", "==", True)], [DeleteOp(ready)])
                return BarrierState(name=name, participants=0, is_ready=False)
            left = give_up - time.monotonic()
            if not await wait_for(self.kv, prefix, r.revision, left, lambda e: e.type == "delete"):
                raise wait_timeout(name, timeout)

    async def status(self, name: str) -> BarrierState:
        prefix, ready = self.keys(name)
        r = await self.kv.transaction([], [RangeOp(prefix, limit=MAX_PARTICIPANTS + 1), GetOp(ready)])
        return BarrierState(name=name, participants=len(r.results[0].kvs), is_ready=r.results[1].kv is not None)
