"""Cluster announcements: who a cluster is, where its nodes answer and
which apps it serves, signed by the cluster key.

What a receiver checks, in this order (each refusal counted by outcome):
size (≤ 4 KiB, before decoding) → strict decode and limits → signature →
blocked → not yet valid / expired → HLC: an announcement not newer than the
one kept for that cluster is a replay (equal) or stale (older) and dropped.
The cache holds at most 1 024 clusters; when full, the entry closest to
expiry goes. Entries are dropped once expired (≈ 3 announce intervals), so
an app a cluster stopped announcing disappears from the view.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.federation.apps import MAX_APPS, AppManifest, check_app
from aspen.federation.identity import ClusterIdentity, canonical, is_key_hex, verify

MAX_ANNOUNCEMENT_BYTES = 4096
MAX_CACHED_CLUSTERS = 1024
MAX_NODE_URLS = 16
MAX_URL_BYTES = 256
MAX_LIFETIME_MS = 86_400_000
CLOCK_SKEW_MS = 300_000
ANNOUNCE_DOMAIN = b"aspen:cluster-announcement:v1\x00"


class ClusterAnnouncement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cluster_key: str
    name: str
    node_urls: tuple[str, ...]
    apps: tuple[AppManifest, ...]
    issued_at_ms: int
    expires_at_ms: int
    hlc: int  # per cluster, strictly increasing: (wall ms << 16) + counter
    version: int = 1


class SignedAnnouncement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    announcement: ClusterAnnouncement
    signature: str  # 128 hex over ANNOUNCE_DOMAIN || canonical(announcement)


_decoder = msgspec.json.Decoder(SignedAnnouncement)


def _invalid(message: str) -> AspenError:
    return AspenError(ErrorCode.FEDERATION_ANNOUNCEMENT_INVALID, message)


def check_size(n: int) -> None:
    if n > MAX_ANNOUNCEMENT_BYTES:
        raise AspenError(
            ErrorCode.MESSAGE_TOO_LARGE,
            f"an announcement is at most {MAX_ANNOUNCEMENT_BYTES} bytes, this one {n}",
            size=n,
            max=MAX_ANNOUNCEMENT_BYTES,
        )


def decode(raw: bytes) -> SignedAnnouncement:
    """Size first, then a strict decode and every limit; the signature is checked by the caller."""
    check_size(len(raw))
    try:
        signed = _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise _invalid(f"malformed announcement: {exc}") from None
    a = signed.announcement
    if a.version != 1 or not is_key_hex(a.cluster_key):
        raise _invalid("unknown version or a cluster key that is not 64 hex")
    if not 0 < len(a.name.encode()) <= 128:
        raise _invalid("the cluster name must be 1-128 bytes")
    if len(a.node_urls) > MAX_NODE_URLS or any(
        len(u.encode()) > MAX_URL_BYTES or not u.startswith(("http://", "https://")) for u in a.node_urls
    ):
        raise _invalid(f"at most {MAX_NODE_URLS} http(s) node URLs of {MAX_URL_BYTES} bytes")
    if len(a.apps) > MAX_APPS or len({app.app_id for app in a.apps}) != len(a.apps):
        raise _invalid(f"at most {MAX_APPS} apps, each once")
    try:
        for app in a.apps:
            check_app(app)
    except AspenError as exc:
        raise _invalid(exc.message) from None
    if not 0 < a.expires_at_ms - a.issued_at_ms <= MAX_LIFETIME_MS or a.hlc < 0:
        raise _invalid("an announcement lives 1 ms to 24 h and has a non-negative hlc")
    return signed


class Announcer:
    """Signs this cluster's announcements with a strictly increasing HLC."""

    def __init__(self, identity: ClusterIdentity, lifetime_ms: int) -> None:
        self.identity = identity
        self.lifetime_ms = lifetime_ms
        self._hlc = 0

    def next_hlc(self) -> int:
        self._hlc = max(now_ms() << 16, self._hlc + 1)
        return self._hlc

    def sign(self, node_urls: list[str], apps: list[AppManifest]) -> bytes:
        """The wire bytes; apps that do not fit in 4 KiB are left out (the caller logs)."""
        issued = now_ms()
        kept = sorted(apps, key=lambda a: a.app_id)
        while True:
            a = ClusterAnnouncement(
                cluster_key=self.identity.key_hex,
                name=self.identity.name,
                node_urls=tuple(node_urls[:MAX_NODE_URLS]),
                apps=tuple(kept),
                issued_at_ms=issued,
                expires_at_ms=issued + self.lifetime_ms,
                hlc=self.next_hlc(),
            )
            signed = SignedAnnouncement(a, self.identity.sign(ANNOUNCE_DOMAIN, canonical(a)))
            raw = msgspec.json.encode(signed)
            if len(raw) <= MAX_ANNOUNCEMENT_BYTES or not kept:
                return raw
            kept.pop()


class DiscoveredCluster(msgspec.Struct, frozen=True):
    cluster_key: str
    name: str
    node_urls: tuple[str, ...]
    apps: tuple[AppManifest, ...]
    hlc: int
    expires_at_ms: int
    received_at_ms: int
    via: str  # where it came from: a peer URL or "pull"
    raw: bytes  # the signed bytes, relayed unchanged


class AnnouncementCache:
    """The announcements of other clusters that passed every check."""

    def __init__(self, own_key: str, is_blocked: Callable[[str], bool], count: Callable[[str], None]) -> None:
        self.own_key = own_key
        self.is_blocked = is_blocked
        self.count = count  # outcome -> counter increment
        self._entries: dict[str, DiscoveredCluster] = {}

    def accept(self, raw: bytes, via: str) -> DiscoveredCluster:
        """Check and keep one announcement; raises the refusal (already counted)."""
        try:
            found = self._check(raw, via)
        except AspenError as exc:
            replay = exc.details.get("replay") is True
            self.count("replayed" if replay else _OUTCOMES.get(exc.code, "invalid"))
            raise
        self.count("accepted")
        return found

    def _check(self, raw: bytes, via: str) -> DiscoveredCluster:
        signed = decode(raw)
        a = signed.announcement
        if not verify(a.cluster_key, ANNOUNCE_DOMAIN, canonical(a), signed.signature):
            raise AspenError(ErrorCode.INVALID_SIGNATURE, "the announcement is not signed by the cluster key it names")
        if a.cluster_key == self.own_key:
            raise AspenError(ErrorCode.FEDERATION_ANNOUNCEMENT_STALE, "this cluster's own announcement")
        if self.is_blocked(a.cluster_key):
            raise AspenError(ErrorCode.FEDERATION_CLUSTER_BLOCKED, f"cluster {a.cluster_key[:16]} is blocked")
        now = now_ms()
        if a.issued_at_ms > now + CLOCK_SKEW_MS:
            raise _invalid("the announcement is issued in the future")
        if a.expires_at_ms <= now:
            raise AspenError(ErrorCode.FEDERATION_ANNOUNCEMENT_EXPIRED, "the announcement has expired")
        kept = self._entries.get(a.cluster_key)
        if kept is not None and a.hlc <= kept.hlc:
            what = "a replay of the kept announcement" if a.hlc == kept.hlc else "older than the kept announcement"
            raise AspenError(ErrorCode.FEDERATION_ANNOUNCEMENT_STALE, what, replay=a.hlc == kept.hlc)
        entry = DiscoveredCluster(a.cluster_key, a.name, a.node_urls, a.apps, a.hlc, a.expires_at_ms, now, via, raw)
        self._entries[a.cluster_key] = entry
        if len(self._entries) > MAX_CACHED_CLUSTERS:
            stalest = min(self._entries.values(), key=lambda e: e.expires_at_ms)
            del self._entries[stalest.cluster_key]
            self.count("evicted")
        return entry

    def live(self) -> list[DiscoveredCluster]:
        """Unexpired, not blocked entries; expired ones are dropped here."""
        now = now_ms()
        for key in [k for k, e in self._entries.items() if e.expires_at_ms <= now]:
            del self._entries[key]
        return sorted((e for e in self._entries.values() if not self.is_blocked(e.cluster_key)), key=lambda e: e.name)

    def get(self, key: str) -> DiscoveredCluster | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires_at_ms > now_ms() else None

    def forget(self, key: str) -> None:
        self._entries.pop(key, None)


_OUTCOMES = {
    ErrorCode.MESSAGE_TOO_LARGE: "oversized",
    ErrorCode.FEDERATION_ANNOUNCEMENT_INVALID: "invalid",
    ErrorCode.INVALID_SIGNATURE: "forged",
    ErrorCode.FEDERATION_ANNOUNCEMENT_EXPIRED: "expired",
    ErrorCode.FEDERATION_ANNOUNCEMENT_STALE: "stale",
    ErrorCode.FEDERATION_CLUSTER_BLOCKED: "blocked",
}


class TokenBucket:
    """``rate`` per second, at most ``burst`` at once."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
