"""Which KV prefixes a plugin may be granted.

A plugin sees only the keys under its allowed prefixes: the manifest's
``kv_prefixes`` or, when none are declared, its default namespace
``__plugin:{name}:``. System state lives under reserved prefixes that no
plugin can ever be granted, and the default namespaces of other plugins are
off limits too, so two plugins never share a key. Two prefixes *overlap*
when one starts with the other: then some key is under both.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from aspen.errors import AspenError, ErrorCode
from aspen.storage.keyspace import RESERVED_PREFIXES, overlaps
from aspen.storage.limits import MAX_KEY_BYTES

DEFAULT_NAMESPACE_ROOT = "__plugin:"
MAX_KV_PREFIXES = 16


def default_prefix(name: str) -> str:
    return f"{DEFAULT_NAMESPACE_ROOT}{name}:"


def effective_prefixes(name: str, declared: Sequence[str]) -> tuple[str, ...]:
    return tuple(declared) if declared else (default_prefix(name),)


def validate_prefixes(name: str, declared: Sequence[str]) -> tuple[str, ...]:
    """Check a manifest's ``kv_prefixes``; returns the effective prefixes.

    Refused (``INVALID_MANIFEST``): more than 16, a non-string or empty
    prefix, one too long to be a key, one overlapping a reserved prefix, and
    one under ``__plugin:`` outside the plugin's own ``__plugin:{name}:``.
    """
    if len(declared) > MAX_KV_PREFIXES:
        raise AspenError(
            ErrorCode.INVALID_MANIFEST,
            f"{len(declared)} kv_prefixes, at most {MAX_KV_PREFIXES} are allowed",
            field="kv_prefixes",
        )
    own = default_prefix(name)
    for prefix in declared:
        if not isinstance(prefix, str) or not prefix:
            raise AspenError(
                ErrorCode.INVALID_MANIFEST,
                "the empty prefix (the whole key space) can never be granted",
                field="kv_prefixes",
            )
        if len(prefix.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
            raise AspenError(ErrorCode.INVALID_MANIFEST, "kv prefix is longer than a key may be", field="kv_prefixes")
        for reserved in RESERVED_PREFIXES:
            if overlaps(prefix, reserved):
                raise AspenError(
                    ErrorCode.INVALID_MANIFEST,
                    f"kv prefix {prefix!r} overlaps the reserved prefix {reserved!r}",
                    field="kv_prefixes",
                    prefix=prefix,
                )
        if overlaps(prefix, DEFAULT_NAMESPACE_ROOT) and not prefix.startswith(own):
            raise AspenError(
                ErrorCode.INVALID_MANIFEST,
                f"kv prefix {prefix!r} reaches into other plugins' default namespaces; only {own!r} is yours",
                field="kv_prefixes",
                prefix=prefix,
            )
    return effective_prefixes(name, declared)


def find_overlap(mine: Iterable[str], others: dict[str, tuple[str, ...]]) -> tuple[str, str, str] | None:
    """The first (my prefix, other plugin, its prefix) that overlap, if any."""
    for prefix in mine:
        for other, theirs in others.items():
            for p in theirs:
                if overlaps(prefix, p):
                    return prefix, other, p
    return None
