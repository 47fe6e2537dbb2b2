"""The ``nix`` executor: ``nix build`` of a flake installable.

Payload: ``{"installable": "nixpkgs#hello", "args": ["--impure"]}``. Where nix
is not installed the job fails at once with ``EXECUTOR_UNAVAILABLE`` (not
retried: another attempt on this node cannot help).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.process import run_process
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.worker import JobContext

MAX_ARGS = 64


class NixPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    installable: str
    args: list[str] = []


def parse_payload(payload: Any) -> NixPayload:
    try:
        spec = msgspec.convert(payload, NixPayload)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad nix payload: {exc}") from exc
    if not spec.installable or spec.installable.startswith("-") or len(spec.installable) > 1024:
        raise AspenError(ErrorCode.INVALID_JOB, "installable must be 1-1024 characters and not an option")
    if len(spec.args) > MAX_ARGS or any("\0" in a for a in spec.args):
        raise AspenError(ErrorCode.INVALID_JOB, f"at most {MAX_ARGS} args, without NUL bytes")
    return spec


class NixWorker:
    job_types = frozenset({"nix"})

    def __init__(self, *, concurrency: int = 1) -> None:
        self.concurrency = concurrency

    def validate(self, payload: Any) -> None:
        parse_payload(payload)

    async def execute(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        spec = parse_payload(job.payload)
        nix = shutil.which("nix")
        if nix is None:
            raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "nix is not installed on this node")
        argv = [
            nix, "--extra-experimental-features", "nix-command flakes",
            "build", "--no-link", "--print-out-paths", *spec.args, "--", spec.installable,
        ]  # fmt: skip
        work_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"aspen-nix-{job.id}-")
        out_path = os.path.join(work_dir, "out-paths")
        try:
            with open(out_path, "wb") as out, open(ctx.log_path, "ab") as log_file:
                code = await run_process(
                    argv, env=dict(os.environ), cwd=work_dir, stdout=out.fileno(), stderr=log_file.fileno()
                )
            with open(out_path, encoding="utf-8", errors="replace") as f:
                paths = [line.strip() for line in f if line.strip()]
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
        if code != 0:
            raise JobFailure(f"nix build exited with {code}", code=f"EXIT_{code}")
        return {"out_paths": paths}
