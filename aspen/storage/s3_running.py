"""Multipart uploads in progress, recorded in KV so every node's GC leaves them alone.

GC removes an unfinished multipart upload (or an object no record references) once it is
older than ``cleanup_seconds``; without this, an upload that simply takes longer — a large
blob from a slow client — would be aborted under its writer by its own node's GC or
another's. Each running multipart upload has a key ``__cluster:blobstore:upload:{object}``
attached to its store's lease: it is removed when the upload commits or aborts, and it
vanishes with the lease (``LEASE_TTL``) when the node dies, after which the age rule
applies as before. Small blobs (one PutObject) need none: their object appears complete and
is committed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aspen.errors import AspenError
from aspen.storage import s3_meta as meta
from aspen.storage.protocol import KeyValueStore

log = logging.getLogger(__name__)

RUNNING = meta.PREFIX + "upload:"
LEASE_TTL = 30  # seconds a dead node's uploads stay protected


class RunningUploads:
    def __init__(self, kv: KeyValueStore) -> None:
        self.kv = kv
        self._lease: int | None = None
        self._keeper: asyncio.Task | None = None
        self._lock = asyncio.Lock()

    async def _lease_id(self) -> int:
        async with self._lock:
            if self._lease is None:
                self._lease = (await self.kv.lease_grant(LEASE_TTL)).id
                self._keeper = asyncio.ensure_future(self._keep(self._lease))
            return self._lease

    async def _keep(self, lease_id: int) -> None:
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            try:
                await self.kv.lease_keepalive(lease_id)
            except AspenError as exc:  # the registrations may be gone: later uploads get a new lease
                log.warning("blob upload lease %d lost: %s", lease_id, exc)
                if self._lease == lease_id:
                    self._lease = None
                return

    async def add(self, name: str) -> None:
        await self.kv.put(RUNNING + name, b"", lease=await self._lease_id())

    async def remove(self, name: str) -> None:
        with contextlib.suppress(AspenError):  # else it goes with the lease
            await self.kv.delete(RUNNING + name)

    async def names(self) -> set[str]:
        """Object names of the uploads running on any node."""
        found: set[str] = set()
        token = None
        while True:
            page = await self.kv.scan(RUNNING, continuation=token)
            found |= {e.key[len(RUNNING) :] for e in page.entries}
            token = page.continuation_token
            if not page.is_truncated or not token:
                return found

    async def close(self) -> None:
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            with contextlib.suppress(BaseException):
                await keeper
        if self._lease is not None:
            with contextlib.suppress(AspenError):
                await self.kv.lease_revoke(self._lease)
            self._lease = None
