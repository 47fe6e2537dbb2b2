"""One job record and how it changes: every change is one KV transaction
guarded by the record's ``mod_revision``, and writes the state index with it.

:class:`JobRecords` is the base of :class:`aspen.jobs.store.JobStore`; the
claim, dependency and retention parts build on it."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from aspen.clock import now_ms
from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.model import (
    Job,
    check_job_id,
    decode_job,
    encode,
)
from aspen.storage.protocol import BlobStore, KeyValueStore
from aspen.storage.records import Compare, DeleteOp, KeyValue, PutOp

MAX_CAS_ATTEMPTS = 100
encode_json = msgspec.json.Encoder().encode

_id_sequence = itertools.count()


def new_job_id() -> str:
    """Sortable by creation time: 12 hex digits of ms, a per-process
    sequence (creation order within a millisecond), 8 random."""
    return f"{now_ms():012x}{next(_id_sequence) & 0xFFFF:04x}{secrets.token_hex(4)}"


def exists(key: str) -> Compare:
    return Compare(key, "exists", "==", True)


def absent(key: str) -> Compare:
    return Compare(key, "exists", "==", False)


def unchanged(key: str, kv: KeyValue | None) -> Compare:
    return Compare(key, "mod_revision", "==", kv.mod_revision if kv else 0)


def state_ops(old: Job | None, new: Job) -> list[PutOp | DeleteOp]:
    """The state index, and the submitter's index of unfinished jobs (its quota)."""
    if old is not None and old.state == new.state:
        return []
    ops: list[PutOp | DeleteOp] = [PutOp(keys.state(new.state, new.id), new.type.encode())]
    if old is not None:
        ops.insert(0, DeleteOp(keys.state(old.state, old.id)))
    was_open = old is not None and not old.state.terminal
    if new.submitter is not None and was_open != (not new.state.terminal):
        owned = keys.unfinished(new.submitter, new.id)
        ops.append(DeleteOp(owned) if new.state.terminal else PutOp(owned, b""))
    return ops


def ready_key_of(job: Job) -> str:
    return keys.ready(job.type, job.priority.rank, job.run_at_ms, job.id)


class JobRecords:
    """Reads one job record and applies compare-and-swap changes to it."""

    def __init__(self, kv: KeyValueStore, blobs: BlobStore | None = None) -> None:
        self.kv = kv
        self.blobs = blobs
        self._sweep_continuation: str | None = None  # where sweep_blocked goes on

    # --- one record ---------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        kv = await self.kv.get(keys.job(check_job_id(job_id)))
        if kv is None:
            raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
        return decode_job(kv.value)

    async def read_result(self, job: Job) -> Any:
        if job.result_blob is None:
            return job.result
        if self.blobs is None:
            raise AspenError(ErrorCode.UNAVAILABLE, "the result is in a blob and this node has no blob store")
        return msgspec.json.decode(await self.blobs.get_bytes(job.result_blob))

    # --- the generic compare-and-swap update --------------------------------

    async def _update(
        self,
        job_id: str,
        change: Callable[[Job], tuple[Job, list[PutOp | DeleteOp]] | None],
        compares: Callable[[Job], Sequence[Compare]] = lambda job: (),
    ) -> tuple[Job, Job] | None:
        """Apply ``change`` (which raises to refuse, or returns None for no-op)
        until the transaction wins. Returns (old, new)."""
        key = keys.job(check_job_id(job_id))
        for _ in range(MAX_CAS_ATTEMPTS):
            kv = await self.kv.get(key)
            if kv is None:
                raise AspenError(ErrorCode.JOB_NOT_FOUND, f"no job {job_id}", id=job_id)
            old = decode_job(kv.value)
            changed = change(old)
            if changed is None:
                return None
            new, ops = changed
            new = msgspec.structs.replace(new, updated_ms=now_ms())
            result = await self.kv.transaction(
                [unchanged(key, kv), *compares(old)],
                [PutOp(key, encode(new)), *state_ops(old, new), *ops],
            )
            if result.succeeded:
                return old, new
        raise AspenError(ErrorCode.UNAVAILABLE, f"job {job_id}: too much contention")
