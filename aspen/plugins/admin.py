"""The operator's verbs: install, upgrade, rollback, enable, disable, remove,
list, info, deps, check, reload and the trust store.

Each change is validated here, written as one compare-and-swap of the
install record, and then left to the reconcilers — this node's and every
other node's — to roll out. The verb waits (briefly) until the answering
node serves the change, so ``aspen plugin upgrade`` returns once the new
version is live there, and reports the failure if it did not come up.
"""

from __future__ import annotations

import asyncio

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.plugins import bundle, timers
from aspen.plugins import requests as r
from aspen.plugins.hook_subscribers import plugin_subscriptions
from aspen.plugins.lifecycle import PluginStatus
from aspen.plugins.manifest import MAX_WASM_BYTES, PluginManifest, is_semver, semver_key
from aspen.plugins.reconciler import PluginReconciler
from aspen.plugins.rules import MAX_PLUGINS, check_manifest
from aspen.plugins.signing import wasm_hash
from aspen.plugins.slot import STATUS_PREFIX
from aspen.plugins.store import InstalledPlugin, Stored, push_history
from aspen.plugins.validation import (
    check_against_installed,
    dependents,
    load_order,
    version_satisfies,
)
from aspen.rpc.catalog import PluginReloadResult


class PluginAdmin:
    def __init__(self, reconciler: PluginReconciler, *, max_plugins: int = MAX_PLUGINS) -> None:
        self.rec = reconciler
        self.store = reconciler.store
        self.trust = reconciler.trust
        self.max_plugins = max_plugins

    # --- install / upgrade / rollback ------------------------------------------------

    async def install(self, body: r.PluginInstall, *, upgrade: bool) -> r.PluginChangeResult:
        wasm = await self._module(body)
        digest = await asyncio.to_thread(wasm_hash, wasm)
        m = body.manifest
        if m.wasm_hash and m.wasm_hash != digest:
            raise AspenError(
                ErrorCode.PLUGIN_HASH_MISMATCH,
                f"plugin '{m.name}': manifest wasm_hash does not match the module",
                expected=m.wasm_hash,
                actual=digest,
            )
        m = msgspec.structs.replace(m, wasm_hash=digest, enabled=True)
        check_manifest(m, self.rec.limits)
        if m.runtime == "process":
            await asyncio.to_thread(bundle.check, wasm, m)
        await self._check_signature(m, wasm)
        existing = await self.store.get(m.name)
        if not upgrade and existing is not None:
            raise AspenError(
                ErrorCode.PLUGIN_ALREADY_INSTALLED,
                f"plugin '{m.name}' is already installed ({existing.record.manifest.version}); use upgrade",
                plugin=m.name,
            )
        if upgrade and existing is None:
            raise AspenError(ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{m.name}' is not installed", plugin=m.name)
        if existing is not None:
            current = existing.record.manifest
            if not body.force and not _newer(m.version, current.version):
                raise AspenError(
                    ErrorCode.PLUGIN_VERSION_NOT_NEWER,
                    f"plugin '{m.name}': {m.version} is not newer than the installed {current.version} "
                    "(rollback, or --force)",
                    plugin=m.name,
                )
            m = msgspec.structs.replace(m, enabled=current.enabled)
        check_against_installed(m, await self.store.manifests(), max_plugins=self.max_plugins)
        await self.store.add_wasm(wasm)
        await self.store.protect(m)
        if existing is None:
            record, dropped = InstalledPlugin(m, 1, (), now_ms(), now_ms()), []
        else:
            history, dropped = push_history(existing.record)
            record = msgspec.structs.replace(
                existing.record, manifest=m, generation=existing.record.generation + 1, history=history,
                updated_at_ms=now_ms(),
            )  # fmt: skip
        await self.store.write(record, existing)
        await self.store.release(record, dropped)
        return await self._settled(record, body.wait_seconds)

    async def rollback(self, body: r.PluginRollback) -> r.PluginChangeResult:
        stored = await self.store.require(body.name)
        rec = stored.record
        index = _history_index(rec, body.version)
        target = msgspec.structs.replace(rec.history[index], enabled=rec.manifest.enabled)
        check_against_installed(target, await self.store.manifests(), max_plugins=self.max_plugins)
        await self._check_signature(target, await self.store.read_wasm(target.wasm_hash, plugin=target.name))
        record = msgspec.structs.replace(
            rec, manifest=target, generation=rec.generation + 1, history=rec.history[:index], updated_at_ms=now_ms()
        )
        await self.store.write(record, stored)
        await self.store.release(record, [rec.manifest, *rec.history[index + 1 :]])
        return await self._settled(record, body.wait_seconds)

    async def _module(self, body: r.PluginInstall) -> bytes:
        if (body.wasm is None) == (body.wasm_hash is None):
            raise AspenError(
                ErrorCode.BAD_REQUEST, "give exactly one of wasm (the bytes) or wasm_hash (an uploaded blob)"
            )
        if body.wasm is not None:
            wasm = body.wasm
        else:
            assert body.wasm_hash is not None
            wasm = await self.store.read_wasm(body.wasm_hash, plugin=body.manifest.name)
        if len(wasm) > MAX_WASM_BYTES:
            raise AspenError(ErrorCode.BLOB_TOO_LARGE, f"the module is {len(wasm)} bytes, at most {MAX_WASM_BYTES}")
        return wasm

    async def _check_signature(self, m: PluginManifest, wasm: bytes) -> None:
        await self.trust.check_module(m, wasm, allow_unsigned=self.rec.allow_unsigned)

    async def reload(self, name: str | None) -> PluginReloadResult:
        """``PluginReload``: with a name, restart that plugin blue/green on every
        node (the record's generation is bumped); without, force a full pass on
        this node, retrying every version that failed."""
        rec = self.rec
        if name is None:
            wanted = rec.wanted_names()
            await rec.reconcile(force=wanted)
            failed = [n for n in wanted if rec.status(n).error is not None]
            count = rec.running
            if failed:
                return PluginReloadResult(
                    is_success=False,
                    plugin_count=count,
                    message=f"{count} plugin(s) running; failed: {', '.join(sorted(failed))}",
                    error=ErrorCode.PLUGIN_LOAD_FAILED,
                )
            return PluginReloadResult(is_success=True, plugin_count=count, message=f"{count} plugin(s) running")
        stored = await self.store.require(name)
        record = msgspec.structs.replace(stored.record, generation=stored.record.generation + 1, updated_at_ms=now_ms())
        await self.store.write(record, stored)
        status = await rec.settle(name, record.generation, rec.drain_seconds, after=rec.poke())
        ok = status.generation >= record.generation or not record.manifest.enabled
        return PluginReloadResult(
            is_success=ok,
            plugin_count=rec.running,
            message=f"plugin '{name}' reloaded" if ok else f"plugin '{name}' failed to reload",
            error=None if ok else (status.error.code if status.error else ErrorCode.TIMEOUT),
        )

    # --- enable / disable / remove -----------------------------------------------------

    async def enable(self, body: r.PluginEnable) -> r.PluginChangeResult:
        stored = await self.store.require(body.name)
        manifests = await self.store.manifests()
        for dep in stored.record.manifest.dependencies:
            present = manifests.get(dep.name)
            if not dep.optional and (present is None or not present.enabled):
                raise AspenError(
                    ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                    f"plugin '{body.name}' needs '{dep.name}', which is not installed and enabled",
                    plugin=body.name,
                    dependency=dep.name,
                )
            if present is not None and not version_satisfies(present.version, dep.min_version):
                raise AspenError(
                    ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD,
                    f"plugin '{body.name}' needs '{dep.name}' >= {dep.min_version}, installed is {present.version}",
                    plugin=body.name,
                )
        record = await self._set_enabled(stored, True)
        return await self._settled(record, body.wait_seconds)

    async def disable(self, body: r.PluginDisable) -> r.PluginChangeResult:
        stored = await self.store.require(body.name)
        manifests = await self.store.manifests()
        users = _closure(body.name, manifests, enabled_only=True)
        if users and not body.cascade:
            raise AspenError(
                ErrorCode.PLUGIN_HAS_DEPENDENTS,
                f"plugins {users} depend on '{body.name}'; disable them first or use --cascade",
                plugin=body.name,
                dependents=users,
            )
        for user in reversed(users):
            await self._set_enabled(await self.store.require(user), False)
        record = await self._set_enabled(stored, False)
        result = await self._settled(record, body.wait_seconds)
        return msgspec.structs.replace(result, affected=users)

    async def _set_enabled(self, stored: Stored, enabled: bool) -> InstalledPlugin:
        rec = stored.record
        if rec.manifest.enabled == enabled:
            return rec
        record = msgspec.structs.replace(
            rec,
            manifest=msgspec.structs.replace(rec.manifest, enabled=enabled),
            generation=rec.generation + 1,
            updated_at_ms=now_ms(),
        )
        return await self.store.write(record, stored)

    async def remove(self, body: r.PluginRemove) -> r.PluginRemoveResult:
        stored = await self.store.require(body.name)
        manifests = await self.store.manifests()
        users = _closure(body.name, manifests, enabled_only=False)
        if users and not (body.force or body.cascade):
            raise AspenError(
                ErrorCode.PLUGIN_HAS_DEPENDENTS,
                f"plugins {users} depend on '{body.name}'; remove them first, or use --cascade or --force",
                plugin=body.name,
                dependents=users,
            )
        removed = []
        for name in [*(reversed(users) if body.cascade else ()), body.name]:
            target = stored if name == body.name else await self.store.require(name)
            await self.store.delete(target)
            await timers.forget(self.rec.kv, name)
            await self.store.release(None, [target.record.manifest, *target.record.history])
            await plugin_subscriptions(self.rec.kv).forget(name)
            removed.append(name)
        after = self.rec.poke()
        for name in removed:
            await self.rec.settle(name, 0, body.wait_seconds, after=after)
        for name in removed:  # other nodes' reports for a plugin that no longer exists
            page = await self.rec.kv.scan(f"{STATUS_PREFIX}{name}:", limit=1000)
            for kv in page.entries:
                await self.rec.kv.delete(kv.key)
        return r.PluginRemoveResult(removed=removed)

    async def _settled(self, record: InstalledPlugin, wait: float) -> r.PluginChangeResult:
        after = self.rec.poke()
        status = await self.rec.settle(record.name, record.generation, max(0.0, min(wait, 120.0)), after=after)
        m = record.manifest
        return r.PluginChangeResult(
            name=m.name,
            version=m.version,
            wasm_hash=m.wasm_hash,
            generation=record.generation,
            enabled=m.enabled,
            status=status,
        )

    # --- reading ----------------------------------------------------------------------

    async def list(self) -> r.PluginListResult:
        records, _, _ = await self.store.scan()
        plugins = [
            r.PluginSummary(
                name=name,
                version=rec.manifest.version,
                enabled=rec.manifest.enabled,
                priority=rec.manifest.priority,
                handles=list(rec.manifest.handles),
                app_id=rec.manifest.app_id,
                generation=rec.generation,
                signed_by=rec.manifest.signature.author_pubkey if rec.manifest.signature else None,
                history=[h.version for h in rec.history],
                status=self.rec.status(name),
            )
            for name, rec in sorted(records.items())
        ]
        return r.PluginListResult(count=len(plugins), plugins=plugins)

    async def info(self, body: r.PluginInfo) -> r.PluginInfoResult:
        stored = await self.store.require(body.name)
        manifests = await self.store.manifests()
        page = await self.rec.kv.scan(f"{STATUS_PREFIX}{body.name}:", limit=1000)
        nodes = []
        for kv in page.entries:
            try:
                nodes.append(msgspec.json.decode(kv.value, type=PluginStatus))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
        return r.PluginInfoResult(
            record=stored.record,
            dependents=dependents(body.name, manifests),
            status=self.rec.status(body.name),
            nodes=nodes,
        )

    async def deps(self, body: r.PluginDeps) -> r.PluginDepsResult:
        manifests = await self.store.manifests()
        if body.name is None:
            order, errors = load_order({n: m for n, m in manifests.items() if m.enabled})
            return r.PluginDepsResult(load_order=order, problems=_problems(errors.values()))
        m = manifests.get(body.name)
        if m is None:
            raise AspenError(ErrorCode.PLUGIN_NOT_FOUND, f"plugin '{body.name}' is not installed", plugin=body.name)
        states = []
        for dep in m.dependencies:
            present = manifests.get(dep.name)
            states.append(
                r.DependencyState(
                    name=dep.name,
                    min_version=dep.min_version,
                    optional=dep.optional,
                    installed_version=present.version if present else None,
                    is_satisfied=(present is not None and version_satisfies(present.version, dep.min_version))
                    or (present is None and dep.optional),
                )
            )
        return r.PluginDepsResult(
            dependencies=[] if body.reverse else states, dependents=dependents(body.name, manifests)
        )

    async def check(self) -> r.PluginCheckResult:
        """Re-run every install-time rule and the load-time signature check
        against what is installed now (trust may have changed since)."""
        records, broken, _ = await self.store.scan()
        problems = [r.PluginProblem(plugin=n, code=e.code, message=e.message) for n, e in broken.items()]
        manifests = {n: rec.manifest for n, rec in records.items()}
        for name, rec in sorted(records.items()):
            m = rec.manifest
            try:
                check_manifest(m, self.rec.limits)
                check_against_installed(m, manifests, max_plugins=self.max_plugins)
                await self._check_signature(m, await self.store.read_wasm(m.wasm_hash, plugin=name))
            except AspenError as exc:
                problems.append(r.PluginProblem(plugin=name, code=exc.code, message=exc.message))
        _, errors = load_order({n: m for n, m in manifests.items() if m.enabled})
        seen = {(p.plugin, p.code) for p in problems}
        problems += [p for p in _problems(errors.values()) if (p.plugin, p.code) not in seen]
        return r.PluginCheckResult(is_valid=not problems, checked=len(records) + len(broken), problems=problems)


def _newer(candidate: str, current: str) -> bool:
    if is_semver(candidate) and is_semver(current):
        return semver_key(candidate) > semver_key(current)
    return candidate != current


def _history_index(rec: InstalledPlugin, version: str | None) -> int:
    for index in range(len(rec.history) - 1, -1, -1):
        if version is None or rec.history[index].version == version:
            return index
    wanted = "a previous version" if version is None else f"version {version}"
    raise AspenError(
        ErrorCode.PLUGIN_VERSION_NOT_FOUND,
        f"plugin '{rec.name}' has no {wanted} to roll back to (kept: {[h.version for h in rec.history]})",
        plugin=rec.name,
    )


def _closure(name: str, manifests: dict[str, PluginManifest], *, enabled_only: bool) -> list[str]:
    """Every plugin that depends on ``name`` directly or through others, nearest first."""
    found: list[str] = []
    frontier = [name]
    while frontier:
        current = frontier.pop(0)
        for user in dependents(current, manifests, enabled_only=enabled_only):
            if user not in found and user != name:
                found.append(user)
                frontier.append(user)
    return found


def _problems(errors) -> list[r.PluginProblem]:
    return [r.PluginProblem(plugin=e.details.get("plugin", ""), code=e.code, message=e.message) for e in errors]
