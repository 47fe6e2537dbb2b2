"""Retention: deleting finished jobs after a while, with their index keys,
and releasing their log, result and output blobs."""

from __future__ import annotations

from contextlib import suppress

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs import keys
from aspen.jobs.job_records import (
    JobRecords,
    unchanged,
)
from aspen.jobs.model import (
    Job,
    JobState,
    decode_job,
)
from aspen.jobs.worker import OUTPUT_BLOBS, output_tag
from aspen.storage.records import DeleteOp


class JobRetention(JobRecords):
    """Collection of finished jobs and the blobs they held."""

    async def collect_finished(self, before_ms: int, limit: int = 500) -> list[str]:
        """Delete up to ``limit`` jobs that finished before ``before_ms``, with
        their index keys, and release their log and result blobs (deleted
        unless another tag still protects the same bytes). Ids sort by
        creation time and a job finishes after it is created, so only ids
        created before the cutoff are scanned."""
        collected: list[str] = []
        for state in sorted(s for s in JobState if s.terminal):
            if len(collected) >= limit:
                break
            prefix = keys.state_prefix(state)
            end = f"{prefix}{max(0, before_ms):012x}"
            page = await self.kv.scan(start=prefix, end=end, limit=limit - len(collected))
            ids = [e.key[len(prefix) :] for e in page.entries]
            records = await self.kv.batch_read([keys.job(i) for i in ids]) if ids else []
            for job_id, kv in zip(ids, records):
                job = decode_job(kv.value) if kv is not None else None
                if job is not None and (not job.state.terminal or (job.finished_ms or job.updated_ms) >= before_ms):
                    continue
                ops = [DeleteOp(keys.state(state, job_id)), DeleteOp(keys.dependents(job_id))]
                if kv is not None:
                    ops.append(DeleteOp(keys.job(job_id)))
                result = await self.kv.transaction([unchanged(keys.job(job_id), kv)], ops)
                if result.succeeded:
                    collected.append(job_id)
                    if job is not None:
                        await self._release_blobs(job)
        return collected

    async def _release_blobs(self, job: Job) -> None:
        if self.blobs is None:
            return
        tagged = [(f"job-log:{job.id}", job.log_blob)]
        with suppress(AspenError, msgspec.DecodeError):  # a result that is gone or is not JSON holds no outputs
            result = await self.read_result(job)
            if isinstance(result, dict) and isinstance(result.get(OUTPUT_BLOBS), dict):
                tagged += [(output_tag(job.id, n), h) for n, h in result[OUTPUT_BLOBS].items() if isinstance(h, str)]
        tagged.append((f"job-result:{job.id}", job.result_blob))
        for tag, blob in tagged:
            if blob is None:
                continue
            await self.blobs.unprotect(tag)
            try:
                await self.blobs.delete(blob)
            except AspenError as exc:
                if exc.code not in (ErrorCode.BLOB_PROTECTED, ErrorCode.BLOB_NOT_FOUND):
                    raise
