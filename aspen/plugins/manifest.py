"""The plugin manifest: one record for ``plugin.json`` on disk, the install
record the lifecycle stores, and what the loader enforces.

Decoding is strict (unknown fields are refused, so a typo such as
``"kv_raed": true`` cannot silently leave a permission off) and
:func:`validate_manifest` checks every limit the Rust original only
defined. Limits from the manifest are capped by the node's
:class:`NodePluginLimits`.
"""

from __future__ import annotations

import re

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.namespace import validate_prefixes
from aspen.rpc.nesting import check_depth

MIN_PRIORITY = 900
MAX_PRIORITY = 999
MAX_HANDLES = 64
MAX_NAME_BYTES = 128
MAX_DEPENDENCIES = 16
MAX_TAGS = 16
MAX_TAG_BYTES = 64
MAX_DESCRIPTION_BYTES = 1024
MAX_WASM_BYTES = 50 << 20
MAX_MANIFEST_DEPTH = 16  # a real plugin.json nests 3 levels (dependencies)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_REQUEST_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")
_APP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX128 = re.compile(r"[0-9a-f]{128}")
# Semantic Versioning 2.0.0, as published at semver.org.
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)

PERMISSIONS = ("kv_read", "kv_write", "blob_read", "blob_write", "cluster_info", "randomness", "signing")


class PluginPermissions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Host capabilities; every one is denied unless the manifest grants it."""

    kv_read: bool = False
    kv_write: bool = False
    blob_read: bool = False
    blob_write: bool = False
    cluster_info: bool = False
    randomness: bool = False
    signing: bool = False

    def granted(self) -> frozenset[str]:
        return frozenset(p for p in PERMISSIONS if getattr(self, p))


class PluginLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the plugin asks for; ``None`` takes the node default."""

    memory_bytes: int | None = None
    timeout_ms: int | None = None
    max_input_bytes: int | None = None
    max_output_bytes: int | None = None
    concurrency: int | None = None


class NodePluginLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Node configuration: the default for each limit and the cap no manifest
    can exceed."""

    memory_bytes: int = 16 << 20
    timeout_ms: int = 5000
    max_input_bytes: int = 1 << 20
    max_output_bytes: int = 1 << 20
    concurrency: int = 2
    max_memory_bytes: int = 16 << 20
    max_timeout_ms: int = 5000
    max_max_input_bytes: int = 4 << 20
    max_max_output_bytes: int = 4 << 20
    max_concurrency: int = 8


class EffectiveLimits(msgspec.Struct, frozen=True):
    memory_bytes: int
    timeout_ms: int
    max_input_bytes: int
    max_output_bytes: int
    concurrency: int

    @property
    def memory_pages(self) -> int:
        return -(-self.memory_bytes // 65536)


def effective_limits(asked: PluginLimits, node: NodePluginLimits) -> EffectiveLimits:
    def pick(value: int | None, default: int, cap: int) -> int:
        return min(default if value is None else value, cap)

    return EffectiveLimits(
        memory_bytes=pick(asked.memory_bytes, node.memory_bytes, node.max_memory_bytes),
        timeout_ms=pick(asked.timeout_ms, node.timeout_ms, node.max_timeout_ms),
        max_input_bytes=pick(asked.max_input_bytes, node.max_input_bytes, node.max_max_input_bytes),
        max_output_bytes=pick(asked.max_output_bytes, node.max_output_bytes, node.max_max_output_bytes),
        concurrency=pick(asked.concurrency, node.concurrency, node.max_concurrency),
    )


class PluginDependency(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    min_version: str | None = None
    optional: bool = False


class PluginSignature(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Ed25519 signature of the raw 32-byte BLAKE3 digest of the WASM bytes."""

    author_pubkey: str  # 64 hex
    signature: str  # 128 hex
    wasm_hash: str  # 64 hex
    signed_at_ms: int


class PluginManifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    version: str
    handles: tuple[str, ...]
    public: tuple[str, ...] = ()  # handled types any authenticated caller may send (else plugin:call)
    priority: int = 950
    wasm_hash: str = ""  # BLAKE3 hex of the WASM; filled in at load when empty
    app_id: str | None = None
    kv_prefixes: tuple[str, ...] = ()
    permissions: PluginPermissions = PluginPermissions()
    limits: PluginLimits = PluginLimits()
    dependencies: tuple[PluginDependency, ...] = ()
    min_api_version: str | None = None
    description: str = ""
    author: str = ""
    tags: tuple[str, ...] = ()
    enabled: bool = True
    signature: PluginSignature | None = None


def is_semver(text: str) -> bool:
    return _SEMVER.fullmatch(text) is not None


def semver_key(text: str) -> tuple[int, int, int]:
    """MAJOR, MINOR, PATCH of a valid semver string (pre-release tags are not ordered)."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{text!r} is not semver")
    return int(match[1]), int(match[2]), int(match[3])


def _invalid(message: str, field: str) -> AspenError:
    return AspenError(ErrorCode.INVALID_MANIFEST, message, field=field)


def validate_manifest(m: PluginManifest) -> None:
    """Raise ``INVALID_MANIFEST`` (with the offending ``field``) unless every rule holds."""
    if not _NAME.fullmatch(m.name):
        raise _invalid(f"plugin name {m.name!r} must be 1-128 of [A-Za-z0-9_-]", "name")
    if not is_semver(m.version):
        raise _invalid(f"version {m.version!r} is not semver (MAJOR.MINOR.PATCH)", "version")
    if not m.handles:
        raise _invalid("handles must name at least one request type", "handles")
    if len(m.handles) > MAX_HANDLES:
        raise _invalid(f"{len(m.handles)} request types, at most {MAX_HANDLES}", "handles")
    for t in m.handles:
        if not _REQUEST_TYPE.fullmatch(t):
            raise _invalid(f"request type {t!r} must match [A-Za-z][A-Za-z0-9_]*", "handles")
    if len(set(m.handles)) != len(m.handles):
        raise _invalid("handles lists a request type twice", "handles")
    if not set(m.public) <= set(m.handles):
        raise _invalid(f"public names types the plugin does not handle: {sorted(set(m.public) - set(m.handles))}", "public")
    if not MIN_PRIORITY <= m.priority <= MAX_PRIORITY:
        raise _invalid(f"priority {m.priority} outside {MIN_PRIORITY}-{MAX_PRIORITY} (WASM tier)", "priority")
    if m.wasm_hash and not _HEX64.fullmatch(m.wasm_hash):
        raise _invalid("wasm_hash must be 64 lowercase hex digits (BLAKE3)", "wasm_hash")
    if m.app_id is not None and not _APP_ID.fullmatch(m.app_id):
        raise _invalid(f"app_id {m.app_id!r} must be 1-64 of [A-Za-z0-9_.-]", "app_id")
    validate_prefixes(m.name, m.kv_prefixes)
    for name in ("memory_bytes", "timeout_ms", "max_input_bytes", "max_output_bytes", "concurrency"):
        value = getattr(m.limits, name)
        if value is not None and value < 1:
            raise _invalid(f"limits.{name} must be positive", f"limits.{name}")
    if len(m.dependencies) > MAX_DEPENDENCIES:
        raise _invalid(f"{len(m.dependencies)} dependencies, at most {MAX_DEPENDENCIES}", "dependencies")
    for dep in m.dependencies:
        if not _NAME.fullmatch(dep.name) or dep.name == m.name:
            raise _invalid(f"dependency name {dep.name!r} is invalid", "dependencies")
        if dep.min_version is not None and not is_semver(dep.min_version):
            raise _invalid(f"dependency min_version {dep.min_version!r} is not semver", "dependencies")
    if m.min_api_version is not None and not is_semver(m.min_api_version):
        raise _invalid(f"min_api_version {m.min_api_version!r} is not semver", "min_api_version")
    if len(m.description.encode()) > MAX_DESCRIPTION_BYTES:
        raise _invalid(f"description exceeds {MAX_DESCRIPTION_BYTES} bytes", "description")
    if len(m.author.encode()) > 256:
        raise _invalid("author exceeds 256 bytes", "author")
    if len(m.tags) > MAX_TAGS or any(not t or len(t.encode()) > MAX_TAG_BYTES for t in m.tags):
        raise _invalid(f"at most {MAX_TAGS} tags of 1-{MAX_TAG_BYTES} bytes", "tags")
    sig = m.signature
    if sig is not None and not (
        _HEX64.fullmatch(sig.author_pubkey) and _HEX128.fullmatch(sig.signature) and _HEX64.fullmatch(sig.wasm_hash)
    ):
        raise _invalid("signature fields must be lowercase hex (32-byte key, 64-byte signature, 32-byte hash)", "signature")


def parse_manifest(raw: bytes | str) -> PluginManifest:
    """Decode and validate ``plugin.json``; any problem is ``INVALID_MANIFEST``."""
    check_depth(raw, max_depth=MAX_MANIFEST_DEPTH, code=ErrorCode.INVALID_MANIFEST)
    try:
        manifest = msgspec.json.decode(raw, type=PluginManifest)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise AspenError(ErrorCode.INVALID_MANIFEST, f"plugin.json: {exc}") from exc
    validate_manifest(manifest)
    return manifest
