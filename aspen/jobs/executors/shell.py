"""The ``shell`` executor: a command in the job sandbox (:mod:`aspen.jobs.sandbox`).

Payload: ``{"command": "echo hi" | ["echo", "hi"], "env": {...}, "cwd": "sub/dir",
"limits": {"memory_mb": 2048, ...}}``. A string runs through ``/bin/sh -c``.
``cwd`` is relative to the job's private work directory (``/work`` in the
sandbox). ``limits`` override the node's defaults within its caps. stdout
and stderr go to the job's log, bounded by the pool's output limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.cgroup import Cgroups, JobCgroup
from aspen.jobs.executors.process import run_process
from aspen.jobs.limits import JobLimits, LimitPolicy
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.output import OutputLog
from aspen.jobs.sandbox import SANDBOX_WORKDIR, Sandbox, job_env
from aspen.jobs.worker import JobContext

log = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 64 * 1024
MAX_ARGS = 1024
MAX_ENV = 256
# Exit codes a retry cannot fix: not executable / not found.
_PERMANENT_EXITS = frozenset({126, 127})


class ShellPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    command: str | list[str]
    env: dict[str, str] = {}
    cwd: str = "."
    limits: dict[str, int | float] = {}


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


class SandboxedRunner:
    """What the shell and nix executors share: a sandbox, the node's limit
    policy and (where the node can make them) per-job cgroups."""

    def __init__(self, sandbox: Sandbox | None, policy: LimitPolicy | None, cgroups: Cgroups | bool | None) -> None:
        self.sandbox = sandbox or Sandbox()
        self.policy = policy or LimitPolicy()
        self.cgroups = Cgroups.open() if cgroups is True else cgroups or None

    async def run(
        self,
        job: Job,
        ctx: JobContext,
        command: list[str],
        *,
        cwd: str,
        limits: JobLimits,
        env: dict[str, str],
        stdout: int | None = None,
        binds: Sequence[str] = (),
        dev_binds: Sequence[str] = (),
    ) -> tuple[int, int]:
        """Run in the sandbox; returns (exit status, bytes of output dropped).
        ``env`` gets ``HOME`` (the work dir) unless it has one; ``binds`` and
        ``dev_binds`` as for :meth:`Sandbox.command`."""
        self.sandbox.check()
        if not self.sandbox.active:
            log.warning('job %s runs UNSANDBOXED on the host ([jobs] shell_sandbox = "none")', job.id)
        cgroup: JobCgroup | None = None
        host_dir = None
        try:
            if self.cgroups is not None:
                cgroup = await asyncio.to_thread(self.cgroups.create, f"job-{job.id}-{job.attempts}", limits)
            argv = self.sandbox.command(
                command, cwd=cwd, limits=limits, cgroup_procs=cgroup and cgroup.procs, binds=binds, dev_binds=dev_binds
            )
            if self.sandbox.active:
                run_in, home = "/", SANDBOX_WORKDIR
            else:  # the work dir is on the host
                host_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"aspen-job-{job.id}-")
                run_in, home = os.path.join(host_dir, cwd), host_dir
                await asyncio.to_thread(os.makedirs, run_in, exist_ok=True)
            env = {"HOME": home, **env}
            with OutputLog(ctx.log_path, ctx.output_limit) as out:
                code = await run_process(argv, env=env, cwd=run_in, log=out, stdout=stdout)
            if out.dropped:
                log.warning("job %s: output limit of %d bytes hit, %d bytes dropped", job.id, out.limit, out.dropped)
            return code, out.dropped
        finally:
            if cgroup is not None:
                await asyncio.to_thread(cgroup.close)
            if host_dir is not None:
                await asyncio.to_thread(shutil.rmtree, host_dir, True)

    def close(self) -> None:
        if self.cgroups is not None:
            self.cgroups.close()


class ShellWorker:
    job_types = frozenset({"shell"})

    def __init__(
        self,
        *,
        concurrency: int = 4,
        sandbox: Sandbox | None = None,
        policy: LimitPolicy | None = None,
        cgroups: Cgroups | bool | None = True,
    ) -> None:
        """``cgroups``: True opens the node's job cgroups when it can, or pass
        one :class:`Cgroups` shared with other workers, or None for none."""
        self.concurrency = concurrency
        self.runner = SandboxedRunner(sandbox, policy, cgroups)

    @property
    def sandbox(self) -> Sandbox:
        return self.runner.sandbox

    def validate(self, payload: Any) -> None:
        self.runner.policy.resolve(parse_payload(payload).limits)

    async def execute(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        spec = parse_payload(job.payload)
        limits = self.runner.policy.resolve(spec.limits)
        command = ["/bin/sh", "-c", spec.command] if isinstance(spec.command, str) else list(spec.command)
        env = job_env(spec.env, ASPEN_JOB_ID=job.id, ASPEN_JOB_ATTEMPT=str(job.attempts))
        started = time.monotonic()
        code, dropped = await self.runner.run(job, ctx, command, cwd=spec.cwd, limits=limits, env=env)
        took = int((time.monotonic() - started) * 1000)
        if code != 0:
            raise JobFailure(
                f"exit status {code}" if code > 0 else f"killed by signal {-code}",
                code=f"EXIT_{code}" if code > 0 else f"SIGNAL_{-code}",
                retryable=code not in _PERMANENT_EXITS,
            )
        return {
            "exit_code": code,
            "duration_ms": took,
            "sandboxed": self.sandbox.active,
            "output_dropped": dropped,
        }

    async def close(self) -> None:
        self.runner.close()
