"""A bounded LRU of whole blobs that were verified (segments and root hash) when fetched.

Content addressing makes it safe to share across readers and never stale: a hash names
one content forever; the store still checks the KV record on every read, so a blob
deleted elsewhere is not served from here. Entries above a quarter of the budget are not
kept, so one large blob cannot flush every hot plugin module.
"""

from __future__ import annotations

from collections import OrderedDict


class BlobCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.max_entry = max_bytes // 4
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, h: str) -> bytes | None:
        data = self._items.get(h)
        if data is None:
            self.misses += 1
            return None
        self._items.move_to_end(h)
        self.hits += 1
        return data

    def fits(self, size: int) -> bool:
        return 0 < size <= self.max_entry

    def put(self, h: str, data: bytes) -> None:
        """Only bytes that already verified against ``h`` may be put."""
        if not self.fits(len(data)) or h in self._items:
            return
        self._items[h] = data
        self.bytes += len(data)
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= len(old)

    def drop(self, h: str) -> None:
        data = self._items.pop(h, None)
        if data is not None:
            self.bytes -= len(data)
