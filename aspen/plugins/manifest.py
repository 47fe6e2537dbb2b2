"""The plugin manifest: one record for ``plugin.json`` on disk, the install
record the lifecycle stores, and what the loader enforces.

Decoding is strict (unknown fields are refused, so a typo such as
``"kv_raed": true`` cannot silently leave a permission off); the rules a
decoded manifest must follow are the table in :mod:`aspen.plugins.rules`.
Limits from the manifest are capped by the node's :class:`NodePluginLimits`.
"""

from __future__ import annotations

import re

import msgspec

from aspen.errors import AspenError, ErrorCode

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

# Semantic Versioning 2.0.0, as published at semver.org.
_SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?"
)

PERMISSIONS = (
    "kv_read",
    "kv_write",
    "blob_read",
    "blob_write",
    "cluster_info",
    "randomness",
    "signing",
    "leases",
    "hooks",
    "timers",
)


class PluginPermissions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Host capabilities; every one is denied unless the manifest grants it."""

    kv_read: bool = False
    kv_write: bool = False
    blob_read: bool = False
    blob_write: bool = False
    cluster_info: bool = False
    randomness: bool = False
    signing: bool = False
    leases: bool = False  # aspen_lease_* and puts with "lease" (aspen.plugins.host_leases)
    hooks: bool = False  # subscribe to hook events (aspen.plugins.hook_functions)
    timers: bool = False  # aspen_schedule_timer and friends (aspen.plugins.timers)

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
    runtime: str = "wasm"  # or "process": then wasm_hash is the bundle's (aspen.plugins.bundle)
    command: tuple[str, ...] = ()  # process: the argv, no shell
    env: dict[str, str] = {}  # process: added to the sandbox's fixed environment
    cwd: str = "."  # process: the working directory, relative to the bundle
    allowed_hosts: tuple[str, ...] = ()  # process: host[:port] patterns its egress proxy allows (else no network)


def is_semver(text: str) -> bool:
    return _SEMVER.fullmatch(text) is not None


def semver_key(text: str) -> tuple[int, int, int]:
    """MAJOR, MINOR, PATCH of a valid semver string (pre-release tags are not ordered)."""
    match = _SEMVER.fullmatch(text)
    if match is None:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{text!r} is not semver")
    return int(match[1]), int(match[2]), int(match[3])
