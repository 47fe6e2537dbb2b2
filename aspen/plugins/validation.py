"""Install-time validation and dependency resolution.

Every rule the Rust original only defined is enforced here, each with its
own error code so an operator (or a script) can tell them apart: the name,
1–64 handles that no other installed plugin handles, priority 900–999
(rejected, never clamped), at most 16 KV prefixes under the isolation rules
of :mod:`aspen.plugins.namespace`, limits within the node's caps (``[plugins]
max_*``), the host API version, dependencies present and new enough, no
cycles, at most 64 plugins. What is left (version syntax, app id,
tags …) is :func:`aspen.plugins.manifest.validate_manifest`'s
``INVALID_MANIFEST``.

The same functions give the load order (dependencies first) the reconciler
uses on every node.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.host import MAX_PLUGINS
from aspen.plugins.host_functions import HOST_API_VERSION
from aspen.plugins.manifest import (
    MAX_HANDLES,
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    MIN_PRIORITY,
    NodePluginLimits,
    PluginManifest,
    is_semver,
    semver_key,
    validate_manifest,
)
from aspen.plugins.namespace import (
    MAX_KV_PREFIXES,
    effective_prefixes,
    find_overlap,
    validate_prefixes,
)

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_LIMIT_CAPS = {
    "memory_bytes": "max_memory_bytes",
    "timeout_ms": "max_timeout_ms",
    "max_input_bytes": "max_max_input_bytes",
    "max_output_bytes": "max_max_output_bytes",
    "concurrency": "max_concurrency",
}


def _err(code: ErrorCode, message: str, plugin: str, **details: object) -> AspenError:
    return AspenError(code, message, plugin=plugin, **details)


def check_manifest(m: PluginManifest, limits: NodePluginLimits = NodePluginLimits()) -> None:
    """The rules about one manifest on its own."""
    name = m.name
    if not _NAME.fullmatch(name):
        raise _err(ErrorCode.PLUGIN_NAME_INVALID, f"plugin name {name!r} must be made of [A-Za-z0-9_-]", name)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise _err(ErrorCode.PLUGIN_NAME_TOO_LONG, f"plugin name is {len(name)} bytes, at most {MAX_NAME_BYTES}", name)
    if not m.handles:
        raise _err(ErrorCode.PLUGIN_HANDLES_INVALID, "handles must name at least one request type", name)
    if len(m.handles) > MAX_HANDLES:
        raise _err(ErrorCode.PLUGIN_TOO_MANY_HANDLES, f"{len(m.handles)} request types, at most {MAX_HANDLES}", name)
    if not MIN_PRIORITY <= m.priority <= MAX_PRIORITY:
        raise _err(
            ErrorCode.PLUGIN_PRIORITY_OUT_OF_RANGE,
            f"priority {m.priority} is outside {MIN_PRIORITY}-{MAX_PRIORITY}, the WASM plugin range",
            name,
            priority=m.priority,
        )
    if len(m.kv_prefixes) > MAX_KV_PREFIXES:
        raise _err(
            ErrorCode.PLUGIN_TOO_MANY_PREFIXES, f"{len(m.kv_prefixes)} kv_prefixes, at most {MAX_KV_PREFIXES}", name
        )
    try:
        validate_prefixes(name, m.kv_prefixes)
    except AspenError as exc:
        raise AspenError(ErrorCode.PLUGIN_PREFIX_INVALID, exc.message, plugin=name, **exc.details) from None
    for field, cap_field in _LIMIT_CAPS.items():
        asked, cap = getattr(m.limits, field), getattr(limits, cap_field)
        if asked is not None and asked > cap:
            raise _err(
                ErrorCode.PLUGIN_LIMIT_EXCEEDED,
                f"limits.{field} = {asked} exceeds this cluster's cap of {cap}",
                name,
                field=f"limits.{field}",
                cap=cap,
            )
    if m.min_api_version is not None and is_semver(m.min_api_version):
        if semver_key(m.min_api_version) > semver_key(HOST_API_VERSION):
            raise _err(
                ErrorCode.PLUGIN_API_VERSION_UNSUPPORTED,
                f"plugin needs host API {m.min_api_version}, this node has {HOST_API_VERSION}",
                name,
                required=m.min_api_version,
                current=HOST_API_VERSION,
            )
    validate_manifest(m)


def version_satisfies(actual: str, minimum: str | None) -> bool:
    """``actual >= minimum`` when both are semver, else exact equality."""
    if minimum is None:
        return True
    if is_semver(actual) and is_semver(minimum):
        return semver_key(actual) >= semver_key(minimum)
    return actual == minimum


def _too_old(plugin: str, dep: str, minimum: str, actual: str) -> AspenError:
    return _err(
        ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD,
        f"plugin '{plugin}' needs '{dep}' >= {minimum}, installed is {actual}",
        plugin,
        dependency=dep,
        min_version=minimum,
        actual_version=actual,
    )


def check_against_installed(
    m: PluginManifest, installed: Mapping[str, PluginManifest], *, max_plugins: int = MAX_PLUGINS
) -> None:
    """The rules about ``m`` among the installed plugins (``m`` replaces any
    installed plugin of the same name: install, upgrade or rollback). A
    request type belongs to one plugin, enabled or not: otherwise the lower
    priority number would silently take it from the other."""
    name = m.name
    others = {n: x for n, x in installed.items() if n != name}
    if name not in installed and len(installed) >= max_plugins:
        raise _err(ErrorCode.PLUGIN_TOO_MANY_PLUGINS, f"{len(installed)} plugins installed, at most {max_plugins}", name)
    for other, x in sorted(others.items()):
        shared = sorted(set(m.handles) & set(x.handles))
        if shared:
            raise _err(
                ErrorCode.PLUGIN_HANDLES_OVERLAP,
                f"plugin '{other}' already handles {', '.join(shared)}; a request type has one plugin",
                name,
                other=other,
                request_types=shared,
            )
    clash = find_overlap(
        effective_prefixes(name, m.kv_prefixes),
        {n: effective_prefixes(n, x.kv_prefixes) for n, x in others.items()},
    )
    if clash:
        mine, other, theirs = clash
        raise _err(
            ErrorCode.PLUGIN_PREFIX_OVERLAP,
            f"kv prefix {mine!r} overlaps {theirs!r} of plugin '{other}'",
            name,
            other=other,
        )
    for dep in m.dependencies:
        present = others.get(dep.name)
        if present is None:
            if not dep.optional:
                raise _err(
                    ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                    f"plugin '{name}' needs '{dep.name}', which is not installed",
                    name,
                    dependency=dep.name,
                )
        elif not version_satisfies(present.version, dep.min_version):
            raise _too_old(name, dep.name, dep.min_version or "", present.version)
    for other, x in sorted(others.items()):  # this version must still satisfy its dependents
        for dep in x.dependencies:
            if dep.name == name and not version_satisfies(m.version, dep.min_version):
                raise _too_old(other, name, dep.min_version or "", m.version)
    _, errors = load_order({**others, name: m})
    cycle = errors.get(name)
    if cycle is not None and cycle.code == ErrorCode.PLUGIN_DEPENDENCY_CYCLE:
        raise cycle


def load_order(manifests: Mapping[str, PluginManifest]) -> tuple[list[str], dict[str, AspenError]]:
    """Kahn's algorithm over ``manifests`` (the ones to load): dependencies
    first, ties by name. A plugin whose hard dependency is absent, too old,
    or itself unloadable gets an error instead of a place, as does every
    plugin on or behind a cycle. An absent optional dependency is ignored."""
    errors: dict[str, AspenError] = {}
    needs: dict[str, set[str]] = {}
    for name, m in manifests.items():
        needs[name] = set()
        for dep in m.dependencies:
            present = manifests.get(dep.name)
            if present is None:
                if not dep.optional:
                    errors[name] = _err(
                        ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                        f"plugin '{name}' needs '{dep.name}', which is not installed and enabled",
                        name,
                        dependency=dep.name,
                    )
            elif not version_satisfies(present.version, dep.min_version):
                errors[name] = _too_old(name, dep.name, dep.min_version or "", present.version)
            else:
                needs[name].add(dep.name)
    order: list[str] = []
    ready = sorted(n for n, deps in needs.items() if not deps)
    waiting = {n: set(deps) for n, deps in needs.items() if deps}
    while ready:
        name = ready.pop(0)
        order.append(name)
        freed = []
        for other, deps in waiting.items():
            deps.discard(name)
            if not deps:
                freed.append(other)
        for other in freed:
            del waiting[other]
        ready = sorted(ready + freed)
    if waiting:
        stuck = sorted(waiting)
        for name in stuck:
            errors.setdefault(
                name,
                _err(
                    ErrorCode.PLUGIN_DEPENDENCY_CYCLE,
                    f"plugin '{name}' is on or behind a dependency cycle among {stuck}",
                    name,
                    plugins=stuck,
                ),
            )
    # A plugin that cannot load takes its hard dependents with it.
    changed = True
    while changed:
        changed = False
        for name in order:
            if name in errors:
                continue
            for dep in manifests[name].dependencies:
                if dep.name in errors and not dep.optional:
                    errors[name] = _err(
                        ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                        f"plugin '{name}' needs '{dep.name}', which cannot load: {errors[dep.name].code}",
                        name,
                        dependency=dep.name,
                    )
                    changed = True
                    break
    return [n for n in order if n not in errors], errors


def dependents(name: str, manifests: Mapping[str, PluginManifest], *, enabled_only: bool = False) -> list[str]:
    """Sorted names of the plugins with a hard dependency on ``name``."""
    return sorted(
        n
        for n, m in manifests.items()
        if (m.enabled or not enabled_only) and any(d.name == name and not d.optional for d in m.dependencies)
    )
