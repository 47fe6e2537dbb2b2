"""Leader election: etcd's recipe on the protocol.

Each candidate puts ``__coord:elect:{name}:c:{lease id}`` on a lease of its
TTL; the leader is the candidate with the lowest ``create_revision`` (which
is also its fencing token: it grows with every new leader). A campaign
waits, on a watch, for every older candidacy to go — resigned (lease
revoked) or dead (lease expired) — so a crashed leader is replaced within
its TTL. The leader keeps its lease alive with :meth:`Elections.renew`;
:meth:`Elections.observe` streams leader changes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import msgspec

from aspen.coordination.space import (
    PREFIX,
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
from aspen.storage.records import KeyValue

MAX_CANDIDATES = 1000
DEFAULT_TTL = 15


class Leader(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    candidate: str  # the label the candidate chose
    owner: str
    lease_id: int  # the candidacy: resign and renew name it
    token: int  # fencing token: the candidacy's create revision


def not_leader(name: str, lease_id: int) -> AspenError:
    return AspenError(ErrorCode.ELECTION_NOT_LEADER, f"candidacy {lease_id} does not lead {name!r}", name=name)


class Elections:
    """``space``: where the candidacies live; the node's own duties
    (:mod:`aspen.coordination.duty`) elect under a reserved prefix no
    client can write, so no caller can campaign for them."""

    def __init__(self, kv: KeyValueStore, *, space: str = PREFIX) -> None:
        self.kv = kv
        self.space = space

    def prefix(self, name: str) -> str:
        return self.space + base_key("elect", name).removeprefix(PREFIX) + ":c:"

    def _leader(self, name: str, kv: KeyValue) -> Leader:
        h = decode_holder(kv.value)
        return Leader(name=name, candidate=h.label, owner=h.owner, lease_id=kv.lease, token=kv.create_revision)

    async def _candidates(self, name: str) -> tuple[list[KeyValue], int]:
        page = await self.kv.scan(self.prefix(name), limit=MAX_CANDIDATES + 1)
        return sorted(page.entries, key=lambda kv: kv.create_revision), page.revision

    async def candidates(self, name: str) -> list[KeyValue]:
        """Every candidacy for ``name``, oldest (the leader) first."""
        return (await self._candidates(name))[0]

    async def leader(self, name: str) -> Leader | None:
        found, _ = await self._candidates(name)
        return self._leader(name, found[0]) if found else None

    async def campaign(
        self, name: str, *, candidate: str = "", owner: str = "", ttl: int = DEFAULT_TTL, timeout: float = 10.0
    ) -> Leader:
        """Stand and wait up to ``timeout`` to lead; the candidacy is withdrawn on timeout."""
        ttl, timeout = check_ttl(ttl), check_wait(timeout)
        prefix = self.prefix(name)
        found, _ = await self._candidates(name)
        if len(found) >= MAX_CANDIDATES:
            raise AspenError(
                ErrorCode.ELECTION_TOO_MANY_CANDIDATES, f"{name!r} has {MAX_CANDIDATES} candidates", max=MAX_CANDIDATES
            )
        lease = await self.kv.lease_grant(ttl)
        key, won = f"{prefix}{lease.id}", False
        give_up = time.monotonic() + timeout
        try:
            await self.kv.put(key, encode(Holder(owner, candidate, ttl=ttl)), lease=lease.id)
            while True:
                found, revision = await self._candidates(name)
                mine = next((kv for kv in found if kv.key == key), None)
                if mine is None:
                    raise AspenError(ErrorCode.LEASE_NOT_FOUND, f"the candidacy for {name!r} expired while waiting")
                older = {kv.key for kv in found if kv.create_revision < mine.create_revision}
                if not older:
                    won = True
                    return self._leader(name, mine)
                left = give_up - time.monotonic()
                if not await wait_for(
                    self.kv, prefix, revision, left, lambda e, older=older: is_delete(e) and e.kv.key in older
                ):
                    raise wait_timeout(name, timeout)
                if left > ttl / 2:  # a long wait: keep the candidacy alive
                    await self.kv.lease_keepalive(lease.id)
        finally:
            if not won:
                await revoke_quietly(self.kv, lease.id)

    async def _mine(self, name: str, lease_id: int, owner: str | None) -> Leader:
        current = await self.leader(name)
        if current is None or current.lease_id != lease_id or (owner is not None and current.owner != owner):
            raise not_leader(name, lease_id)
        return current

    async def renew(self, name: str, lease_id: int, *, owner: str | None = None) -> Leader:
        """Keep leading: restart the candidacy's TTL (``ELECTION_NOT_LEADER`` once lost)."""
        current = await self._mine(name, lease_id, owner)
        try:
            await self.kv.lease_keepalive(lease_id)
        except AspenError as exc:
            if exc.code == ErrorCode.LEASE_NOT_FOUND:
                raise not_leader(name, lease_id) from None
            raise
        return current

    async def resign(self, name: str, lease_id: int, *, owner: str | None = None) -> None:
        await self._mine(name, lease_id, owner)
        try:
            await self.kv.lease_revoke(lease_id)
        except AspenError as exc:
            if exc.code != ErrorCode.LEASE_NOT_FOUND:
                raise

    async def observe(self, name: str) -> AsyncIterator[Leader | None]:
        """The leader now, then every change of leader (None: no leader)."""
        prefix = self.prefix(name)
        found, revision = await self._candidates(name)
        current = self._leader(name, found[0]) if found else None
        yield current
        events = self.kv.watch(prefix, start_revision=revision + 1)
        try:
            async for _ in events:
                found, _ = await self._candidates(name)
                now = self._leader(name, found[0]) if found else None
                if now != current:
                    current = now
                    yield current
        finally:
            await events.aclose()
