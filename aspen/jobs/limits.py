"""Resource limits of one job: node defaults, node caps, per-job overrides.

Node config ``[jobs]``: each field of :class:`JobLimits` is a per-job default
(``memory_mb = 1024``) and ``max_<field>`` its cap (``max_memory_mb = 16384``).
A job asks for other values in its payload's ``limits``; asking for more than
the cap is refused with ``QUOTA_EXCEEDED`` at submit.

rlimits carry every limit on every job; a cgroup (``aspen.jobs.cgroup``) adds
``memory.max``, ``pids.max`` and ``cpu.max`` for the job as a whole where the
node can create one.
"""

from __future__ import annotations

import resource
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode, quota_exceeded

MiB = 1 << 20


class JobLimits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    cpu_seconds: int = 600  # RLIMIT_CPU, each process
    memory_mb: int = 1024  # RLIMIT_AS each process; memory.max of the job's cgroup
    processes: int = 256  # RLIMIT_NPROC (counted per uid: concurrent jobs share it); pids.max
    open_files: int = 1024  # RLIMIT_NOFILE
    file_size_mb: int = 1024  # RLIMIT_FSIZE: the largest file a job can write
    disk_mb: int = 256  # size of each of the job's /work and /tmp (memory-backed)
    cpus: float = 1.0  # cpu.max of the job's cgroup (cgroup only)


DEFAULTS = JobLimits()
CAPS = JobLimits(
    cpu_seconds=24 * 3600,
    memory_mb=16384,
    processes=4096,
    open_files=65536,
    file_size_mb=16384,
    disk_mb=4096,
    cpus=64.0,
)
FIELDS = JobLimits.__struct_fields__


def _convert(values: Any, what: str, code: ErrorCode) -> JobLimits:
    try:
        limits = msgspec.convert(values, JobLimits)
    except msgspec.ValidationError as exc:
        raise AspenError(code, f"{what}: {exc}") from exc
    for name in FIELDS:
        if not getattr(limits, name) > 0:
            raise AspenError(code, f"{what}: {name} must be positive")
    return limits


class LimitPolicy:
    """The node's defaults and caps; ``resolve`` gives one job's limits."""

    def __init__(self, defaults: JobLimits = DEFAULTS, caps: JobLimits = CAPS) -> None:
        for name in FIELDS:
            if getattr(defaults, name) > getattr(caps, name):
                raise AspenError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"[jobs] {name} = {getattr(defaults, name)} is above max_{name} = {getattr(caps, name)}",
                )
        self.defaults = defaults
        self.caps = caps

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> LimitPolicy:
        defaults = {n: options[n] for n in FIELDS if n in options}
        caps = {n: options[f"max_{n}"] for n in FIELDS if f"max_{n}" in options}
        return cls(
            _convert({**msgspec.to_builtins(DEFAULTS), **defaults}, "[jobs] limits", ErrorCode.INVALID_ARGUMENT),
            _convert({**msgspec.to_builtins(CAPS), **caps}, "[jobs] max_ limits", ErrorCode.INVALID_ARGUMENT),
        )

    def resolve(self, requested: dict[str, Any]) -> JobLimits:
        limits = _convert({**msgspec.to_builtins(self.defaults), **requested}, "limits", ErrorCode.INVALID_JOB)
        for name in requested:
            value, cap = getattr(limits, name), getattr(self.caps, name)
            if value > cap:
                raise quota_exceeded(f"limits.{name}", cap, value)
        return limits


def prlimit_args(limits: JobLimits) -> list[str]:
    """``prlimit`` options setting soft and hard to each limit, never above the
    node's own hard limit (an unprivileged process cannot raise it)."""

    def arg(flag: str, res: int, value: int, extra: int = 0) -> str:
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard - extra)
        return f"--{flag}={value}:{value + extra}"

    return [
        # SIGXCPU at the limit (a process may catch it and finish), SIGKILL a second later.
        arg("cpu", resource.RLIMIT_CPU, limits.cpu_seconds, extra=1),
        arg("as", resource.RLIMIT_AS, limits.memory_mb * MiB),
        arg("nproc", resource.RLIMIT_NPROC, limits.processes),
        arg("nofile", resource.RLIMIT_NOFILE, limits.open_files),
        arg("fsize", resource.RLIMIT_FSIZE, limits.file_size_mb * MiB),
        "--core=0",
    ]
