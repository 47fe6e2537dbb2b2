"""The blob's own BLAKE3 tree, cut at 256 KiB segments: each segment's chaining value
(its subtree in the blob's tree, not a hash of its own) and the merge of those values
into the root hash, which is the blob's address.

So a segment table is checked against the address with one compression per segment,
and a verified segment is verified against the root: a whole read hashes its bytes
once. The ``blake3`` package cannot give chaining values, hence ``_treehash.c`` (the
official BLAKE3 C implementation, from Debian's ``librust-blake3-dev``) or its
pure-Python twin :mod:`aspen.storage.tree_hash_py` (same values, far slower), chosen
once at import; ``ASPEN_TREEHASH=python`` forces the twin.
"""

from __future__ import annotations

import os

NATIVE = os.environ.get("ASPEN_TREEHASH") != "python"
if NATIVE:
    try:
        from aspen.storage._treehash import root_of, segment_cvs
    except ImportError:  # not built: no compiler, or no BLAKE3 C sources
        NATIVE = False
if not NATIVE:
    from aspen.storage.tree_hash_py import root_of, segment_cvs

__all__ = ["NATIVE", "root_of", "segment_cvs"]
