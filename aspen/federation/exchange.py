"""Announcements between clusters over HTTP: push this cluster's own to
every configured peer each interval, pull a peer's on start and on demand,
and relay newly accepted announcements onward (with a hop bound).

``POST /v1/federation/announce`` takes the signed bytes (header
``X-Aspen-Hops``: how far it has travelled); ``GET
/v1/federation/announcement`` answers this cluster's own. Neither takes a
token: an announcement is authenticated by the cluster key's signature.
Before anything is decoded a request passes a global and a per-sender rate
limit and the 4 KiB size limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import httpx
import msgspec
from packaging.version import InvalidVersion, Version

from aspen.cluster.membership import list_nodes
from aspen.errors import AspenError, ErrorCode
from aspen.federation.announcements import (
    MAX_ANNOUNCEMENT_BYTES,
    AnnouncementCache,
    Announcer,
    DiscoveredCluster,
    TokenBucket,
)
from aspen.federation.apps import AppManifest, list_apps
from aspen.federation.config import FederationConfig

log = logging.getLogger(__name__)

HOPS_HEADER = "x-aspen-hops"
ANNOUNCE_PATH = "/v1/federation/announce"
ANNOUNCEMENT_PATH = "/v1/federation/announcement"
TRUST_REQUEST_PATH = "/v1/federation/trust-request"
GLOBAL_RATE, GLOBAL_BURST = 100.0, 200.0  # announcements per second from everyone
SENDER_RATE, SENDER_BURST = 10.0, 30.0  # per sending address
MAX_SENDERS = 512


def _version_key(text: str) -> Version:
    try:
        return Version(text)
    except InvalidVersion:
        return Version("0")


class Exchange:
    def __init__(
        self,
        node: Any,
        config: FederationConfig,
        announcer: Announcer,
        cache: AnnouncementCache,
        *,
        relay_to: Callable[[DiscoveredCluster], list[str]],
        push_to: Callable[[], list[str]],
        count: Callable[[str], None],
        verify: Any = True,
    ) -> None:
        self.node = node
        self.config = config
        self.announcer = announcer
        self.cache = cache
        self.relay_to = relay_to  # peer URLs an accepted announcement goes on to
        self.push_to = push_to  # where this cluster's own announcement goes each interval
        self.count = count
        self.http = httpx.AsyncClient(verify=verify, timeout=httpx.Timeout(5.0, connect=2.0))
        self._global = TokenBucket(GLOBAL_RATE, GLOBAL_BURST)
        self._senders: OrderedDict[str, TokenBucket] = OrderedDict()
        self._task: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()

    # --- this cluster's announcement --------------------------------------

    async def own(self) -> bytes:
        kv = self.node.kv
        urls = [n.url for n in await list_nodes(kv)] or [self.node.config.advertise_url]
        apps: dict[str, AppManifest] = {}
        for view in sorted(await list_apps(kv), key=lambda v: _version_key(v.version)):
            # one manifest per app: the highest version any node serves (nodes mid-upgrade serve two)
            apps[view.app_id] = AppManifest(view.app_id, view.version, view.name, view.capabilities, view.request_types)
        return self.announcer.sign(urls, list(apps.values()))

    # --- receiving --------------------------------------------------------

    def admit(self, sender: str) -> None:
        """Rate limits, before anything is read: global, then per sender."""
        bucket = self._senders.get(sender)
        if bucket is None:
            bucket = self._senders[sender] = TokenBucket(SENDER_RATE, SENDER_BURST)
            if len(self._senders) > MAX_SENDERS:
                self._senders.popitem(last=False)
        self._senders.move_to_end(sender)
        if not self._global.take() or not bucket.take():
            self.count("rate_limited")
            raise AspenError(ErrorCode.FEDERATION_RATE_LIMITED, "too many announcements; slow down")

    def receive(self, raw: bytes, via: str, hops: int) -> DiscoveredCluster:
        entry = self.cache.accept(raw, via)
        if hops < self.config.gossip_hops:
            for url in self.relay_to(entry):
                if url != via:
                    self._spawn(self._post(url, raw, hops + 1))
        return entry

    # --- sending ----------------------------------------------------------

    async def _post(self, url: str, raw: bytes, hops: int) -> None:
        try:
            resp = await self.http.post(
                url.rstrip("/") + ANNOUNCE_PATH,
                content=raw,
                headers={"content-type": "application/json", HOPS_HEADER: str(hops)},
            )
            if resp.status_code >= 400 and resp.status_code != 409:  # 409: it had this one already
                log.info("peer %s refused an announcement: %s", url, resp.text[:200])
        except httpx.HTTPError as exc:
            log.info("peer %s unreachable for announcements: %r", url, exc)

    async def pull(self, url: str) -> DiscoveredCluster:
        """Fetch a peer's own announcement and take it like a pushed one."""
        try:
            resp = await self.http.get(url.rstrip("/") + ANNOUNCEMENT_PATH)
        except httpx.HTTPError as exc:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"peer {url} unreachable: {exc!r}") from None
        if resp.status_code != 200:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"peer {url} answered {resp.status_code}")
        if len(resp.content) > MAX_ANNOUNCEMENT_BYTES:
            self.count("oversized")
            raise AspenError(ErrorCode.MESSAGE_TOO_LARGE, f"peer {url} sent more than {MAX_ANNOUNCEMENT_BYTES} bytes")
        return self.receive(resp.content, url, 0)

    async def pull_all(self) -> tuple[list[DiscoveredCluster], list[str]]:
        results = await asyncio.gather(*(self.pull(u) for u in self.config.peers), return_exceptions=True)
        got = [r for r in results if isinstance(r, DiscoveredCluster)]
        errors = [f"{u}: {r}" for u, r in zip(self.config.peers, results, strict=True) if isinstance(r, BaseException)]
        return got, errors

    async def push_all(self) -> None:
        raw = await self.own()
        await asyncio.gather(*(self._post(u, raw, 0) for u in self.push_to()))

    async def request_trust(self, url: str, identity: Any, message: str) -> str:
        """Send this cluster's signed identity to ``url``'s pending trust requests."""
        if not url.startswith(("http://", "https://")) or len(url) > 256:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "url must be an http(s) URL of at most 256 characters")
        body = msgspec.json.encode({"identity": identity, "message": message})
        try:
            resp = await self.http.post(url.rstrip("/") + TRUST_REQUEST_PATH, content=body,
                                        headers={"content-type": "application/json"})  # fmt: skip
        except httpx.HTTPError as exc:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"cluster at {url} unreachable: {exc!r}") from None
        try:
            answer = resp.json()
        except ValueError:
            raise AspenError(ErrorCode.PEER_UNAVAILABLE, f"{url} answered {resp.status_code}, not JSON") from None
        if resp.status_code >= 400:
            raise AspenError.from_body(answer.get("body", {}))
        return str(answer.get("status"))

    # --- lifecycle --------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aspen-federation-exchange")

    async def _run(self) -> None:
        with contextlib.suppress(AspenError):
            await self.pull_all()
        while True:
            try:
                await self.push_all()
            except AspenError as exc:
                if exc.code == ErrorCode.STORE_CLOSED:
                    return
                log.warning("announcing this cluster failed: %s", exc)
            await asyncio.sleep(self.config.announce_interval)

    async def stop(self) -> None:
        for task in [self._task, *self._background]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self.http.aclose()
