"""cgroup v2 limits for a whole job: ``memory.max``, ``pids.max``, ``cpu.max``.

Used when the node can make cgroups with those controllers: a cgroup v2
hierarchy is mounted, the node's own cgroup offers ``memory``, ``pids`` and
``cpu``, and the node may enable them for a child (the node's cgroup is the
hierarchy's root, or one delegated to it with no processes of its own, e.g.
systemd's ``Delegate=yes``). Otherwise :meth:`Cgroups.open` logs why and
returns None, and the jobs' rlimits carry the limits alone.

A job's process joins its cgroup before it execs anything (a shell writes
its own pid into ``cgroup.procs``, then execs the sandbox), so nothing it
forks escapes; at the end ``cgroup.kill`` ends whatever is left.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from aspen.jobs.limits import JobLimits, MiB

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "pids", "cpu")
CPU_PERIOD_US = 100_000
EMPTY_WAIT_SECONDS = 5.0


def _v2_mount() -> Path | None:
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return Path(fields[4])
    return None


def _own_cgroup() -> str:
    with open("/proc/self/cgroup", encoding="utf-8") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return "/"


def _write(path: Path, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


class Cgroups:
    """The node's parent cgroup for jobs, with the controllers enabled."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent

    @classmethod
    def open(cls, name: str | None = None) -> Cgroups | None:
        reason = None
        try:
            mount = _v2_mount()
            if mount is None:
                reason = "no cgroup v2 hierarchy is mounted"
            else:
                base = mount / _own_cgroup().lstrip("/")
                have = set((base / "cgroup.controllers").read_text().split())
                missing = [c for c in CONTROLLERS if c not in have]
                if missing:
                    reason = (
                        f"the node's cgroup {base} lacks the {', '.join(missing)} controller(s)"
                        " (bound to cgroup v1, or not delegated)"
                    )
                else:
                    return cls._create(base, name or f"aspen-jobs-{os.getpid()}")
        except OSError as exc:
            reason = f"cannot set up a cgroup for jobs: {exc}"
        log.warning("job cgroups unavailable, rlimits alone bound each job: %s", reason)
        return None

    @classmethod
    def _create(cls, base: Path, name: str) -> Cgroups:
        enable = " ".join(f"+{c}" for c in CONTROLLERS)
        _write(base / "cgroup.subtree_control", enable)
        parent = base / name
        parent.mkdir(exist_ok=True)
        try:
            _write(parent / "cgroup.subtree_control", enable)
        except OSError:
            parent.rmdir()
            raise
        return cls(parent)

    def create(self, name: str, limits: JobLimits) -> JobCgroup:
        path = self.parent / name
        path.mkdir()
        try:
            _write(path / "memory.max", str(limits.memory_mb * MiB))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
            _write(path / "pids.max", str(limits.processes))
            _write(path / "cpu.max", f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
        except OSError:
            JobCgroup(path).close()
            raise
        return JobCgroup(path)

    def close(self) -> None:
        try:
            self.parent.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("job cgroup %s not removed: %s", self.parent, exc)


class JobCgroup:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def procs(self) -> str:
        return str(self.path / "cgroup.procs")

    def close(self) -> None:
        """Kill what is left in the cgroup and remove it."""
        deadline = time.monotonic() + EMPTY_WAIT_SECONDS
        while True:
            try:
                if (self.path / "cgroup.kill").exists():
                    _write(self.path / "cgroup.kill", "1")
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    log.warning("job cgroup %s not removed: %s", self.path, exc)
                    return
                time.sleep(0.01)
