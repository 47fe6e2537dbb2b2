"""The ``nix`` executor: ``nix build`` of flake installables, in the job sandbox.

Payload: ``{"installable": "nixpkgs#hello", "args": ["-L", "nixpkgs#jq"]}``.
``args`` is an allow-list: more installables, ``-L``/``--print-build-logs``
and ``--out-link PATH`` (relative, in the job's work dir). Anything else that
looks like an option (``--option``, ``--impure``, ``--expr``, ``-f`` …) is
refused with ``INVALID_ARGUMENT``: options are how an evaluation escapes its
purity or reaches the host.

In the sandbox nix needs: ``/nix`` bound read-only (the store, the ``nix``
binary of a multi-user install and the daemon socket, which can be connected
to on a read-only mount), ``NIX_REMOTE=daemon`` (builds and store writes are
the daemon's, which runs its own build sandbox), a writable ``HOME``/cache
(the job's ``/work``), ``/etc/nix`` (under ``/etc``), and network only for
fetching flake inputs the daemon does not already have (``[jobs] nix_network =
true``; off by default, so only local or already-fetched inputs build). The
sandbox uid must be in the daemon's ``allowed-users`` (``*`` by default).

Where nix is not installed the job fails at once with ``EXECUTOR_UNAVAILABLE``
(not retried: another attempt on this node cannot help).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import PurePosixPath
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.cgroup import Cgroups
from aspen.jobs.executors.shell import SandboxedRunner
from aspen.jobs.limits import LimitPolicy
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.sandbox import PATH, Sandbox, job_env
from aspen.jobs.worker import JobContext

MAX_ARGS = 64
MAX_INSTALLABLE = 1024
MAX_OUT_PATHS_BYTES = 64 * 1024
FLAGS = frozenset({"-L", "--print-build-logs"})
WITH_VALUE = frozenset({"--out-link", "-o"})
NIX_BIN_DIRS = ("/nix/var/nix/profiles/default/bin", "/run/current-system/sw/bin")


class NixPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    installable: str
    args: list[str] = []
    limits: dict[str, int | float] = {}


def _installable(value: str) -> str:
    if not value or value.startswith("-") or len(value) > MAX_INSTALLABLE or "\0" in value:
        raise AspenError(ErrorCode.INVALID_JOB, f"installable must be 1-{MAX_INSTALLABLE} characters and not an option")
    return value


def check_args(args: list[str]) -> tuple[list[str], bool]:
    """The allowed ``args`` as given, and whether an out link was asked for."""
    if len(args) > MAX_ARGS:
        raise AspenError(ErrorCode.INVALID_ARGUMENT, f"at most {MAX_ARGS} nix args")
    out, link, rest = [], False, iter(args)
    for arg in rest:
        if arg in FLAGS:
            out.append(arg)
        elif arg in WITH_VALUE:
            path = next(rest, None) or ""
            parts = PurePosixPath(path)
            if not path or "\0" in path or parts.is_absolute() or ".." in parts.parts:
                raise AspenError(ErrorCode.INVALID_ARGUMENT, f"{arg} needs a relative path in the work dir", arg=arg)
            out += [arg, path]
            link = True
        elif arg.startswith("-"):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT,
                f"nix argument {arg!r} is not allowed (allowed: installables, -L, --out-link PATH)",
                arg=arg,
            )
        else:
            out.append(_installable(arg))
    return out, link


def parse_payload(payload: Any) -> NixPayload:
    try:
        spec = msgspec.convert(payload, NixPayload)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad nix payload: {exc}") from exc
    _installable(spec.installable)
    check_args(spec.args)
    return spec


def _read_paths(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as f:
        return [line.strip() for line in f.read(MAX_OUT_PATHS_BYTES).splitlines() if line.strip()]


class NixWorker:
    job_types = frozenset({"nix"})

    def __init__(
        self,
        *,
        concurrency: int = 1,
        sandbox: Sandbox | None = None,
        policy: LimitPolicy | None = None,
        cgroups: Cgroups | bool | None = True,
        nix: str | None = None,
    ) -> None:
        """``nix``: the binary (default: found on PATH or in a nix profile
        when a job runs); its directory is bound into the sandbox too."""
        self.concurrency = concurrency
        self.nix = nix
        self._sandbox = sandbox or Sandbox()
        self._policy = policy
        self._cgroups = cgroups
        self._runner: SandboxedRunner | None = None

    def validate(self, payload: Any) -> None:
        spec = parse_payload(payload)
        (self._policy or LimitPolicy()).resolve(spec.limits)

    def _find(self) -> str | None:
        return self.nix or shutil.which("nix") or shutil.which("nix", path=os.pathsep.join(NIX_BIN_DIRS))

    def _runner_for(self, nix: str) -> SandboxedRunner:
        if self._runner is None:
            binds = [p for p in ("/nix", os.path.dirname(nix)) if os.path.exists(p)]
            sb = self._sandbox
            sandbox = Sandbox(sb.mode, uid=sb.uid, gid=sb.gid, ro_binds=[*sb.ro_binds, *binds], network=sb.network)
            self._runner = SandboxedRunner(sandbox, self._policy, self._cgroups)
        return self._runner

    async def execute(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        spec = parse_payload(job.payload)
        nix = self._find()
        if nix is None:
            raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "nix is not installed on this node")
        runner = self._runner_for(nix)
        limits = runner.policy.resolve(spec.limits)
        args, link = check_args(spec.args)
        argv = [
            nix, "--extra-experimental-features", "nix-command flakes",
            "build", *([] if link else ["--no-link"]), "--print-out-paths", *args, "--", spec.installable,
        ]  # fmt: skip
        env = job_env({}, NIX_REMOTE="daemon", PATH=f"{os.path.dirname(nix)}:{PATH}", ASPEN_JOB_ID=job.id)
        out_dir = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"aspen-nix-{job.id}-")
        out_path = os.path.join(out_dir, "out-paths")
        try:
            out = await asyncio.to_thread(open, out_path, "wb")
            try:
                code, _ = await runner.run(job, ctx, argv, cwd=".", limits=limits, env=env, stdout=out.fileno())
            finally:
                out.close()
            paths = await asyncio.to_thread(_read_paths, out_path)
        finally:
            await asyncio.to_thread(shutil.rmtree, out_dir, True)
        if code != 0:
            raise JobFailure(f"nix build exited with {code}", code=f"EXIT_{code}")
        return {"out_paths": paths}

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
