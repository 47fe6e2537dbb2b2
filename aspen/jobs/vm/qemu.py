"""The QEMU command line of a ``vm`` job, and how a node learns whether KVM
really works.

``-M microvm`` with ``-nodefaults``: no PCI bus, no NIC, no display, no
firmware option ROMs; the only devices are the serial console (the job's
log), ``isa-debug-exit`` (the guest's "done": QEMU exits ``(0 << 1) | 1``)
and the virtio-mmio disks of :mod:`aspen.jobs.vm.disks`, plus a user-mode
(slirp) NIC only when the job asks for network and the node allows it.
``tsc_early_khz``/``tsc=reliable``: without them a busy host can stall the
guest's boot calibrating its clock against the PIT.

KVM: ``/dev/kvm`` may exist and still be useless (a software nested-virt
device a standard kernel does not boot under, or not accessible to the
sandbox's uid), so the worker (:mod:`aspen.jobs.executors.vm`) boots the
real image under ``-accel kvm`` once and falls back to TCG with the reason.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

DEBUG_EXIT_PORT = 0xF4
DONE_STATUS = 1  # (0 << 1) | 1: the guest's /init wrote 0 to the debug-exit port
TCG_CACHE_MIB = 64  # translated-code buffer (QEMU's default is 1 GiB of address space)
# Host address space QEMU needs beyond the guest's RAM (code cache, libraries, thread and
# block-I/O coroutine stacks: 512 MiB was once too little while a guest wrote its output tar).
OVERHEAD_MIB = 1024


def find_qemu() -> str | None:
    return shutil.which("qemu-system-x86_64")


def host_khz() -> int:
    """The host TSC frequency the guest is told (from /proc/cpuinfo)."""
    with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return int(float(line.split(":")[1]) * 1000)
    return 0


@dataclass(frozen=True)
class VmSpec:
    kernel: Path
    initrd: Path
    in_disk: Path
    out_disk: Path
    memory_mib: int
    cpus: int
    in_kib: int
    res_kib: int
    processes: int
    network: bool = False


def cmdline(spec: VmSpec) -> str:
    khz = host_khz()
    parts = [
        "console=ttyS0", "panic=-1", "quiet", "pci=off",
        f"aspen.in_kib={spec.in_kib}", f"aspen.res_kib={spec.res_kib}", f"aspen.procs={spec.processes}",
        f"aspen.net={int(spec.network)}",
    ]  # fmt: skip
    if khz:
        parts += [f"tsc_early_khz={khz}", "tsc=reliable"]
    return " ".join(parts)


def argv(qemu: str, spec: VmSpec, accel: str) -> list[str]:
    accel_arg = f"tcg,tb-size={TCG_CACHE_MIB}" if accel == "tcg" else "kvm"
    args = [
        qemu, "-M", "microvm", "-accel", accel_arg, "-cpu", "max" if accel == "tcg" else "host",
        "-m", str(spec.memory_mib), "-smp", str(spec.cpus),
        "-nodefaults", "-no-reboot", "-no-user-config", "-display", "none", "-serial", "stdio",
        "-global", "virtio-mmio.force-legacy=false",
        "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=4",
        "-kernel", str(spec.kernel), "-initrd", str(spec.initrd), "-append", cmdline(spec),
        "-drive", f"id=in,file={spec.in_disk},format=raw,if=none,readonly=on",
        "-device", "virtio-blk-device,drive=in",
        "-drive", f"id=out,file={spec.out_disk},format=raw,if=none",
        "-device", "virtio-blk-device,drive=out",
    ]  # fmt: skip
    if spec.network:
        args += ["-netdev", "user,id=net", "-device", "virtio-net-device,netdev=net"]
    return args
