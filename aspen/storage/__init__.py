"""Storage layer: the two primitives everything else builds on.

This package imports nothing else of Aspen except :mod:`aspen.errors`.
"""

from aspen.storage.protocol import BlobStore, KeyValueStore
from aspen.storage.records import (
    CasResult,
    Compare,
    DeleteOp,
    GetOp,
    KeyValue,
    LeaseInfo,
    PutOp,
    RangeOp,
    ScanPage,
    TxnOpResult,
    TxnResult,
    WatchEvent,
)

__all__ = [
    "BlobStore",
    "CasResult",
    "Compare",
    "DeleteOp",
    "GetOp",
    "KeyValue",
    "KeyValueStore",
    "LeaseInfo",
    "PutOp",
    "RangeOp",
    "ScanPage",
    "TxnOpResult",
    "TxnResult",
    "WatchEvent",
]
