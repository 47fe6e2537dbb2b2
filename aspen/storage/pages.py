"""Every entry under a prefix, page after page: the loop over continuation
tokens that indexes and quotas need, written once."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aspen.storage.protocol import KeyValueStore
from aspen.storage.records import KeyValue


async def scan_all(kv: KeyValueStore, prefix: str, *, page_size: int = 1000) -> AsyncIterator[KeyValue]:
    token = None
    while True:
        page = await kv.scan(prefix, limit=page_size, continuation=token)
        for entry in page.entries:
            yield entry
        if not page.is_truncated:
            return
        token = page.continuation_token


async def count_prefix(kv: KeyValueStore, prefix: str) -> int:
    return sum([1 async for _ in scan_all(kv, prefix, page_size=10_000)])
