"""The one gate between a plugin and the node's services.

Every host function asks :class:`PluginGate` before it does any I/O: first
``require`` (the manifest permission), then ``check_key`` / ``check_scan``
for every key, scan prefix and continuation token it was handed. There is
no other path from a guest to the store, so isolation is as strong as this
file — which is why it is small and has property tests. Denials are logged
through the plugin's :class:`LogThrottle` (``self.log``, which the runtime and
host functions share), so a guest that loops over a denied call cannot flood
the node's log.
"""

from __future__ import annotations

import logging

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.log_throttle import LogThrottle
from aspen.storage.limits import check_key, decode_continuation

log = logging.getLogger("aspen.plugins")


class PluginGate:
    __slots__ = ("log", "permissions", "plugin", "prefixes")

    def __init__(self, plugin: str, permissions: frozenset[str], prefixes: tuple[str, ...]) -> None:
        if not prefixes or any(not p for p in prefixes):
            # A gate that would allow everything is a bug upstream, never a policy.
            raise AspenError(ErrorCode.INTERNAL, f"plugin {plugin!r}: a gate needs non-empty prefixes")
        self.plugin = plugin
        self.permissions = permissions
        self.prefixes = prefixes
        self.log = LogThrottle(log)

    def require(self, permission: str) -> None:
        if permission not in self.permissions:
            self.log.log(
                ("denied", permission),
                logging.WARNING,
                "plugin %s denied: lacks permission %s",
                self.plugin,
                permission,
            )
            raise AspenError(
                ErrorCode.PERMISSION_DENIED,
                f"plugin '{self.plugin}' lacks the '{permission}' permission",
                plugin=self.plugin,
                permission=permission,
            )

    def allows(self, key: str) -> bool:
        return any(key.startswith(p) for p in self.prefixes)

    def _deny(self, what: str, key: object, op: str) -> AspenError:
        self.log.log(
            ("denied", op),
            logging.WARNING,
            "plugin %s denied: %s %s %r outside its prefixes",
            self.plugin,
            op,
            what,
            key,
        )
        return AspenError(
            ErrorCode.KV_PREFIX_DENIED,
            f"plugin '{self.plugin}' may not {op} {what} {key!r}: outside its prefixes {list(self.prefixes)}",
            plugin=self.plugin,
            op=op,
        )

    def check_key(self, key: object, op: str) -> str:
        """A key the plugin may touch (valid per storage limits, under a prefix)."""
        check_key(key)
        assert isinstance(key, str)
        if not self.allows(key):
            raise self._deny("key", key, op)
        return key

    def check_scan(self, prefix: object, continuation: object = None, op: str = "scan") -> str:
        """A scan prefix must itself lie under an allowed prefix (so ``""`` never
        passes), and a continuation token must point inside that prefix — a
        forged token must not move the scan's start outside it."""
        if not isinstance(prefix, str) or not prefix:
            raise self._deny("prefix", prefix, op)
        check_key(prefix)
        if not self.allows(prefix):
            raise self._deny("prefix", prefix, op)
        if continuation is not None:
            if not isinstance(continuation, str):
                raise AspenError(ErrorCode.INVALID_CONTINUATION, "continuation must be a string")
            last = decode_continuation(continuation)
            if not last.startswith(prefix.encode()):
                raise self._deny("continuation", continuation, op)
        return prefix
