"""A blocking client with exactly the API of :class:`aspen.client.Client`.

It runs one private event loop in a daemon thread and forwards every
coroutine method to it, and turns async iterators (``watch``) into plain
iterators, so the two clients can never drift apart.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from typing import Any, Self

from aspen.client.async_client import Client


class SyncClient:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="aspen-client", daemon=True)
        self._thread.start()
        self._client: Client = self._run(self._make(args, kwargs))

    @staticmethod
    async def _make(args: tuple, kwargs: dict) -> Client:
        return Client(*args, **kwargs)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _iterate(self, agen: Any) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self._run(anext(agen))
                except StopAsyncIteration:
                    return
        finally:
            self._run(agen.aclose())

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if inspect.iscoroutinefunction(attr):
            return lambda *a, **k: self._run(attr(*a, **k))
        if inspect.isasyncgenfunction(attr):
            return lambda *a, **k: self._iterate(attr(*a, **k))
        return attr

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
