"""Work that one node of a cluster does at a time (firing plugin timers,
delivering hook events): a :class:`ClusterDuty`.

Each node stands in an election under ``__cluster:duty:`` — reserved, so no
client can campaign for a duty. The leader runs ``work`` and renews its
candidacy every ``ttl / 3`` seconds; a node that stops resigns, so another
takes over at once, and one that dies is replaced within ``ttl``. A leader
that cannot renew (its lease expired during a pause, storage unreachable for
two thirds of the TTL) cancels its work and stands again. Between a leader's
last renewal and its lease's expiry two nodes may briefly both run: duties
are at-least-once and keep their progress in the store.

A node that restarts (same ``node_id``) first drops the candidacies its
previous process left: that process is gone, so waiting out their TTL would
only leave the duty undone for that long. A node id is generated once and
kept in the data directory (or set in the config); two live processes with
one id would take the duty from each other this way once, at start, then
elect as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aspen.coordination.election import Elections, Leader
from aspen.coordination.space import MAX_WAIT_SECONDS, decode_holder, revoke_quietly
from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger("aspen.coordination.duty")

DUTY_SPACE = "__cluster:duty:"
DEFAULT_TTL = 10
RETRY_SECONDS = 1.0


class ClusterDuty:
    def __init__(
        self,
        kv: KeyValueStore,
        name: str,
        node_id: str,
        work: Callable[[], Awaitable[None]],
        *,
        ttl: int = DEFAULT_TTL,
    ) -> None:
        self.name = name
        self.node_id = node_id
        self.ttl = ttl
        self._work = work
        self._elections = Elections(kv, space=DUTY_SPACE)
        self._task: asyncio.Task | None = None
        self.leader: Leader | None = None  # set while this node holds the duty

    @property
    def leading(self) -> bool:
        return self.leader is not None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"duty-{self.name}")

    async def stop(self) -> None:
        """Stop working and resign, so another node takes the duty now."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _drop_previous_candidacies(self) -> None:
        for kv in await self._elections.candidates(self.name):
            if kv.lease and decode_holder(kv.value).owner == self.node_id:
                log.info("duty %s: dropping candidacy %d of this node's previous process", self.name, kv.lease)
                await revoke_quietly(self._elections.kv, kv.lease)

    async def _run(self) -> None:
        try:
            await self._drop_previous_candidacies()
        except AspenError as exc:  # storage unreachable: they expire within their TTL anyway
            log.warning("duty %s: cannot look for previous candidacies: %s", self.name, exc)
        while True:
            try:
                leader = await self._elections.campaign(
                    self.name, candidate=self.node_id, owner=self.node_id, ttl=self.ttl, timeout=MAX_WAIT_SECONDS
                )
            except AspenError as exc:
                if exc.code != ErrorCode.COORD_WAIT_TIMEOUT:
                    log.warning("duty %s: cannot stand: %s", self.name, exc)
                    await asyncio.sleep(RETRY_SECONDS)
                continue
            self.leader = leader
            log.info("duty %s: this node (%s) leads", self.name, self.node_id)
            try:
                await self._lead(leader)
            finally:
                self.leader = None
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._elections.resign(self.name, leader.lease_id))

    async def _lead(self, leader: Leader) -> None:
        """Run the work while the candidacy renews; return when either ends."""
        work = asyncio.create_task(self._work(), name=f"duty-{self.name}-work")
        renewed = time.monotonic()
        try:
            while True:
                done, _ = await asyncio.wait({work}, timeout=self.ttl / 3)
                if done:
                    if not work.cancelled() and work.exception() is not None:
                        log.error("duty %s: work failed", self.name, exc_info=work.exception())
                    await asyncio.sleep(RETRY_SECONDS)
                    return
                try:
                    await self._elections.renew(self.name, leader.lease_id, owner=self.node_id)
                    renewed = time.monotonic()
                except AspenError as exc:
                    lost = exc.code == ErrorCode.ELECTION_NOT_LEADER
                    if lost or time.monotonic() - renewed > self.ttl * 2 / 3:
                        log.warning("duty %s: lost the lead: %s", self.name, exc)
                        return
        finally:
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
