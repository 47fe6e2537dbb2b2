"""Where installed plugins live: the install record in KV, the module bytes
in the blob store.

``__plugins:manifests:{name}`` holds one :class:`InstalledPlugin`: the
current manifest, the earlier versions kept for rollback, and a
``generation`` that every change bumps (a forced reload too), so each node
can tell "this is the install I already run" from "do it again". Every
write is a compare-and-swap against the value read, so two operators
racing on one plugin get ``PLUGIN_CONFLICT`` rather than a lost update.

Each version's module is protected in the blob store under the tag
``plugin:{name}:{version}`` for as long as the version is current or in the
history; garbage collection may take it after that.

Every node follows changes under ``__plugins:`` (:func:`watch_changes`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import PluginManifest
from aspen.storage.protocol import BlobStore, KeyValueStore

log = logging.getLogger("aspen.plugins.reconciler")

PLUGINS_PREFIX = "__plugins:"
MANIFESTS_PREFIX = "__plugins:manifests:"
TRUST_PREFIX = "__plugins:trust:"
MAX_HISTORY = 8  # earlier versions kept for rollback
SCAN_LIMIT = 1000


class InstalledPlugin(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    manifest: PluginManifest
    generation: int = 1
    history: tuple[PluginManifest, ...] = ()  # earlier versions, oldest first
    installed_at_ms: int = 0
    updated_at_ms: int = 0

    @property
    def name(self) -> str:
        return self.manifest.name


def blob_tag(name: str, version: str) -> str:
    return f"plugin:{name}:{version}"


def record_key(name: str) -> str:
    return MANIFESTS_PREFIX + name


def decode_record(raw: bytes) -> InstalledPlugin:
    try:
        return msgspec.json.decode(raw, type=InstalledPlugin)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"stored plugin record is unreadable: {exc}") from None


class Stored(msgspec.Struct, frozen=True):
    """A record with the exact bytes it was read from (the CAS guard)."""

    record: InstalledPlugin
    raw: bytes


class PluginStore:
    def __init__(self, kv: KeyValueStore, blobs: BlobStore) -> None:
        self.kv = kv
        self.blobs = blobs

    # --- records ----------------------------------------------------------------

    async def get(self, name: str) -> Stored | None:
        kv = await self.kv.get(record_key(name))
        return None if kv is None else Stored(decode_record(kv.value), kv.value)

    async def require(self, name: str) -> Stored:
        found = await self.get(name)
        if found is None:
            raise AspenError(ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{name}' is not installed", plugin=name)
        return found

    async def scan(self) -> tuple[dict[str, InstalledPlugin], dict[str, AspenError], int]:
        """Every record by name, the unreadable ones as errors, and the revision read at."""
        page = await self.kv.scan(MANIFESTS_PREFIX, limit=SCAN_LIMIT)
        records: dict[str, InstalledPlugin] = {}
        broken: dict[str, AspenError] = {}
        for kv in page.entries:
            name = kv.key[len(MANIFESTS_PREFIX) :]
            try:
                record = decode_record(kv.value)
            except AspenError as exc:
                broken[name] = exc
                continue
            if record.name != name:
                broken[name] = AspenError(
                    ErrorCode.INVALID_MANIFEST, f"record under {kv.key} names plugin '{record.name}'", plugin=name
                )
                continue
            records[name] = record
        return records, broken, page.revision

    async def manifests(self) -> dict[str, PluginManifest]:
        records, _, _ = await self.scan()
        return {n: r.manifest for n, r in records.items()}

    async def write(self, record: InstalledPlugin, expected: Stored | None) -> InstalledPlugin:
        """Store ``record`` if the stored value is still ``expected`` (None: absent)."""
        result = await self.kv.compare_and_swap(
            record_key(record.name), None if expected is None else expected.raw, msgspec.json.encode(record)
        )
        if not result.succeeded:
            raise AspenError(
                ErrorCode.PLUGIN_CONFLICT,
                f"plugin '{record.name}' was changed by someone else meanwhile; retry",
                plugin=record.name,
            )
        return record

    async def delete(self, stored: Stored) -> None:
        name = stored.record.name
        result = await self.kv.compare_and_delete(record_key(name), stored.raw)
        if not result.succeeded:
            raise AspenError(
                ErrorCode.PLUGIN_CONFLICT, f"plugin '{name}' was changed by someone else meanwhile; retry", plugin=name
            )

    # --- module bytes -----------------------------------------------------------

    async def add_wasm(self, wasm: bytes) -> str:
        return (await self.blobs.add_bytes(wasm)).hash

    async def read_wasm(self, wasm_hash: str, *, plugin: str = "") -> bytes:
        try:
            return await self.blobs.get_bytes(wasm_hash)
        except AspenError as exc:
            if exc.code == ErrorCode.BLOB_NOT_FOUND:
                raise AspenError(
                    ErrorCode.BLOB_NOT_FOUND,
                    f"plugin '{plugin}': module {wasm_hash} is not in this node's blob store",
                    plugin=plugin,
                    hash=wasm_hash,
                ) from None
            raise

    async def protect(self, manifest: PluginManifest) -> None:
        await self.blobs.protect(manifest.wasm_hash, blob_tag(manifest.name, manifest.version))

    async def release(self, kept: InstalledPlugin | None, dropped: list[PluginManifest]) -> None:
        """Unprotect the modules of ``dropped`` versions ``kept`` no longer names."""
        still = set()
        if kept is not None:
            still = {m.version for m in (kept.manifest, *kept.history)}
        for m in dropped:
            if m.version not in still:
                await self.blobs.unprotect(blob_tag(m.name, m.version))


def push_history(record: InstalledPlugin) -> tuple[tuple[PluginManifest, ...], list[PluginManifest]]:
    """The history after ``record.manifest`` is replaced: the current manifest
    appended, capped at MAX_HISTORY; also the versions that fell off."""
    history = (*record.history, record.manifest)
    dropped = list(history[:-MAX_HISTORY]) if len(history) > MAX_HISTORY else []
    return history[-MAX_HISTORY:], dropped


def _installs(key: str) -> bool:
    return key.startswith((MANIFESTS_PREFIX, TRUST_PREFIX))


async def watch_changes(
    kv: KeyValueStore,
    revision: int,
    dirty: asyncio.Event,
    closed: Callable[[], bool],
    relevant: Callable[[str], bool] = _installs,
) -> None:
    """Set ``dirty`` on every change after ``revision`` to a key under
    ``__plugins:`` that is ``relevant`` (default: a manifest or the trust
    store); a watch that ends (COMPACTED, a closed or failing store)
    resyncs and re-watches until ``closed()``."""
    while True:
        try:
            async for event in kv.watch(PLUGINS_PREFIX, start_revision=revision + 1):
                revision = event.revision
                if relevant(event.kv.key):
                    dirty.set()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- logged, then resync and re-watch
            if closed():
                return
            log.warning("plugin watch ended (%s); resyncing", exc)
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                revision = await kv.current_revision()
            dirty.set()
