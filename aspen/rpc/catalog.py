"""The core request catalog: one msgspec Struct per request body and per
response body, shared by the node's handlers, the client and the CLI.

Names follow the Rust Aspen ``ClientRpcRequest`` variants. Binary fields are
``bytes``: base64 in JSON, raw in msgpack (msgspec does both). Decoding a body
through its Struct is what turns a wrong field type into a
``VALIDATION_ERROR`` that names the field.
"""

from __future__ import annotations

from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.storage.records import (
    BlobInfo,
    Compare,
    KeyValue,
    LeaseInfo,
    TxnOp,
    TxnOpResult,
    WatchEvent,
    WriteOp,
)


class Body(msgspec.Struct, kw_only=True):
    """Base of every request and response body."""


# --- node -------------------------------------------------------------------


class Ping(Body):
    pass


class Pong(Body):
    pass


class GetHealth(Body):
    pass


class HealthResult(Body):
    status: str  # "ok" or "draining"
    node_id: str
    uptime_seconds: float
    revision: int


class GetNodeInfo(Body):
    pass


class NodeInfoResult(Body):
    node_id: str
    endpoint_addr: str
    version: str
    request_types: list[str]


# --- kv ---------------------------------------------------------------------


class ReadKey(Body):
    key: str


class ReadResult(Body):
    was_found: bool
    value: bytes | None = None
    kv: KeyValue | None = None


class WriteKey(Body):
    key: str
    value: bytes
    lease_id: int = 0


class WriteKeyWithLease(Body):
    key: str
    value: bytes
    lease_id: int


class WriteResult(Body):
    is_success: bool
    revision: int


class DeleteKey(Body):
    key: str


class DeleteResult(Body):
    key: str
    was_deleted: bool


class ScanKeys(Body):
    prefix: str = ""
    limit: int = 1000
    continuation_token: str | None = None


class ScanResult(Body):
    entries: list[KeyValue]
    count: int
    is_truncated: bool
    continuation_token: str | None
    revision: int


class CompareAndSwapKey(Body):
    key: str
    expected: bytes | None  # None: create only
    new_value: bytes


class CompareAndDeleteKey(Body):
    key: str
    expected: bytes


class CompareAndSwapResult(Body):
    is_success: bool
    actual: KeyValue | None  # the entry after success, the current one on failure
    revision: int


class BatchRead(Body):
    keys: list[str]


class BatchReadResult(Body):
    entries: list[KeyValue | None]  # same order as the keys; None = missing


class BatchWrite(Body):
    operations: list[WriteOp]


class BatchWriteResult(Body):
    is_success: bool
    operations_applied: int
    revision: int


class ConditionalBatchWrite(Body):
    """An etcd-style transaction: ``operations`` run when every condition
    holds, ``else_operations`` otherwise."""

    conditions: list[Compare]
    operations: list[TxnOp]
    else_operations: list[TxnOp] = []


class ConditionalBatchWriteResult(Body):
    is_success: bool  # every condition held
    failed_condition_index: int | None
    results: list[TxnOpResult]
    revision: int


# --- watch ------------------------------------------------------------------


class WatchCreate(Body):
    prefix: str = ""
    start_revision: int | None = None  # None: only changes after the create


class WatchCreateResult(Body):
    watch_id: int
    start_revision: int
    stream_path: str  # GET this (SSE) to receive the events


class WatchCancel(Body):
    watch_id: int


class WatchCancelResult(Body):
    watch_id: int
    was_cancelled: bool


class WatchEventMessage(Body):
    """One event pushed on a watch stream (SSE data or WebSocket message)."""

    watch_id: int
    event: WatchEvent


# --- leases -----------------------------------------------------------------


class LeaseGrant(Body):
    ttl_seconds: int
    lease_id: int = 0  # 0: the node picks one


class LeaseGrantResult(Body):
    lease_id: int
    ttl_seconds: int


class LeaseRevoke(Body):
    lease_id: int


class LeaseRevokeResult(Body):
    lease_id: int
    keys_deleted: int


class LeaseKeepalive(Body):
    lease_id: int


class LeaseKeepaliveResult(Body):
    lease_id: int
    ttl_seconds: int


class LeaseTimeToLive(Body):
    lease_id: int
    include_keys: bool = False


class LeaseTimeToLiveResult(Body):
    lease: LeaseInfo


class LeaseList(Body):
    pass


class LeaseListResult(Body):
    leases: list[LeaseInfo]


# --- blobs ------------------------------------------------------------------

# A blob sent inside an RPC message counts against the message limit
# (base64 in JSON grows it by a third); bigger blobs use /v1/blobs.
MAX_RPC_BLOB_BYTES = 3 << 20


class AddBlob(Body):
    data: bytes
    tag: str | None = None  # protect the new blob under this tag


class AddBlobResult(Body):
    hash: str
    size: int
    was_new: bool


class GetBlob(Body):
    hash: str
    offset: int = 0
    length: int | None = None


class GetBlobResult(Body):
    was_found: bool
    data: bytes | None = None
    size: int = 0  # size of the whole blob


class HasBlob(Body):
    hash: str


class HasBlobResult(Body):
    does_exist: bool


class ListBlobs(Body):
    limit: int = 1000
    continuation_token: str | None = None


class ListBlobsResult(Body):
    blobs: list[BlobInfo]
    is_truncated: bool
    continuation_token: str | None


class DeleteBlob(Body):
    hash: str
    is_force: bool = False


class DeleteBlobResult(Body):
    was_deleted: bool


class ProtectBlob(Body):
    hash: str
    tag: str


class ProtectBlobResult(Body):
    is_success: bool


class UnprotectBlob(Body):
    tag: str


class UnprotectBlobResult(Body):
    is_success: bool


# --- plugins ----------------------------------------------------------------


class PluginReload(Body):
    name: str | None = None  # None: every plugin


class PluginReloadResult(Body):
    is_success: bool
    plugin_count: int
    message: str
    error: str | None = None


# --- the table --------------------------------------------------------------

# request type -> (request body, response type, response body)
CORE_REQUESTS: dict[str, tuple[type[Body], str, type[Body]]] = {
    "Ping": (Ping, "Pong", Pong),
    "GetHealth": (GetHealth, "HealthResult", HealthResult),
    "GetNodeInfo": (GetNodeInfo, "NodeInfoResult", NodeInfoResult),
    "ReadKey": (ReadKey, "ReadResult", ReadResult),
    "WriteKey": (WriteKey, "WriteResult", WriteResult),
    "WriteKeyWithLease": (WriteKeyWithLease, "WriteResult", WriteResult),
    "DeleteKey": (DeleteKey, "DeleteResult", DeleteResult),
    "ScanKeys": (ScanKeys, "ScanResult", ScanResult),
    "CompareAndSwapKey": (CompareAndSwapKey, "CompareAndSwapResult", CompareAndSwapResult),
    "CompareAndDeleteKey": (CompareAndDeleteKey, "CompareAndSwapResult", CompareAndSwapResult),
    "BatchRead": (BatchRead, "BatchReadResult", BatchReadResult),
    "BatchWrite": (BatchWrite, "BatchWriteResult", BatchWriteResult),
    "ConditionalBatchWrite": (ConditionalBatchWrite, "ConditionalBatchWriteResult", ConditionalBatchWriteResult),
    "WatchCreate": (WatchCreate, "WatchCreateResult", WatchCreateResult),
    "WatchCancel": (WatchCancel, "WatchCancelResult", WatchCancelResult),
    "LeaseGrant": (LeaseGrant, "LeaseGrantResult", LeaseGrantResult),
    "LeaseRevoke": (LeaseRevoke, "LeaseRevokeResult", LeaseRevokeResult),
    "LeaseKeepalive": (LeaseKeepalive, "LeaseKeepaliveResult", LeaseKeepaliveResult),
    "LeaseTimeToLive": (LeaseTimeToLive, "LeaseTimeToLiveResult", LeaseTimeToLiveResult),
    "LeaseList": (LeaseList, "LeaseListResult", LeaseListResult),
    "AddBlob": (AddBlob, "AddBlobResult", AddBlobResult),
    "GetBlob": (GetBlob, "GetBlobResult", GetBlobResult),
    "HasBlob": (HasBlob, "HasBlobResult", HasBlobResult),
    "ListBlobs": (ListBlobs, "ListBlobsResult", ListBlobsResult),
    "DeleteBlob": (DeleteBlob, "DeleteBlobResult", DeleteBlobResult),
    "ProtectBlob": (ProtectBlob, "ProtectBlobResult", ProtectBlobResult),
    "UnprotectBlob": (UnprotectBlob, "UnprotectBlobResult", UnprotectBlobResult),
    "PluginReload": (PluginReload, "PluginReloadResult", PluginReloadResult),
}

CORE_REQUEST_TYPES = frozenset(CORE_REQUESTS)

# Safe to send twice: the client retries these on transport errors.
IDEMPOTENT_REQUESTS = frozenset(
    {
        "Ping", "GetHealth", "GetNodeInfo", "ReadKey", "ScanKeys", "BatchRead",
        "LeaseTimeToLive", "LeaseList", "GetBlob", "HasBlob", "ListBlobs",
        # read-only requests of the layers above (retried by the client too)
        "ClusterStatus", "JobStatus", "JobList", "JobLogs", "JobWorkers", "JobStats",
        "LockStatus", "CounterGet", "SignedCounterGet", "SequenceCurrent", "RateLimiterAvailable",
        "SemaphoreStatus", "ElectionLeader", "QueuePeek", "QueueStatus", "QueueGetDLQ", "BarrierStatus",
        "RWLockStatus",
    }
)  # fmt: skip


def parse_body(body: dict[str, Any], cls: type[Body]) -> Any:
    """Decode a request body dict (JSON: base64 strings; msgpack: raw bytes)
    into its Struct; a mismatch is a ``VALIDATION_ERROR`` naming the field."""
    try:
        return msgspec.convert(body, cls)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.VALIDATION_ERROR, str(exc)) from None


def to_body(struct: msgspec.Struct) -> dict[str, Any]:
    """A response Struct as a plain dict; bytes stay bytes so msgpack sends
    them raw and JSON base64-encodes them."""
    return msgspec.to_builtins(struct, builtin_types=(bytes,))
