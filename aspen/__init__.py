"""Aspen: a plugin-extensible platform for distributed applications.

Two primitives at the bottom (an ordered transactional key-value store and a
BLAKE3 content-addressed blob store); everything else is a stateless layer.
"""

from aspen.errors import AspenError, ErrorCode

__version__ = "0.1.0"

__all__ = ["AspenError", "ErrorCode", "__version__"]
