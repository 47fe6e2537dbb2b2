"""Which clusters this one trusts, blocks, or has been asked to trust.

``__federation:trust:{key}`` holds a :class:`TrustEntry` (level trusted or
blocked, and for trusted ones the apps and callers it may use here); a key
with no entry is *public*. Every node loads the entries at start and
follows them with a watch, so a change through any node holds on all of
them within a second. ``__federation:pending:{key}`` holds a trust request
another cluster sent (its signed identity); it expires after an hour.
Trusting removes a block and blocking removes trust: one entry per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Literal

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.federation.identity import SignedIdentity, is_key_hex
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

TRUST_PREFIX = "__federation:trust:"
PENDING_PREFIX = "__federation:pending:"
MAX_TRUSTED = 256
MAX_BLOCKED = 256
MAX_PENDING = 64
PENDING_TTL_MS = 3_600_000
MAX_NOTES_BYTES = 1024
MAX_SCOPE = 64  # apps or callers listed in one entry
ANY = "*"
Level = Literal["trusted", "blocked"]


class TrustEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cluster_key: str
    level: Level
    name: str
    since_ms: int
    notes: str = ""
    apps: tuple[str, ...] = (ANY,)  # the apps it may call here through the proxy
    callers: tuple[str, ...] = (ANY,)  # the caller subjects (on its side) it may forward


class PendingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    identity: SignedIdentity
    received_at_ms: int
    message: str = ""

    @property
    def expired(self) -> bool:
        return now_ms() - self.received_at_ms >= PENDING_TTL_MS


_entry = msgspec.json.Decoder(TrustEntry)
_pending = msgspec.json.Decoder(PendingRequest)


def check_key(key: object) -> str:
    if not is_key_hex(key):
        raise AspenError(
            ErrorCode.INVALID_ARGUMENT, "a cluster key is 64 lowercase hex characters", field="cluster_key"
        )
    return key  # type: ignore[return-value]


def check_entry(e: TrustEntry) -> TrustEntry:
    check_key(e.cluster_key)
    if not 0 < len(e.name.encode()) <= 128 or len(e.notes.encode()) > MAX_NOTES_BYTES:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, "name is 1-128 bytes and notes at most 1024")
    for field in ("apps", "callers"):
        values = getattr(e, field)
        if not values or len(values) > MAX_SCOPE or any(not v or len(v.encode()) > 128 for v in values):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{field}: 1-{MAX_SCOPE} names of 1-128 bytes", field=field)
    return e


class TrustStore:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self._entries: dict[str, TrustEntry] = {}
        self._task: asyncio.Task | None = None

    # --- reads (in memory: the hot path asks these) ------------------------

    def level(self, key: str) -> str:
        entry = self._entries.get(key)
        return entry.level if entry is not None else "public"

    def entry(self, key: str) -> TrustEntry | None:
        return self._entries.get(key)

    def is_blocked(self, key: str) -> bool:
        return self.level(key) == "blocked"

    def entries(self) -> list[TrustEntry]:
        return sorted(self._entries.values(), key=lambda e: (e.level, e.name))

    # --- changes ------------------------------------------------------------

    async def set(self, entry: TrustEntry) -> TrustEntry:
        check_entry(entry)
        same = [e for e in self._entries.values() if e.level == entry.level and e.cluster_key != entry.cluster_key]
        limit = MAX_TRUSTED if entry.level == "trusted" else MAX_BLOCKED
        if len(same) >= limit:
            raise quota_exceeded(f"{entry.level}_clusters", limit, len(same))
        await self.kv.put(TRUST_PREFIX + entry.cluster_key, msgspec.json.encode(entry))
        self._entries[entry.cluster_key] = entry
        await self.kv.delete(PENDING_PREFIX + entry.cluster_key)
        return entry

    async def remove(self, key: str) -> bool:
        check_key(key)
        self._entries.pop(key, None)
        return await self.kv.delete(TRUST_PREFIX + key)

    async def add_request(self, identity: SignedIdentity, message: str) -> str:
        """A trust request another cluster sent: ``trusted`` (nothing to do),
        ``pending`` (kept for an admin), or refused (blocked, bad signature, full)."""
        key = identity.document.cluster_key
        if not identity.is_valid():
            raise AspenError(ErrorCode.INVALID_SIGNATURE, "the identity is not signed by the key it names")
        if len(message.encode()) > MAX_NOTES_BYTES:
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, f"a trust request's message is at most {MAX_NOTES_BYTES} bytes"
            )
        level = self.level(key)
        if level == "blocked":
            raise AspenError(ErrorCode.FEDERATION_CLUSTER_BLOCKED, "this cluster does not take requests from you")
        if level == "trusted":
            return "trusted"
        pending = await self.pending()
        if key not in {p.identity.document.cluster_key for p in pending} and len(pending) >= MAX_PENDING:
            raise quota_exceeded("pending_trust_requests", MAX_PENDING, len(pending))
        record = PendingRequest(identity, now_ms(), message)
        await self.kv.put(PENDING_PREFIX + key, msgspec.json.encode(record))
        return "pending"

    async def pending(self) -> list[PendingRequest]:
        """Unexpired requests, oldest first; expired ones are deleted on the way."""
        out: list[PendingRequest] = []
        page = await self.kv.scan(PENDING_PREFIX, limit=MAX_PENDING * 2)
        for e in page.entries:
            try:
                record = _pending.decode(e.value)
            except msgspec.DecodeError:
                record = None
            if record is None or record.expired:
                await self.kv.delete(e.key)
                continue
            out.append(record)
        return sorted(out, key=lambda r: r.received_at_ms)

    async def take_request(self, key: str) -> PendingRequest:
        check_key(key)
        for record in await self.pending():
            if record.identity.document.cluster_key == key:
                await self.kv.delete(PENDING_PREFIX + key)
                return record
        raise AspenError(ErrorCode.FEDERATION_CLUSTER_UNKNOWN, f"no pending trust request from {key[:16]}…")

    # --- following the store ------------------------------------------------------

    async def _load(self) -> int:
        page = await self.kv.scan(TRUST_PREFIX, limit=MAX_TRUSTED + MAX_BLOCKED + 1)
        entries = {}
        for e in page.entries:
            try:
                entry = _entry.decode(e.value)
                entries[entry.cluster_key] = entry
            except msgspec.DecodeError:
                log.warning("ignoring a malformed trust entry under %s", e.key)
        self._entries = entries
        return page.revision

    async def start(self) -> None:
        revision = await self._load()
        self._task = asyncio.create_task(self._follow(revision + 1), name="aspen-federation-trust")

    async def _follow(self, start: int) -> None:
        while True:
            try:
                async for event in self.kv.watch(TRUST_PREFIX, start):
                    start = event.revision + 1
                    key = event.kv.key[len(TRUST_PREFIX) :]
                    if event.type == "put":
                        with contextlib.suppress(msgspec.DecodeError):
                            self._entries[key] = _entry.decode(event.kv.value)
                    else:
                        self._entries.pop(key, None)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a store hiccup: reload, follow again
                log.warning("trust watch failed (%s); reloading", exc)
                await asyncio.sleep(0.2)
                with contextlib.suppress(Exception):
                    start = await self._load() + 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
