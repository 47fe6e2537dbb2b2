"""Aspen: a plugin-extensible platform for distributed applications.

Two primitives at the bottom (an ordered transactional key-value store and a
BLAKE3 content-addressed blob store); everything else is a stateless layer.
"""

__version__ = "0.1.0"

from typing import Any

from aspen.errors import AspenError, ErrorCode

__all__ = ["AspenError", "Client", "ErrorCode", "SyncClient", "__version__"]


def __getattr__(name: str) -> Any:
    """The client on first use, so a process plugin importing ``aspen.plugin_sdk``
    loads neither the HTTP client nor its dependencies."""
    if name in ("Client", "SyncClient"):
        from aspen import client

        return getattr(client, name)
    raise AttributeError(f"module 'aspen' has no attribute {name!r}")
