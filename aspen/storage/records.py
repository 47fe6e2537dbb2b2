"""The records of the storage layer: one definition each, used by every
backend, the RPC layer, the client and the CLI.

Keys are ``str`` (UTF-8, ordered by their UTF-8 bytes, as etcd orders bytes);
values are ``bytes``. Revisions follow etcd: one global counter that every
write bumps; all keys written by one batch/transaction share a revision.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class KeyValue(msgspec.Struct, frozen=True):
    key: str
    value: bytes
    version: int  # 1 on create, +1 per write; a recreated key starts at 1
    create_revision: int
    mod_revision: int
    lease: int = 0  # 0 = no lease


class ScanPage(msgspec.Struct, frozen=True):
    entries: list[KeyValue]
    is_truncated: bool
    continuation_token: str | None  # opaque; pass back unchanged
    revision: int  # store revision the page was read at


class CasResult(msgspec.Struct, frozen=True):
    succeeded: bool
    actual: KeyValue | None  # the entry after success, the current one on failure
    revision: int


# --- transactions -----------------------------------------------------------

CompareTarget = Literal["value", "version", "create_revision", "mod_revision", "exists"]
CompareOp = Literal["==", "!=", ">", "<"]


class Compare(msgspec.Struct, frozen=True):
    """One transaction guard. A missing key has version/revisions 0, value
    ``None`` (so ``value == b""`` is false for it) and ``exists`` False."""

    key: str
    target: CompareTarget
    op: CompareOp = "=="
    value: bytes | int | bool | None = None


class PutOp(msgspec.Struct, frozen=True, tag="put"):
    key: str
    value: bytes
    lease: int = 0


class DeleteOp(msgspec.Struct, frozen=True, tag="delete"):
    key: str
    prefix: bool = False  # delete every key starting with ``key``


class GetOp(msgspec.Struct, frozen=True, tag="get"):
    key: str


class RangeOp(msgspec.Struct, frozen=True, tag="range"):
    prefix: str
    limit: int = 1000


WriteOp = PutOp | DeleteOp
TxnOp = PutOp | DeleteOp | GetOp | RangeOp


class TxnOpResult(msgspec.Struct, frozen=True):
    """Result of one op in a transaction branch, same index as the op.

    put: ``revision``; delete: ``deleted`` (count); get: ``kv``; range:
    ``kvs`` and ``more``."""

    op: Literal["put", "delete", "get", "range"]
    revision: int = 0
    deleted: int = 0
    kv: KeyValue | None = None
    kvs: list[KeyValue] = []
    more: bool = False


class TxnResult(msgspec.Struct, frozen=True):
    succeeded: bool  # every compare held, ``on_success`` ran
    failed_compare: int | None  # index of the first compare that failed
    results: list[TxnOpResult]
    revision: int


# --- watch and leases -------------------------------------------------------


class WatchEvent(msgspec.Struct, frozen=True):
    """A change. For ``delete``, ``kv`` carries the key, an empty value and
    ``mod_revision`` = the revision of the delete."""

    type: Literal["put", "delete"]
    kv: KeyValue
    revision: int
    prev: KeyValue | None = None


class LeaseInfo(msgspec.Struct, frozen=True):
    id: int
    granted_ttl: int  # seconds
    remaining_ttl: int  # seconds; -1 once expired
    keys: list[str] = []


# --- blobs ------------------------------------------------------------------


class BlobInfo(msgspec.Struct, frozen=True):
    hash: str  # lowercase hex BLAKE3
    size: int
    created_at_ms: int = 0
    tags: list[str] = []


class BlobAddResult(msgspec.Struct, frozen=True):
    hash: str
    size: int
    was_new: bool


class BlobPage(msgspec.Struct, frozen=True):
    blobs: list[BlobInfo]
    is_truncated: bool
    continuation_token: str | None
