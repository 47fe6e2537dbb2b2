"""The manifest rules and the error code of each: one table, checked when
``plugin.json`` is read, at install and at load; the table in
docs/plugin-abi.md §6 lists the same rows.

A rule is checked where it can be judged: the manifest's own rules
wherever a manifest is read (``plugin.json``, install, load); the host API
version on the node that installs or loads it; the cluster's caps
(``[plugins] max_*``) at install only — a node with lower caps runs the
plugin within them rather than refuse it. Each broken rule raises its own code, with ``plugin`` and ``field`` in the
details, so an operator (or a script) can tell them apart. The rules
among installed plugins (handles and prefixes of others, dependencies,
plugin count) are :mod:`aspen.plugins.validation`'s.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.bundle import INTERPRETERS, bad_path
from aspen.plugins.manifest import (
    MAX_DEPENDENCIES,
    MAX_DESCRIPTION_BYTES,
    MAX_HANDLES,
    MAX_MANIFEST_DEPTH,
    MAX_NAME_BYTES,
    MAX_PRIORITY,
    MAX_TAG_BYTES,
    MAX_TAGS,
    MIN_PRIORITY,
    NodePluginLimits,
    PluginManifest,
    is_semver,
    semver_key,
)
from aspen.plugins.namespace import MAX_KV_PREFIXES, validate_prefixes
from aspen.plugins.process.egress_hosts import DEFAULT_PORTS, MAX_ALLOWED_HOSTS, MAX_PATTERN_BYTES
from aspen.plugins.process.egress_hosts import problem as allowed_hosts_problem
from aspen.rpc.nesting import check_depth

HOST_API_VERSION = "1.0.0"
MAX_PLUGINS = 64
MAX_AUTHOR_BYTES = 256
DEFAULT_LIMITS = NodePluginLimits()
RUNTIMES = ("wasm", "process")
MAX_ARGV = 64
MAX_ARG_BYTES = 4096
MAX_ENV = 32
MAX_ENV_VALUE_BYTES = 4096
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

_NAME = re.compile(r"[A-Za-z0-9_-]+")
REQUEST_TYPE_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
# manifest limit -> the NodePluginLimits cap it may not exceed
LIMIT_CAPS = {
    "memory_bytes": "max_memory_bytes",
    "timeout_ms": "max_timeout_ms",
    "max_input_bytes": "max_max_input_bytes",
    "max_output_bytes": "max_max_output_bytes",
    "concurrency": "max_concurrency",
}

# A check returns None when the rule holds, else (message, extra details).
Broken = tuple[str, dict[str, object]] | None
Check = Callable[[PluginManifest, NodePluginLimits], Broken]


FILE, LOAD, INSTALL = "plugin.json", "load", "install"
EVERYWHERE = (FILE, INSTALL, LOAD)


class Rule(NamedTuple):
    field: str
    code: ErrorCode
    demands: str  # what the docs say
    check: Check
    checked: tuple[str, ...] = EVERYWHERE


def _if(broken: bool, message: str, **details: object) -> Broken:
    return (message, details) if broken else None


def _handle_names(m: PluginManifest, _: NodePluginLimits) -> Broken:
    for t in m.handles:
        if not REQUEST_TYPE_RE.fullmatch(t):
            return f"request type {t!r} must match [A-Za-z][A-Za-z0-9_]*", {}
    return _if(len(set(m.handles)) != len(m.handles), "handles lists a request type twice")


def _prefixes(m: PluginManifest, _: NodePluginLimits) -> Broken:
    try:
        validate_prefixes(m.name, m.kv_prefixes)
    except AspenError as exc:
        return exc.message, {k: v for k, v in exc.details.items() if k != "field"}
    return None


def _caps(m: PluginManifest, limits: NodePluginLimits) -> Broken:
    for field, cap_field in LIMIT_CAPS.items():
        asked, cap = getattr(m.limits, field), getattr(limits, cap_field)
        if asked is not None and asked > cap:
            return f"limits.{field} = {asked} exceeds this cluster's cap of {cap}", {
                "field": f"limits.{field}",
                "cap": cap,
            }
    return None


def _positive_limits(m: PluginManifest, _: NodePluginLimits) -> Broken:
    for field in LIMIT_CAPS:
        value = getattr(m.limits, field)
        if value is not None and value < 1:
            return f"limits.{field} must be positive", {"field": f"limits.{field}"}
    return None


def _dependencies(m: PluginManifest, _: NodePluginLimits) -> Broken:
    for dep in m.dependencies:
        if not _NAME.fullmatch(dep.name) or len(dep.name) > MAX_NAME_BYTES or dep.name == m.name:
            return f"dependency name {dep.name!r} is invalid", {}
        if dep.min_version is not None and not is_semver(dep.min_version):
            return f"dependency min_version {dep.min_version!r} is not semver", {}
    return None


def _api_version(m: PluginManifest, _: NodePluginLimits) -> Broken:
    wanted = m.min_api_version
    return _if(
        wanted is not None and is_semver(wanted) and semver_key(wanted) > semver_key(HOST_API_VERSION),
        f"plugin needs host API {wanted}, this node has {HOST_API_VERSION}",
        required=wanted,
        current=HOST_API_VERSION,
    )


def _signature(m: PluginManifest, _: NodePluginLimits) -> Broken:
    sig = m.signature
    return _if(
        sig is not None
        and not (
            _HEX64.fullmatch(sig.author_pubkey) and _HEX128.fullmatch(sig.signature) and _HEX64.fullmatch(sig.wasm_hash)
        ),
        "signature fields must be lowercase hex (32-byte key, 64-byte signature, 32-byte hash)",
    )


def _command(m: PluginManifest, _: NodePluginLimits) -> Broken:
    if m.runtime != "process":
        return _if(bool(m.command or m.env) or m.cwd != ".", 'command, env and cwd are for runtime "process"')
    if not 1 <= len(m.command) <= MAX_ARGV:
        return f"command is an argv of 1-{MAX_ARGV} strings", {}
    if any(not a or len(a.encode()) > MAX_ARG_BYTES or "\0" in a for a in m.command):
        return f"each command item is 1-{MAX_ARG_BYTES} bytes without NUL", {}
    program = m.command[0]
    return _if(
        program not in INTERPRETERS and bad_path(program) is not None,
        f"the program {program!r} must be a file of the bundle or one of {sorted(INTERPRETERS)}",
    )


def _env(m: PluginManifest, _: NodePluginLimits) -> Broken:
    if len(m.env) > MAX_ENV:
        return f"{len(m.env)} env entries, at most {MAX_ENV}", {}
    for name, value in m.env.items():
        if not _ENV_NAME.fullmatch(name) or len(value.encode()) > MAX_ENV_VALUE_BYTES or "\0" in value:
            return (
                f"env {name[:128]!r}: a name [A-Za-z_][A-Za-z0-9_]* and a value of at most {MAX_ENV_VALUE_BYTES} bytes",
                {},
            )
    return None


def _allowed_hosts(m: PluginManifest, _: NodePluginLimits) -> Broken:
    if m.runtime != "process":  # a WASM plugin has no network at all (no Extism HTTP is wired)
        return _if(bool(m.allowed_hosts), 'allowed_hosts is for runtime "process"')
    broken = allowed_hosts_problem(m.allowed_hosts)
    return None if broken is None else (broken, {})


C = ErrorCode
RULES: tuple[Rule, ...] = (
    Rule("name", C.PLUGIN_NAME_INVALID, "made of `[A-Za-z0-9_-]`, not empty",
         lambda m, _: _if(not _NAME.fullmatch(m.name), f"plugin name {m.name!r} must be made of [A-Za-z0-9_-]")),
    Rule("name", C.PLUGIN_NAME_TOO_LONG, f"at most {MAX_NAME_BYTES} bytes",
         lambda m, _: _if(len(m.name.encode()) > MAX_NAME_BYTES,
                          f"plugin name is {len(m.name.encode())} bytes, at most {MAX_NAME_BYTES}")),
    Rule("handles", C.PLUGIN_HANDLES_INVALID, "at least one request type",
         lambda m, _: _if(not m.handles, "handles must name at least one request type")),
    Rule("handles", C.PLUGIN_TOO_MANY_HANDLES, f"at most {MAX_HANDLES} request types",
         lambda m, _: _if(len(m.handles) > MAX_HANDLES, f"{len(m.handles)} request types, at most {MAX_HANDLES}")),
    Rule("priority", C.PLUGIN_PRIORITY_OUT_OF_RANGE, f"{MIN_PRIORITY}-{MAX_PRIORITY}, rejected, never clamped",
         lambda m, _: _if(not MIN_PRIORITY <= m.priority <= MAX_PRIORITY,
                          f"priority {m.priority} is outside {MIN_PRIORITY}-{MAX_PRIORITY}, the WASM plugin range",
                          priority=m.priority)),
    Rule("kv_prefixes", C.PLUGIN_TOO_MANY_PREFIXES, f"at most {MAX_KV_PREFIXES}",
         lambda m, _: _if(len(m.kv_prefixes) > MAX_KV_PREFIXES,
                          f"{len(m.kv_prefixes)} kv_prefixes, at most {MAX_KV_PREFIXES}")),
    Rule("kv_prefixes", C.PLUGIN_PREFIX_INVALID, "not empty, not reserved, not another plugin's `__plugin:` space",
         _prefixes),
    Rule("limits", C.PLUGIN_LIMIT_EXCEEDED, "within the node's `[plugins]` caps (details: `field`, `cap`)",
         _caps, checked=(INSTALL,)),
    Rule("min_api_version", C.PLUGIN_API_VERSION_UNSUPPORTED, f"not newer than the host API ({HOST_API_VERSION})",
         _api_version, checked=(INSTALL, LOAD)),
    Rule("version", C.INVALID_MANIFEST, "semver (MAJOR.MINOR.PATCH)",
         lambda m, _: _if(not is_semver(m.version), f"version {m.version!r} is not semver (MAJOR.MINOR.PATCH)")),
    Rule("handles", C.INVALID_MANIFEST, "each `[A-Za-z][A-Za-z0-9_]*`, none twice", _handle_names),
    Rule("public", C.INVALID_MANIFEST, "only types the plugin handles",
         lambda m, _: _if(not set(m.public) <= set(m.handles),
                          f"public names types the plugin does not handle: {sorted(set(m.public) - set(m.handles))}")),
    Rule("wasm_hash", C.INVALID_MANIFEST, "empty or 64 lowercase hex digits (BLAKE3)",
         lambda m, _: _if(bool(m.wasm_hash) and not _HEX64.fullmatch(m.wasm_hash),
                          "wasm_hash must be 64 lowercase hex digits (BLAKE3)")),
    Rule("app_id", C.INVALID_MANIFEST, "1-64 of `[A-Za-z0-9_.-]`",
         lambda m, _: _if(m.app_id is not None and not _APP_ID.fullmatch(m.app_id),
                          f"app_id {m.app_id!r} must be 1-64 of [A-Za-z0-9_.-]")),
    Rule("limits", C.INVALID_MANIFEST, "positive", _positive_limits),
    Rule("dependencies", C.INVALID_MANIFEST, f"at most {MAX_DEPENDENCIES}",
         lambda m, _: _if(len(m.dependencies) > MAX_DEPENDENCIES,
                          f"{len(m.dependencies)} dependencies, at most {MAX_DEPENDENCIES}")),
    Rule("dependencies", C.INVALID_MANIFEST, "valid names (not itself), semver `min_version`", _dependencies),
    Rule("min_api_version", C.INVALID_MANIFEST, "semver",
         lambda m, _: _if(m.min_api_version is not None and not is_semver(m.min_api_version),
                          f"min_api_version {m.min_api_version!r} is not semver")),
    Rule("description", C.INVALID_MANIFEST, f"at most {MAX_DESCRIPTION_BYTES} bytes",
         lambda m, _: _if(len(m.description.encode()) > MAX_DESCRIPTION_BYTES,
                          f"description exceeds {MAX_DESCRIPTION_BYTES} bytes")),
    Rule("author", C.INVALID_MANIFEST, f"at most {MAX_AUTHOR_BYTES} bytes",
         lambda m, _: _if(len(m.author.encode()) > MAX_AUTHOR_BYTES, f"author exceeds {MAX_AUTHOR_BYTES} bytes")),
    Rule("tags", C.INVALID_MANIFEST, f"at most {MAX_TAGS}, each 1-{MAX_TAG_BYTES} bytes",
         lambda m, _: _if(len(m.tags) > MAX_TAGS or any(not t or len(t.encode()) > MAX_TAG_BYTES for t in m.tags),
                          f"at most {MAX_TAGS} tags of 1-{MAX_TAG_BYTES} bytes")),
    Rule("signature", C.INVALID_MANIFEST, "lowercase hex fields", _signature),
    Rule("runtime", C.INVALID_MANIFEST, " or ".join(f"`{r}`" for r in RUNTIMES),
         lambda m, _: _if(m.runtime not in RUNTIMES, f"runtime {m.runtime!r} must be one of {list(RUNTIMES)}")),
    Rule("command", C.PLUGIN_COMMAND_INVALID,
         f"process only: 1-{MAX_ARGV} items of 1-{MAX_ARG_BYTES} bytes; the program a bundle file or "
         + ", ".join(f"`{i}`" for i in sorted(INTERPRETERS)), _command),
    Rule("env", C.PLUGIN_ENV_INVALID, f"at most {MAX_ENV}, names `[A-Za-z_][A-Za-z0-9_]*`, values ≤ {MAX_ENV_VALUE_BYTES} bytes",
         _env),
    Rule("cwd", C.PLUGIN_CWD_INVALID, "`.` or a relative path inside the bundle (no `..`, not absolute)",
         lambda m, _: _if(m.cwd != "." and bad_path(m.cwd) is not None, f"cwd: {bad_path(m.cwd)}")),
    Rule("allowed_hosts", C.PLUGIN_TOO_MANY_ALLOWED_HOSTS, f"at most {MAX_ALLOWED_HOSTS}",
         lambda m, _: _if(len(m.allowed_hosts) > MAX_ALLOWED_HOSTS,
                          f"{len(m.allowed_hosts)} allowed_hosts, at most {MAX_ALLOWED_HOSTS}")),
    Rule("allowed_hosts", C.PLUGIN_ALLOWED_HOSTS_INVALID,
         f"process only: each `host[:port]` of ≤ {MAX_PATTERN_BYTES} bytes, lowercase: a DNS name, `*.suffix`, an IPv4 "
         f"or `[IPv6]` literal; no port: {' and '.join(map(str, DEFAULT_PORTS))}", _allowed_hosts),
)  # fmt: skip


def check_manifest(m: PluginManifest, limits: NodePluginLimits = DEFAULT_LIMITS, *, at: str = INSTALL) -> None:
    """Raise the code of the first rule checked ``at`` (FILE, LOAD or
    INSTALL) that ``m`` breaks; ``limits`` are the caps INSTALL checks."""
    for rule in RULES:
        if at not in rule.checked:
            continue
        broken = rule.check(m, limits)
        if broken is not None:
            message, details = broken
            raise AspenError(rule.code, message, **{"plugin": m.name, "field": rule.field, **details})


def rules_table() -> str:
    """The Markdown table of docs/plugin-abi.md §6 (a test keeps them equal)."""
    rows = ["| field | rule | error code | checked |", "|---|---|---|---|"]
    for rule in RULES:
        rows.append(f"| `{rule.field}` | {rule.demands} | `{rule.code}` | {', '.join(rule.checked)} |")
    return "\n".join(rows)


def parse_manifest(raw: bytes | str) -> PluginManifest:
    """Decode ``plugin.json`` and check the rules of the manifest alone; a
    file that does not decode is ``INVALID_MANIFEST``."""
    check_depth(raw, max_depth=MAX_MANIFEST_DEPTH, code=ErrorCode.INVALID_MANIFEST)
    try:
        manifest = msgspec.json.decode(raw, type=PluginManifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"plugin.json: {exc}") from exc
    check_manifest(manifest, at=FILE)
    return manifest
