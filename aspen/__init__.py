"""Aspen: a plugin-extensible platform for distributed applications.

Two primitives at the bottom (an ordered transactional key-value store and a
BLAKE3 content-addressed blob store); everything else is a stateless layer.
"""

__version__ = "0.1.0"

from aspen.client import Client, SyncClient
from aspen.errors import AspenError, ErrorCode

__all__ = ["AspenError", "Client", "ErrorCode", "SyncClient", "__version__"]
