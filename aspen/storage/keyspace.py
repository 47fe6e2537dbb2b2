"""The reserved key space: system state of the layers above storage.

No plugin can be granted these prefixes, and clients cannot write under them
through the core KV requests; only the layer that owns a prefix writes there,
through the store directly.
"""

from __future__ import annotations

RESERVED_PREFIXES: tuple[str, ...] = (
    "__plugins:",
    "__apps:",
    "__jobs:",
    "__cluster:",
    "__federation:",
    "__auth:",
    "__coord:",  # aspen.coordination: locks, counters, queues …
    "__hooks:",  # aspen.hookapp: the hooks users add
)


# Secrets the cluster shares through the store (the token root key, the
# federation key, each hook's owner token and signing key): no request ever reads or writes them, whatever its token
# says; prefix reads (scans, ranges, watches) that cover them leave them out.
SECRET_PREFIXES: tuple[str, ...] = ("__auth:secret:", "__federation:secret:", "__hooks:secret:")


def is_secret(key: str) -> bool:
    return key.startswith(SECRET_PREFIXES)


def overlaps(a: str, b: str) -> bool:
    """Two prefixes overlap when one starts with the other: some key is under both."""
    return a.startswith(b) or b.startswith(a)


def reserved_prefix_of(key: str, *, as_prefix: bool = False) -> str | None:
    """The reserved prefix ``key`` falls under (or, for a prefix, overlaps), if any."""
    for reserved in RESERVED_PREFIXES:
        if key.startswith(reserved) or (as_prefix and reserved.startswith(key)):
            return reserved
    return None
