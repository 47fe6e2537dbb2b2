"""The ``shell`` executor: a command in a subprocess, inside bubblewrap when
it is installed (no network, read-only system, a private writable work
directory, its own PID namespace so nothing survives the job).

Payload: ``{"command": "echo hi" | ["echo", "hi"], "env": {...}, "cwd": "sub/dir"}``.
A string runs through ``/bin/sh -c``. ``cwd`` is relative to the job's
private work directory. stdout and stderr go to the job's log blob.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from pathlib import PurePosixPath
from typing import Any, Literal

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.executors.process import run_process
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.worker import JobContext

MAX_COMMAND_BYTES = 64 * 1024
MAX_ARGS = 1024
MAX_ENV = 256
SANDBOX_WORKDIR = "/work"
_RO_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
# Exit codes a retry cannot fix: not executable / not found.
_PERMANENT_EXITS = frozenset({126, 127})


class ShellPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    command: str | list[str]
    env: dict[str, str] = {}
    cwd: str = "."


def parse_payload(payload: Any) -> ShellPayload:
    try:
        spec = msgspec.convert(payload, ShellPayload)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad shell payload: {exc}") from exc
    if isinstance(spec.command, str):
        if not spec.command.strip() or len(spec.command.encode()) > MAX_COMMAND_BYTES:
            raise AspenError(ErrorCode.INVALID_JOB, f"command must be 1..{MAX_COMMAND_BYTES} bytes")
    elif not spec.command or len(spec.command) > MAX_ARGS or not spec.command[0]:
        raise AspenError(ErrorCode.INVALID_JOB, f"command must be a non-empty argv of at most {MAX_ARGS} items")
    if any("\0" in a for a in ([spec.command] if isinstance(spec.command, str) else spec.command)):
        raise AspenError(ErrorCode.INVALID_JOB, "command contains a NUL byte")
    if len(spec.env) > MAX_ENV or any(not k or "=" in k or "\0" in k + v for k, v in spec.env.items()):
        raise AspenError(ErrorCode.INVALID_JOB, f"env: at most {MAX_ENV} NAME=value pairs, names without '='")
    cwd = PurePosixPath(spec.cwd)
    if cwd.is_absolute() or ".." in cwd.parts:
        raise AspenError(ErrorCode.INVALID_JOB, "cwd must be relative to the job's work directory, without '..'")
    return spec


class ShellWorker:
    """``sandbox``: ``"auto"`` uses bwrap when present, ``"off"`` never,
    ``"required"`` fails jobs with ``EXECUTOR_UNAVAILABLE`` without it."""

    job_types = frozenset({"shell"})

    def __init__(
        self,
        *,
        concurrency: int = 4,
        sandbox: Literal["auto", "off", "required"] = "auto",
        work_root: str | None = None,
    ) -> None:
        self.concurrency = concurrency
        self.sandbox = sandbox
        self.work_root = work_root
        self.bwrap = shutil.which("bwrap") if sandbox != "off" else None

    def validate(self, payload: Any) -> None:
        parse_payload(payload)

    def _argv(self, spec: ShellPayload, work_dir: str) -> tuple[list[str], str]:
        command = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
        if self.bwrap is None:
            if self.sandbox == "required":
                raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "the shell sandbox (bwrap) is not installed")
            return command, os.path.join(work_dir, spec.cwd)
        argv = [self.bwrap, "--unshare-all", "--die-with-parent", "--new-session"]
        for path in _RO_SYSTEM:
            argv += ["--ro-bind-try", path, path]
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--tmpfs", "/tmp",
            "--bind", work_dir, SANDBOX_WORKDIR,
            "--chdir", str(PurePosixPath(SANDBOX_WORKDIR) / spec.cwd),
            "--",
            *command,
        ]  # fmt: skip
        return argv, work_dir

    async def execute(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        spec = parse_payload(job.payload)
        work_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"aspen-job-{job.id}-", dir=self.work_root)
        try:
            argv, cwd = self._argv(spec, work_dir)
            await asyncio.to_thread(os.makedirs, os.path.join(work_dir, spec.cwd), exist_ok=True)
            home = SANDBOX_WORKDIR if self.bwrap else work_dir
            env = {
                "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
                "HOME": home,
                "LANG": "C.UTF-8",
                "ASPEN_JOB_ID": job.id,
                "ASPEN_JOB_ATTEMPT": str(job.attempts),
                **spec.env,
            }
            started = time.monotonic()
            with open(ctx.log_path, "ab") as out:
                code = await run_process(argv, env=env, cwd=cwd, stdout=out.fileno(), stderr=out.fileno())
            took = int((time.monotonic() - started) * 1000)
        finally:
            await asyncio.to_thread(shutil.rmtree, work_dir, True)
        if code != 0:
            raise JobFailure(
                f"exit status {code}" if code > 0 else f"killed by signal {-code}",
                code=f"EXIT_{code}" if code > 0 else f"SIGNAL_{-code}",
                retryable=code not in _PERMANENT_EXITS,
            )
        return {"exit_code": code, "duration_ms": took, "sandboxed": self.bwrap is not None}
