"""A store wrapper that counts what the primitives ask of the store."""

from __future__ import annotations

from aspen.errors import AspenError, ErrorCode


class CountingStore:
    """The store with every read and write counted (``calls``; watches are
    not reads, they are counted apart); the first ``fail_watches`` watches
    end with STORAGE_UNAVAILABLE before their first event."""

    def __init__(self, kv, fail_watches: int = 0) -> None:
        self._kv, self.calls, self.watches, self.fail_watches = kv, 0, 0, fail_watches

    def watch(self, *a, **k):
        self.watches += 1
        if self.fail_watches:
            self.fail_watches -= 1
            return self._failing()
        return self._kv.watch(*a, **k)

    async def _failing(self):
        raise AspenError(ErrorCode.STORAGE_UNAVAILABLE, "injected: the member went away")
        yield  # an async generator

    def __getattr__(self, name):
        attr = getattr(self._kv, name)

        async def counted(*a, **k):
            self.calls += 1
            return await attr(*a, **k)

        return counted
