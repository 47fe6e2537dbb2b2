"""The storage protocols every backend implements (embedded SQLite, etcd).

Semantics follow etcd v3: a global revision bumped once per write operation
(a batch or transaction is one revision), per-key version, leases whose
expiry deletes attached keys (emitting delete events), watches resumable
from any retained revision. Every limit violation raises
:class:`aspen.errors.AspenError` with a stable code. A KV store is a front
door (:mod:`aspen.storage.front_door`) that validates each request once over
a backend doing only the raw operations (:mod:`aspen.storage.backend`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

from aspen.storage.records import (
    BlobAddResult,
    BlobPage,
    CasResult,
    Compare,
    KeyValue,
    LeaseInfo,
    ScanPage,
    TxnOp,
    TxnResult,
    WatchEvent,
    WriteOp,
)


@runtime_checkable
class KeyValueStore(Protocol):
    async def get(self, key: str) -> KeyValue | None: ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Store ``value``; returns the new revision. ``lease`` must exist."""

    async def delete(self, key: str) -> bool:
        """Delete one key; True when it existed."""

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix`` (non-empty); returns the count."""

    async def scan(
        self,
        prefix: str | None = None,
        *,
        start: str | None = None,
        end: str | None = None,
        limit: int = 1000,
        continuation: str | None = None,
    ) -> ScanPage:
        """Keys in key order: by ``prefix`` or by range ``[start, end)``
        (``end=None`` means to the end of the key space). ``limit`` 1..10 000.
        ``continuation`` is the token of the previous page."""

    async def compare_and_swap(self, key: str, expected: bytes | None, new: bytes) -> CasResult:
        """Write ``new`` if the current value equals ``expected``
        (``None``: the key must not exist). CAS clears any lease."""

    async def compare_and_delete(self, key: str, expected: bytes) -> CasResult: ...

    async def batch_read(self, keys: Sequence[str]) -> list[KeyValue | None]: ...

    async def batch_write(self, ops: Sequence[WriteOp]) -> int:
        """Apply puts and deletes atomically at one revision; returns it."""

    async def transaction(
        self,
        compares: Sequence[Compare],
        on_success: Sequence[TxnOp] = (),
        on_failure: Sequence[TxnOp] = (),
    ) -> TxnResult: ...

    def watch(self, prefix: str, start_revision: int | None = None) -> AsyncIterator[WatchEvent]:
        """Events for keys under ``prefix`` (``""`` = all) with revision >=
        ``start_revision`` (None = only new events). Raises ``COMPACTED`` when
        that revision is no longer retained. Close the iterator (``aclose``)
        to stop watching."""

    async def lease_grant(self, ttl: int, lease_id: int = 0) -> LeaseInfo: ...

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo: ...

    async def lease_revoke(self, lease_id: int) -> int:
        """Revoke and delete attached keys; returns how many were deleted."""

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo: ...

    async def lease_list(self) -> list[LeaseInfo]: ...

    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None:
        """Forget watch history before ``revision`` (etcd's compact); a watch
        from an older revision then raises ``COMPACTED``."""

    async def close(self) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """BLAKE3-addressed blobs (lowercase hex). Writes are atomic; reads verify."""

    async def add_bytes(self, data: bytes) -> BlobAddResult: ...

    async def add_stream(self, chunks: AsyncIterable[bytes]) -> BlobAddResult:
        """Stream a blob in without holding it in memory."""

    async def add_file(self, path: str) -> BlobAddResult: ...

    async def get_bytes(self, hash: str, *, offset: int = 0, length: int | None = None) -> bytes: ...

    def get_stream(
        self, hash: str, *, offset: int = 0, length: int | None = None, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Stream a blob (or a byte range). A whole-blob read is verified
        against the hash as it streams; a mismatch raises ``BLOB_CORRUPT``."""

    async def has(self, hash: str) -> bool: ...

    async def size(self, hash: str) -> int: ...

    async def list(self, *, limit: int = 1000, continuation: str | None = None) -> BlobPage: ...

    async def delete(self, hash: str, *, force: bool = False) -> bool:
        """Delete a blob; refused with ``BLOB_PROTECTED`` while tagged unless ``force``."""

    async def protect(self, hash: str, tag: str) -> None: ...

    async def unprotect(self, tag: str) -> None: ...

    async def gc(self, *, grace_seconds: float = 300.0) -> list[str]:
        """Remove unprotected blobs older than the grace period; returns their hashes."""

    async def verify(self, hash: str) -> bool:
        """Re-hash a stored blob; False (and quarantine) when corrupt."""

    async def close(self) -> None: ...
