"""Apps: what this cluster serves, by name, for other clusters to find.

A native handler declares ``app_manifest`` (an :class:`AppManifest`); a
WASM plugin whose manifest has ``app_id`` is the app ``app_id`` at the
plugin's version, its tags as capabilities, its handled types as the app's
request types. Nothing else registers: the registry follows the handler
table, so a plugin that is disabled, removed or never came up (a failed
first install) is gone from it with its last version, and a failed upgrade
leaves the old version serving and registered.

Each node writes ``__apps:{app_id}:{node_id}`` on its own lease, rewritten
on every table swap, so every node of a cluster lists the same apps and a
dead node's entries vanish within one TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.rpc.registry import RegistrySnapshot
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

APPS_PREFIX = "__apps:"
MAX_APP_ID = 64
MAX_NAME_BYTES = 128
MAX_CAPABILITIES = 16
MAX_CAPABILITY_BYTES = 64
MAX_REQUEST_TYPES = 64
MAX_APPS = 32  # per cluster, as Rust Aspen's AppRegistry
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_VERSION = re.compile(r"[0-9A-Za-z.+-]{1,64}")
_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
TTL = 10


class AppManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    app_id: str
    version: str
    name: str = ""
    capabilities: tuple[str, ...] = ()
    request_types: tuple[str, ...] = ()  # what the app answers: lets another cluster map a type to the app


class AppRecord(msgspec.Struct, frozen=True):
    app: AppManifest
    provider: str  # "plugin" or "native"
    node_id: str


class AppView(msgspec.Struct, frozen=True):
    """One app as ``aspen app list`` shows it: every node serving that version."""

    app_id: str
    version: str
    name: str
    capabilities: tuple[str, ...]
    request_types: tuple[str, ...]
    provider: str
    nodes: tuple[str, ...]


def check_app(m: AppManifest) -> AppManifest:
    """``INVALID_ARGUMENT`` naming the field unless every limit holds."""

    def bad(field: str, message: str) -> AspenError:
        return AspenError(ErrorCode.INVALID_ARGUMENT, f"app {m.app_id!r}: {message}", field=field)

    if not isinstance(m.app_id, str) or not _APP_ID.fullmatch(m.app_id):
        raise bad("app_id", f"app_id must be 1-{MAX_APP_ID} of [A-Za-z0-9_.-]")
    if not _VERSION.fullmatch(m.version):
        raise bad("version", "version must be 1-64 of [0-9A-Za-z.+-]")
    if len(m.name.encode()) > MAX_NAME_BYTES:
        raise bad("name", f"name exceeds {MAX_NAME_BYTES} bytes")
    if len(m.capabilities) > MAX_CAPABILITIES or any(
        not c or len(c.encode()) > MAX_CAPABILITY_BYTES for c in m.capabilities
    ):
        raise bad("capabilities", f"at most {MAX_CAPABILITIES} capabilities of 1-{MAX_CAPABILITY_BYTES} bytes")
    if len(m.request_types) > MAX_REQUEST_TYPES or not all(_TYPE.fullmatch(t) for t in m.request_types):
        raise bad("request_types", f"at most {MAX_REQUEST_TYPES} request type names")
    return m


def served_apps(snapshot: RegistrySnapshot) -> dict[str, tuple[AppManifest, str]]:
    """app_id -> (manifest, provider) for the handlers in this table; the
    first (lowest priority number) handler of an app wins."""
    found: dict[str, tuple[AppManifest, str]] = {}
    for h in snapshot.handlers:
        manifest = getattr(h, "app_manifest", None)
        provider = "native"
        plugin = getattr(h, "manifest", None)
        if manifest is None and plugin is not None and getattr(plugin, "app_id", None):
            manifest = AppManifest(
                app_id=plugin.app_id,
                version=plugin.version,
                name=plugin.name,
                capabilities=tuple(plugin.tags),
                request_types=tuple(sorted(plugin.handles)),
            )
            provider = "plugin"
        if manifest is None or manifest.app_id in found:
            continue
        try:
            found[check_app(manifest).app_id] = (manifest, provider)
        except AspenError as exc:
            log.error("handler %s is not registered as an app: %s", h.name, exc.message)
    if len(found) > MAX_APPS:
        log.error("%d apps on this node; only the first %d (by id) are registered", len(found), MAX_APPS)
        found = dict(sorted(found.items())[:MAX_APPS])
    return found


_record = msgspec.json.Decoder(AppRecord)


async def list_apps(kv: KeyValueStore) -> list[AppView]:
    """Every app of the cluster, grouped by (app, version, provider), sorted."""
    grouped: dict[tuple[str, str, str], tuple[AppManifest, list[str]]] = {}
    token = None
    while True:
        page = await kv.scan(APPS_PREFIX, continuation=token)
        for entry in page.entries:
            try:
                rec = _record.decode(entry.value)
            except msgspec.DecodeError:
                log.warning("ignoring a malformed app record under %s", entry.key)
                continue
            key = (rec.app.app_id, rec.app.version, rec.provider)
            grouped.setdefault(key, (rec.app, []))[1].append(rec.node_id)
        if not page.is_truncated:
            break
        token = page.continuation_token
    return [
        AppView(a.app_id, a.version, a.name, a.capabilities, a.request_types, provider, tuple(sorted(nodes)))
        for (_, _, provider), (a, nodes) in sorted(grouped.items())
    ]


class AppPublisher:
    """Keeps ``__apps:*:{node_id}`` equal to the apps this node's table serves."""

    def __init__(self, kv: KeyValueStore, registry: Any, node_id: str, *, on_change: Any = None) -> None:
        self.kv = kv
        self.registry = registry
        self.node_id = node_id
        self.on_change = on_change  # called after the published set changed (re-announce)
        self.lease_id = 0
        self._written: dict[str, bytes] = {}
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None

    def key(self, app_id: str) -> str:
        return f"{APPS_PREFIX}{app_id}:{self.node_id}"

    async def start(self) -> None:
        self.lease_id = (await self.kv.lease_grant(TTL)).id
        await self._sync()
        self.registry.add_listener(lambda snap: self._dirty.set())
        self._task = asyncio.get_running_loop().create_task(self._run(), name="aspen-app-publisher")

    async def _sync(self) -> None:
        wanted = {
            self.key(app_id): msgspec.json.encode(AppRecord(m, provider, self.node_id))
            for app_id, (m, provider) in served_apps(self.registry.snapshot()).items()
        }
        changed = False
        for key in [k for k in self._written if k not in wanted]:
            await self.kv.delete(key)
            del self._written[key]
            changed = True
        for key, value in wanted.items():
            if self._written.get(key) != value:
                await self.kv.put(key, value, lease=self.lease_id)
                self._written[key] = value
                changed = True
        if changed and self.on_change is not None:
            self.on_change()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TTL / 3):
                    await self._dirty.wait()
            self._dirty.clear()
            try:
                try:
                    await self.kv.lease_keepalive(self.lease_id)
                except AspenError as exc:
                    if exc.code != ErrorCode.LEASE_NOT_FOUND:
                        raise
                    self.lease_id = (await self.kv.lease_grant(TTL)).id
                    self._written.clear()
                await self._sync()
            except AspenError as exc:
                if exc.code == ErrorCode.STORE_CLOSED:
                    return
                log.warning("app registry refresh failed: %s", exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.lease_id:
            with contextlib.suppress(AspenError):
                await self.kv.lease_revoke(self.lease_id)
            self.lease_id = 0
