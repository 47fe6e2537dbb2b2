"""The job sandbox: bubblewrap, entered as an unprivileged user, with rlimits.

Built so it holds when the node runs as root. The command line is a chain of
execs, each narrowing what follows:

1. (with a cgroup) ``/bin/sh`` moves itself into the job's cgroup;
2. ``setpriv`` drops to ``[jobs] sandbox_uid``/``sandbox_gid`` (65534) with no
   supplementary groups: the job is an ordinary user on the host, so host
   files it may not read stay unreadable (``/etc/shadow``), what it owns is
   owned by that uid, and RLIMIT_NPROC applies to it (never to root);
3. ``prlimit`` sets the rlimits (:mod:`aspen.jobs.limits`);
4. ``bwrap`` makes new user, mount, PID, network, IPC, UTS and cgroup
   namespaces, drops every capability (``--cap-drop ALL``), forbids nested
   user namespaces, sets ``no_new_privs`` and mounts everything ``nosuid``
   (a setuid binary gains nothing), binds the system paths read-only, gives
   private ``/proc`` and ``/dev`` and size-bounded tmpfs ``/tmp`` and
   ``/work`` (the only writable places), and remounts ``/`` and ``/dev``
   read-only. No network: only the namespace's own loopback (a process
   plugin's ``allowed_hosts`` reach out through a proxy socket, never a route).

The environment is built from nothing (see :func:`job_env`). Mode ``"none"``
runs the command on the host, as the node's user, with only the rlimits:
an explicit opt-out that logs a warning.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import PurePosixPath

from aspen.errors import AspenError, ErrorCode
from aspen.jobs.limits import JobLimits, MiB, prlimit_args

log = logging.getLogger(__name__)

MODES = ("required", "none")
DEFAULT_UID = 65534
SANDBOX_WORKDIR = "/work"
RO_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
_ENTER_CGROUP = 'echo $$ > "$0" && exec "$@"'


def job_env(extra: dict[str, str], **fixed: str) -> dict[str, str]:
    """A fresh environment: nothing of the node's (its tokens, its paths)."""
    return {"PATH": PATH, "LANG": "C.UTF-8", **fixed, **extra}


class Sandbox:
    """``mode``: ``"required"`` (jobs fail with ``EXECUTOR_UNAVAILABLE`` when
    bubblewrap is missing) or ``"none"``. ``ro_binds``: more host paths to
    show read-only at the same place (nix needs ``/nix``)."""

    def __init__(
        self,
        mode: str = "required",
        *,
        uid: int = DEFAULT_UID,
        gid: int | None = None,
        ro_binds: Sequence[str] = (),
        network: bool = False,
    ) -> None:
        if mode not in MODES:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"sandbox mode {mode!r}: must be one of {', '.join(MODES)}")
        if not 0 < int(uid) < 2**32 - 1 or (gid is not None and not 0 < int(gid) < 2**32 - 1):
            raise AspenError(ErrorCode.INVALID_ARGUMENT, "sandbox_uid and sandbox_gid must be unprivileged (not 0)")
        self.mode = mode
        self.uid = int(uid)
        self.gid = int(gid) if gid is not None else self.uid
        self.ro_binds = tuple(ro_binds)
        self.network = network
        self.bwrap = shutil.which("bwrap") if mode == "required" else None
        self.setpriv = shutil.which("setpriv")
        self.prlimit = shutil.which("prlimit")
        if mode == "none":
            log.warning(
                'job sandbox disabled ([jobs] shell_sandbox = "none"): jobs run on the host as the node\'s user'
            )

    @property
    def active(self) -> bool:
        return self.mode == "required"

    def check(self) -> None:
        """Raise ``EXECUTOR_UNAVAILABLE`` naming what to install."""
        missing = []
        if self.active and self.bwrap is None:
            missing.append("bubblewrap (bwrap)")
        if self.prlimit is None or (self.active and self.setpriv is None):
            missing.append("util-linux (prlimit, setpriv)")
        if missing:
            raise AspenError(
                ErrorCode.EXECUTOR_UNAVAILABLE,
                f"the job sandbox needs {' and '.join(missing)}: install the package (apt-get install bubblewrap"
                ' util-linux), or opt out with [jobs] shell_sandbox = "none"',
                missing=missing,
            )

    def command(
        self,
        command: Sequence[str],
        *,
        cwd: str,
        limits: JobLimits,
        cgroup_procs: str | None = None,
        binds: Sequence[str] = (),
        ro_binds: Sequence[str] = (),
        dev_binds: Sequence[str] = (),
    ) -> list[str]:
        """The argv that runs ``command`` in the sandbox, in ``cwd`` (relative
        to the work dir; inside the sandbox the work dir is ``/work``).
        ``binds``: host paths shown writable at the same place, ``ro_binds``
        read-only (besides the sandbox's own); ``dev_binds``:
        device nodes to show if they exist (``/dev/kvm``)."""
        self.check()
        argv = [self.prlimit, *prlimit_args(limits), "--"]  # type: ignore[list-item]
        if self.active:
            argv = [
                self.setpriv, f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", "--",
                *argv,
                *self._bwrap(limits, cwd, binds, ro_binds, dev_binds),
            ]  # fmt: skip
        if cgroup_procs is not None:
            argv = ["/bin/sh", "-c", _ENTER_CGROUP, cgroup_procs, *argv]
        return [*argv, *command]  # type: ignore[list-item]

    def _bwrap(
        self, limits: JobLimits, cwd: str, binds: Sequence[str], ro_binds: Sequence[str], dev_binds: Sequence[str]
    ) -> list[str]:
        disk = str(limits.disk_mb * MiB)
        argv = [
            self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns",
            "--uid", str(self.uid), "--gid", str(self.gid),
            "--cap-drop", "ALL", "--die-with-parent", "--new-session",
        ]  # fmt: skip
        if self.network:
            argv.append("--share-net")
        for path in RO_SYSTEM:
            argv += ["--ro-bind-try", path, path]
        argv += [
            "--proc", "/proc",
            "--dev", "/dev",
            "--size", disk, "--tmpfs", "/dev/shm",
            "--size", disk, "--tmpfs", "/tmp",
            "--size", disk, "--tmpfs", SANDBOX_WORKDIR,
        ]  # fmt: skip
        for path in (*self.ro_binds, *ro_binds):  # after the tmpfs mounts, which would hide them
            argv += ["--ro-bind", path, path]
        for path in binds:
            argv += ["--bind", path, path]
        for path in dev_binds:
            argv += ["--dev-bind-try", path, path]
        argv += [
            "--dir", str(PurePosixPath(SANDBOX_WORKDIR) / cwd),
            "--chdir", str(PurePosixPath(SANDBOX_WORKDIR) / cwd),
            "--remount-ro", "/dev",
            "--remount-ro", "/",
            "--",
        ]  # fmt: skip
        return argv  # type: ignore[return-value]
