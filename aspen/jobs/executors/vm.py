"""The ``vm`` executor: a command in a fresh QEMU ``microvm`` per job, for
work that must not share the host's kernel.

Payload: ``{"command": "make" | ["make", "-j2"]`` (or ``"argv": [...]``),
``"env": {...}, "files_in": {"src/main.c": "<blob hash>"}, "memory_mib": 256,
"cpus": 1, "timeout_ms": 60000, "network": false, "image": "<image hash>"}``.
Inputs appear read-only under ``/in``; the command runs in ``/out``, whose
files come back as blobs. The result: ``exit_code``, ``stdout``/``stderr``
(kept apart, each a blob and inline up to 64 KiB), ``outputs`` (path → blob),
``image`` and ``accel``. A non-zero exit fails the job (``EXIT_<n>``, as for
``shell``) with stdout and stderr appended to its log; the serial console
(kernel and init messages) is the job's log.

QEMU runs in the same bubblewrap sandbox and rlimits as shell jobs (address
space: guest RAM + ``qemu.OVERHEAD_MIB``), with only the job's directory
writable and the image cache read-only. Node config ``[jobs.vm]``: see
:class:`VmConfig`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

from aspen.errors import AspenError, ErrorCode, quota_exceeded
from aspen.jobs.executors.shell import SandboxedRunner
from aspen.jobs.executors.shell import parse_payload as parse_shell
from aspen.jobs.limits import LimitPolicy
from aspen.jobs.model import Job, JobFailure
from aspen.jobs.sandbox import Sandbox, job_env
from aspen.jobs.vm import disks, qemu
from aspen.jobs.vm.cache import DEFAULT_CACHE, ImageCache, fetch
from aspen.jobs.worker import OUTPUT_BLOBS, JobContext, output_tag

log = logging.getLogger(__name__)

INLINE_OUTPUT = 64 * 1024
MAX_FILES_IN = 1024
PROBE_TIMEOUT = 60.0
_PERMANENT_EXITS = frozenset({126, 127})


class VmConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[jobs.vm]``: ``max_concurrent`` VMs at once; per-job ``memory_mib``
    and ``cpus`` defaults and their caps; ``image`` (default: built from the
    installed Debian packages); ``network`` (whether a job may ask for a
    NIC); ``kvm = "auto"`` (probe by booting) or ``"off"``."""

    enabled: bool = True
    max_concurrent: int = 2
    memory_mib: int = 256
    max_memory_mib: int = 1024
    cpus: int = 1
    max_cpus: int = 2
    max_input_mib: int = 64  # files_in in all (unpacked into guest RAM)
    image: str | None = None
    network: bool = False
    kvm: str = "auto"
    cache_dir: str = DEFAULT_CACHE

    @classmethod
    def from_options(cls, options: Any) -> VmConfig:
        try:
            config = msgspec.convert(options or {}, cls)
        except msgspec.ValidationError as exc:
            raise AspenError(ErrorCode.INVALID_ARGUMENT, f"[jobs.vm]: {exc}") from exc
        if not (0 < config.memory_mib <= config.max_memory_mib and 0 < config.cpus <= config.max_cpus):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, "[jobs.vm]: 0 < memory_mib <= max_memory_mib, 0 < cpus <= max_cpus"
            )
        if config.max_concurrent < 1 or config.max_input_mib < 1 or config.kvm not in ("auto", "off"):
            raise AspenError(
                ErrorCode.INVALID_ARGUMENT, '[jobs.vm]: max_concurrent and max_input_mib >= 1, kvm = "auto" | "off"'
            )
        return config


class VmPayload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    command: str | list[str] | None = None
    argv: list[str] | None = None
    env: dict[str, str] = {}
    files_in: dict[str, str] = {}
    memory_mib: int | None = None
    cpus: int | None = None
    timeout_ms: int | None = None
    network: bool = False
    image: str | None = None


def parse_payload(payload: Any, config: VmConfig) -> VmPayload:
    try:
        spec = msgspec.convert(payload, VmPayload)
    except msgspec.ValidationError as exc:
        raise AspenError(ErrorCode.INVALID_JOB, f"bad vm payload: {exc}") from exc
    if (spec.command is None) == (spec.argv is None):
        raise AspenError(ErrorCode.INVALID_JOB, "a vm payload needs exactly one of command and argv")
    parse_shell({"command": spec.command if spec.argv is None else spec.argv, "env": spec.env})
    if len(spec.files_in) > MAX_FILES_IN:
        raise AspenError(ErrorCode.INVALID_JOB, f"at most {MAX_FILES_IN} files_in")
    for name in spec.files_in:
        disks.check_input_path(name)
    for name, value, cap in (
        ("memory_mib", spec.memory_mib, config.max_memory_mib),
        ("cpus", spec.cpus, config.max_cpus),
    ):
        if value is not None and value < 1:
            raise AspenError(ErrorCode.INVALID_JOB, f"{name} must be positive")
        if value is not None and value > cap:
            raise quota_exceeded(f"vm.{name}", cap, value)
    if spec.timeout_ms is not None and spec.timeout_ms < 1:
        raise AspenError(ErrorCode.INVALID_JOB, "timeout_ms must be positive")
    if spec.network and not config.network:
        raise AspenError(ErrorCode.FORBIDDEN, "this node does not give vm jobs a network ([jobs.vm] network = false)")
    return spec


def _inline(data: bytes) -> str:
    return data[:INLINE_OUTPUT].decode("utf-8", errors="replace")


class VmWorker:
    job_types = frozenset({"vm"})

    def __init__(
        self,
        config: VmConfig | None = None,
        *,
        sandbox: Sandbox | None = None,
        policy: LimitPolicy | None = None,
        cgroups: Any = None,
    ) -> None:
        self.config = config or VmConfig()
        self.concurrency = self.config.max_concurrent
        self.cache = ImageCache(self.config.cache_dir)
        sb = sandbox or Sandbox()
        sandbox = Sandbox(sb.mode, uid=sb.uid, gid=sb.gid, ro_binds=[*sb.ro_binds, self.config.cache_dir])
        self.runner = SandboxedRunner(sandbox, policy, cgroups)
        self.accel: str | None = None
        self.accel_reason = "not probed yet (on the first vm job)"
        self._probe_lock = asyncio.Lock()
        self._default_image: str | None = self.config.image

    @property
    def details(self) -> dict[str, str]:
        """Shown by ``aspen job workers``."""
        return {"vm.accel": self.accel or "?", "vm.accel_reason": self.accel_reason}

    def validate(self, payload: Any) -> None:
        parse_payload(payload, self.config)

    def _check(self, ctx: JobContext) -> str:
        q = qemu.find_qemu()
        if q is None:
            raise AspenError(
                ErrorCode.EXECUTOR_UNAVAILABLE, "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)"
            )
        if ctx.blobs is None:
            raise AspenError(
                ErrorCode.EXECUTOR_UNAVAILABLE, "vm jobs need the node's blob store (image, inputs, outputs)"
            )
        return q

    async def execute(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        spec = parse_payload(job.payload, self.config)
        q = self._check(ctx)
        blobs = ctx.blobs
        assert blobs is not None
        await asyncio.to_thread(os.makedirs, self.config.cache_dir, 0o755, True)
        if spec.image is None and self._default_image is None:
            self._default_image = await self.cache.default_image(blobs)
        image = spec.image or self._default_image
        assert image is not None
        kernel, initrd = await self.cache.files(blobs, image)
        accel = await self._accel(q, kernel, initrd)
        started = time.monotonic()
        command = spec.command if spec.argv is None else spec.argv
        env = {"PATH": "/bin:/sbin:/usr/bin:/usr/sbin", "HOME": "/out", **spec.env}
        env.update(ASPEN_JOB_ID=job.id, ASPEN_JOB_ATTEMPT=str(job.attempts))
        work = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"aspen-vm-{job.id}-")
        try:
            inputs = {}
            await self._check_input_size(blobs, spec.files_in)
            for name, h in spec.files_in.items():
                path = Path(work) / f"in-{len(inputs)}"
                await fetch(blobs, h, path)
                inputs[disks.check_input_path(name)] = path
            run = self._boot(
                q, job, ctx, work, kernel, initrd, accel, disks.run_script(command, env), inputs,
                memory=spec.memory_mib or self.config.memory_mib, cpus=spec.cpus or self.config.cpus,
                network=spec.network,
            )  # fmt: skip
            if spec.timeout_ms is None:
                rc, result = await run
            else:
                try:
                    async with asyncio.timeout(spec.timeout_ms / 1000):
                        rc, result = await run
                except TimeoutError:
                    raise JobFailure(f"vm job timed out after {spec.timeout_ms} ms", code=ErrorCode.TIMEOUT) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)  # not in a thread: this runs on cancel too
        took = int((time.monotonic() - started) * 1000)
        if rc != qemu.DONE_STATUS or result.status is None:
            raise JobFailure(
                f"the VM ended before the job did (sandboxed qemu exited with {rc}; its console is the job log)",
                code="VM_CRASHED",
            )
        if result.status != 0:
            ctx.log("--- stdout ---\n" + _inline(result.stdout) + "\n--- stderr ---\n" + _inline(result.stderr))
            raise JobFailure(
                f"exit status {result.status}",
                code=f"EXIT_{result.status}",
                retryable=result.status not in _PERMANENT_EXITS,
            )
        stored = {}  # the outputs, then ".stdout" and ".stderr"
        for name, data in [*sorted(result.outputs.items()), (".stdout", result.stdout), (".stderr", result.stderr)]:
            stored[name] = (await blobs.add_bytes(data)).hash
            await blobs.protect(stored[name], output_tag(job.id, name))
        return {
            "exit_code": 0, "stdout": _inline(result.stdout), "stderr": _inline(result.stderr),
            "stdout_blob": stored[".stdout"], "stderr_blob": stored[".stderr"],
            "outputs": {n: h for n, h in stored.items() if n not in (".stdout", ".stderr")},
            OUTPUT_BLOBS: stored, "image": image, "accel": accel, "duration_ms": took,
            "sandboxed": self.runner.sandbox.active,
        }  # fmt: skip

    async def _check_input_size(self, blobs: Any, files: dict[str, str]) -> None:
        total, cap = 0, self.config.max_input_mib << 20
        for name, h in files.items():
            try:
                total += await blobs.size(h)
            except AspenError as exc:
                raise AspenError(ErrorCode.INVALID_JOB, f"files_in {name!r}: {exc.message}") from exc
            if total > cap:
                raise quota_exceeded("vm.max_input_mib", cap, total)

    async def _boot(
        self, q: str, job: Job, ctx: JobContext, work: str, kernel: Path, initrd: Path, accel: str,
        script: str, inputs: dict[str, Path], *, memory: int, cpus: int, network: bool,
    ) -> tuple[int, disks.GuestResult]:  # fmt: skip
        """One VM from start to end; (QEMU's exit status, what the guest left)."""
        quota = ctx.output_limit
        in_disk, out_disk = Path(work) / "in.tar", Path(work) / "out.img"
        in_size = await asyncio.to_thread(disks.write_input, in_disk, script, inputs)
        await asyncio.to_thread(disks.make_output, out_disk, quota)
        if os.geteuid() == 0 and self.runner.sandbox.active:
            for path in (work, out_disk):
                os.chown(path, self.runner.sandbox.uid, self.runner.sandbox.gid)
        vm = qemu.VmSpec(
            kernel, initrd, in_disk, out_disk, memory, cpus,
            in_kib=in_size // 1024 + 1024, res_kib=quota // 1024, processes=256, network=network,
        )  # fmt: skip
        limits = msgspec.structs.replace(  # the node's shell-job defaults, sized for this VM
            self.runner.policy.defaults,
            memory_mb=memory + qemu.OVERHEAD_MIB,
            cpus=float(cpus),
            file_size_mb=(quota + disks.HEADER_ROOM) // (1 << 20) + 1,
        )
        sandbox = self.runner.sandbox
        if network != sandbox.network:
            sandbox = Sandbox(
                sandbox.mode, uid=sandbox.uid, gid=sandbox.gid, ro_binds=sandbox.ro_binds, network=network
            )
        runner = (
            self.runner
            if sandbox is self.runner.sandbox
            else SandboxedRunner(sandbox, self.runner.policy, self.runner.cgroups)
        )
        rc, _ = await runner.run(
            job, ctx, qemu.argv(q, vm, accel), cwd=".", limits=limits, env=job_env({}),
            binds=[work], dev_binds=["/dev/kvm"] if accel == "kvm" else [],
        )  # fmt: skip
        return rc, await asyncio.to_thread(disks.read_output, out_disk, quota)

    async def _accel(self, q: str, kernel: Path, initrd: Path) -> str:
        """KVM if a guest really boots under it here, else TCG (probed once)."""
        async with self._probe_lock:
            if self.accel is not None:
                return self.accel
            if self.config.kvm == "off":
                self.accel, self.accel_reason = "tcg", 'kvm = "off" in [jobs.vm]'
            elif not os.path.exists("/dev/kvm"):
                self.accel, self.accel_reason = "tcg", "no /dev/kvm"
            else:
                self.accel, self.accel_reason = await self._probe_kvm(q, kernel, initrd)
            log.info("vm jobs use %s (%s)", self.accel, self.accel_reason)
            return self.accel

    async def _probe_kvm(self, q: str, kernel: Path, initrd: Path) -> tuple[str, str]:
        probe: Any = SimpleNamespace(id="kvm-probe", attempts=0)  # what the runner reads of a job
        work = await asyncio.to_thread(tempfile.mkdtemp, prefix="aspen-vm-probe-")
        try:
            ctx: Any = SimpleNamespace(log_path=Path(work) / "console.log", output_limit=1 << 20)
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    rc, result = await self._boot(
                        q, probe, ctx, work, kernel, initrd, "kvm", "exit 0\n", {}, memory=128, cpus=1, network=False
                    )
            except TimeoutError:
                return "tcg", f"a guest did not boot under kvm within {PROBE_TIMEOUT:.0f} s"
            if rc == qemu.DONE_STATUS and result.status == 0:
                return "kvm", "a guest booted under kvm"
            console = (Path(work) / "console.log").read_text(errors="replace").strip().splitlines()
            return "tcg", f"kvm unusable: {console[-1] if console else f'qemu exit status {rc}'}"
        finally:
            shutil.rmtree(work, ignore_errors=True)

    async def close(self) -> None:
        self.runner.close()
