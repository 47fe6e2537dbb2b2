"""The node's blob quotas and its periodic blob GC.

Config table ``[blobs]``::

    max_total_bytes = 10737418240   # all blobs together (QUOTA_EXCEEDED past it; on S3 the cluster's)
    max_blob_bytes = 1073741824     # one blob (BLOB_TOO_LARGE past it)
    gc_interval_seconds = 3600      # how often GC runs; 0 turns it off
    gc_grace_seconds = 3600         # an unprotected blob is kept this long after its last add

Without a periodic GC, unprotected blobs (an upload nobody pinned, a
superseded job log) would stay forever and fill the quota. GC removes only
blobs that no tag protects: plugin modules, job logs and results are tagged
by their owners. The grace period must outlast the gap between an add and
the protect that follows it (seconds in practice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.storage.blob_args import DEFAULT_MAX_BLOB_SIZE, DEFAULT_MAX_TOTAL_BYTES
from aspen.storage.protocol import BlobStore
from aspen.storage.s3_settings import S3Settings

log = logging.getLogger(__name__)


class BlobsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_total_bytes: int = DEFAULT_MAX_TOTAL_BYTES
    max_blob_bytes: int = DEFAULT_MAX_BLOB_SIZE
    gc_interval_seconds: float = 3600.0
    gc_grace_seconds: float = 3600.0


def blobs_config(config: Any) -> BlobsConfig:
    """The ``[blobs]`` table's quota and GC keys, checked; the object-store
    keys beside them are :mod:`aspen.storage.s3_settings`' (a key neither
    knows is a typo, refused)."""
    section = config.sections.get("blobs", {})
    own = set(BlobsConfig.__struct_fields__)
    unknown = set(section) - own - set(S3Settings.__struct_fields__) - {"backend", "url"}
    if unknown:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid [blobs] config: unknown keys {sorted(unknown)}")
    try:
        cfg = msgspec.convert({k: v for k, v in section.items() if k in own}, BlobsConfig)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"invalid [blobs] config: {exc}") from None
    for name in ("max_total_bytes", "max_blob_bytes"):
        if getattr(cfg, name) < 1:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[blobs] {name} must be at least 1")
    for name in ("gc_interval_seconds", "gc_grace_seconds"):
        if not 0 <= getattr(cfg, name) < float("inf"):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[blobs] {name} must be a finite number >= 0")
    return cfg


class BlobGc:
    """Runs ``blobs.gc`` every ``interval`` seconds until stopped. A failed
    pass is logged and the next one runs on schedule."""

    def __init__(self, blobs: BlobStore, *, interval: float, grace: float) -> None:
        self.blobs = blobs
        self.interval = interval
        self.grace = grace
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self.interval > 0 and self._task is None:
            self._task = asyncio.create_task(self._run(), name="blob-gc")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                removed = await self.blobs.gc(grace_seconds=self.grace)
            except AspenError as exc:
                log.warning("blob GC pass failed: %s", exc)
                continue
            if removed:
                log.info("blob GC removed %d unprotected blob(s)", len(removed))
