"""The rules about a plugin among the installed ones, and dependency
resolution: a request type has one plugin, KV prefixes do not overlap
another plugin's (:mod:`aspen.plugins.namespace`), dependencies are present
and new enough, no cycles, at most 64 plugins. The rules about one manifest
on its own are the table in :mod:`aspen.plugins.rules`.

The same functions give the load order (dependencies first) the reconciler
uses on every node.
"""

from __future__ import annotations

from collections.abc import Mapping

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import PluginManifest, is_semver, semver_key
from aspen.plugins.namespace import effective_prefixes, find_overlap
from aspen.plugins.rules import MAX_PLUGINS


def _err(code: ErrorCode, message: str, plugin: str, **details: object) -> AspenError:
    return AspenError(code, message, plugin=plugin, **details)


def version_satisfies(actual: str, minimum: str | None) -> bool:
    """``actual >= minimum`` when both are semver, else exact equality."""
    if minimum is None:
        return True
    if is_semver(actual) and is_semver(minimum):
        return semver_key(actual) >= semver_key(minimum)
    return actual == minimum


def _too_old(plugin: str, dep: str, minimum: str, actual: str, *, have: str = "installed is") -> AspenError:
    return _err(
        ErrorCode.PLUGIN_DEPENDENCY_TOO_OLD,
        f"plugin '{plugin}' needs '{dep}' >= {minimum}, {have} {actual}",
        plugin,
        dependency=dep,
        min_version=minimum,
        actual_version=actual,
    )


def check_room(m: PluginManifest, installed: Mapping[str, PluginManifest], *, max_plugins: int = MAX_PLUGINS) -> None:
    """A new plugin needs room among at most ``max_plugins``."""
    if m.name not in installed and len(installed) >= max_plugins:
        raise _err(
            ErrorCode.PLUGIN_TOO_MANY_PLUGINS, f"{len(installed)} plugins installed, at most {max_plugins}", m.name
        )


def check_prefixes_free(m: PluginManifest, others: Mapping[str, PluginManifest]) -> None:
    """No KV prefix of ``m`` overlaps one of the ``others``."""
    clash = find_overlap(
        effective_prefixes(m.name, m.kv_prefixes),
        {n: effective_prefixes(n, x.kv_prefixes) for n, x in others.items()},
    )
    if clash:
        mine, other, theirs = clash
        raise _err(
            ErrorCode.PLUGIN_PREFIX_OVERLAP,
            f"kv prefix {mine!r} overlaps {theirs!r} of plugin '{other}'",
            m.name,
            other=other,
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
    check_room(m, installed, max_plugins=max_plugins)
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
    check_prefixes_free(m, others)
    check_dependencies(m, others)
    for other, x in sorted(others.items()):  # this version must still satisfy its dependents
        for dep in x.dependencies:
            if dep.name == name and not version_satisfies(m.version, dep.min_version):
                raise _too_old(other, name, dep.min_version or "", m.version)
    _, errors = load_order({**others, name: m})
    cycle = errors.get(name)
    if cycle is not None and cycle.code == ErrorCode.PLUGIN_DEPENDENCY_CYCLE:
        raise cycle


def check_dependencies(
    m: PluginManifest,
    present: Mapping[str, PluginManifest],
    *,
    missing: str = "is not installed",
    have: str = "installed is",
) -> None:
    """Every hard dependency of ``m`` is among ``present``, new enough: the
    installed plugins at install, the serving ones (``missing="does not
    serve on this node"``, ``have="this node serves"``) at load."""
    name = m.name
    for dep in m.dependencies:
        found = present.get(dep.name)
        if found is None:
            if not dep.optional:
                raise _err(
                    ErrorCode.PLUGIN_DEPENDENCY_MISSING,
                    f"plugin '{name}' needs '{dep.name}', which {missing}",
                    name,
                    dependency=dep.name,
                )
        elif not version_satisfies(found.version, dep.min_version):
            raise _too_old(name, dep.name, dep.min_version or "", found.version, have=have)


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
