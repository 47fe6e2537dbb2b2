"""What a KV backend implements: the raw operations behind the front door.

:class:`aspen.storage.front_door.KvFrontDoor` validates every request once
(as etcd's ``v3rpc`` layer does before ``mvcc``) and hands a backend only
checked, encoded input: keys as UTF-8 bytes, prefixes as ``[lo, hi)`` ranges
(``hi`` None: to the end of the key space), ops as :class:`CheckedOp`. A
backend does no input checks of its own, so every backend rejects the same
inputs with the same codes by construction. It still raises what only it
can know (``STORE_CLOSED``, ``LEASE_NOT_FOUND``, ``COMPACTED``, unavailability).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import NamedTuple, Protocol

from aspen.storage.records import (
    CasResult,
    Compare,
    KeyValue,
    LeaseInfo,
    TxnOp,
    TxnResult,
    WatchEvent,
)


class CheckedOp(NamedTuple):
    """A batch or transaction op after the front door checked it: ``key`` is
    the key (or range start) in bytes, ``end`` the range end of a prefix
    delete or range read, ``value`` a put's value as bytes."""

    op: TxnOp
    key: bytes
    end: bytes | None = None
    value: bytes | None = None


class KvBackend(Protocol):
    async def get(self, key: bytes) -> KeyValue | None: ...

    async def get_many(self, keys: list[bytes]) -> list[KeyValue | None]: ...

    async def range(self, lo: bytes, hi: bytes | None, limit: int) -> tuple[list[KeyValue], bool, int]:
        """Up to ``limit`` entries in ``[lo, hi)``; whether more follow; the revision read at."""

    async def current_revision(self) -> int: ...

    async def put(self, key: bytes, value: bytes, lease: int) -> int: ...

    async def delete(self, key: bytes) -> bool: ...

    async def delete_range(self, lo: bytes, hi: bytes | None) -> int: ...

    async def compare_and_swap(self, key: bytes, expected: bytes | None, new: bytes) -> CasResult: ...

    async def compare_and_delete(self, key: bytes, expected: bytes) -> CasResult: ...

    async def batch_write(self, ops: Sequence[CheckedOp]) -> int: ...

    async def transaction(
        self, compares: Sequence[Compare], on_success: Sequence[CheckedOp], on_failure: Sequence[CheckedOp]
    ) -> TxnResult: ...

    async def compact(self, revision: int) -> None: ...

    def watch(self, lo: bytes, hi: bytes | None, start_revision: int | None) -> AsyncIterator[WatchEvent]: ...

    async def lease_grant(self, ttl: int, lease_id: int) -> LeaseInfo: ...

    async def lease_keepalive(self, lease_id: int) -> LeaseInfo: ...

    async def lease_revoke(self, lease_id: int) -> int: ...

    async def lease_time_to_live(self, lease_id: int) -> LeaseInfo: ...

    async def lease_list(self) -> list[LeaseInfo]: ...

    async def close(self) -> None: ...
