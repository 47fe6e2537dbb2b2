"""The guest image of ``vm`` jobs: a kernel and an initramfs, built
reproducibly from Debian packages and stored content-addressed.

Sources (installed by ``scripts/setup.sh``): ``linux-image-amd64`` (the
kernel, ``/boot/vmlinuz-*``, and the virtio modules under ``/lib/modules``)
and ``busybox-static`` (``/bin/busybox``). The kernel is unpacked from its
bzImage to the ELF ``vmlinux`` (QEMU's ``microvm`` boots it by its PVH entry,
twice as fast as the compressed image). The initramfs is a ``newc`` cpio
written here with fixed owners, modes and times and sorted names, so the
same packages give the same bytes and the same hash on every node.

An image is a manifest blob, ``{"aspen_vm_image": 1, "kernel": H, "initrd":
H}`` naming two more blobs; the manifest's hash is the image hash (``[jobs.vm]
image``, or a job's ``image``). A user's own image is any such manifest: its
``/init`` must follow the guest protocol of ``guest_init.sh``.

    python -m aspen.jobs.vm.image OUT_DIR     # writes vmlinux, initrd.cpio
"""

from __future__ import annotations

import glob
import json
import lzma
import os
import re
import sys
from pathlib import Path

from aspen.errors import AspenError, ErrorCode
from aspen.storage.protocol import BlobStore

FORMAT = 1
MAX_MANIFEST_BYTES = 4096
INIT = Path(__file__).with_name("guest_init.sh")
BUSYBOX = "/bin/busybox"
# Loaded in this order by /init; their dependencies come first (modules.dep).
MODULES = ("virtio_mmio", "virtio_blk")
NET_MODULES = ("virtio_net",)
_XZ_MAGIC = b"\xfd7zXZ\x00"


def _version_key(path: str) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", path)]


def find_kernel() -> tuple[str, str]:
    """The newest installed Debian kernel: (vmlinuz path, release)."""
    found = sorted(glob.glob("/boot/vmlinuz-*-amd64"), key=_version_key)
    if not found:
        raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "no Debian kernel in /boot: apt-get install linux-image-amd64")
    return found[-1], found[-1].removeprefix("/boot/vmlinuz-")


def vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (Debian compresses it with xz)."""
    start = bzimage.find(_XZ_MAGIC)
    while start >= 0:
        try:
            elf = lzma.LZMADecompressor().decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        start = bzimage.find(_XZ_MAGIC, start + 1)
    raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "no xz-compressed ELF kernel found in the bzImage")


def _module_order(modules_dir: Path, names: tuple[str, ...]) -> list[str]:
    """Paths (relative to ``modules_dir``) of ``names`` and their
    dependencies, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {os.path.basename(m).removesuffix(".ko"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for dep in reversed(deps[mod]):  # modules.dep lists the deepest last
            visit(dep)
        if mod not in order:
            order.append(mod)

    for name in names:
        if name not in by_name:
            raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, f"kernel module {name} not in {modules_dir}")
        visit(by_name[name])
    return order


class Cpio:
    """A deterministic ``newc`` archive: owner root, mtime 0, inode numbers
    in order of addition."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 0

    def _entry(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self._ino += 1
        raw = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(raw), 0)
        header = b"070701" + b"".join(b"%08x" % f for f in fields)
        self._parts += [header, raw, b"\0" * (-(len(header) + len(raw)) % 4), data, b"\0" * (-len(data) % 4)]

    def dir(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, 0o100000 | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def initramfs(busybox: str, modules_dir: Path) -> bytes:
    """The initramfs: busybox, /init, /dev/console and the virtio modules."""
    base, net = _module_order(modules_dir, MODULES), _module_order(modules_dir, NET_MODULES)
    net = [m for m in net if m not in base]
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "proc", "sys", "tmp"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)  # the kernel opens it for /init before devtmpfs exists
    cpio.file("bin/busybox", Path(busybox).read_bytes(), 0o755)
    cpio.file("init", INIT.read_bytes(), 0o755)
    for mod in sorted(set(base + net)):
        cpio.file(f"lib/modules/{os.path.basename(mod)}", (modules_dir / mod).read_bytes())
    cpio.file("lib/modules/load", "".join(os.path.basename(m) + "\n" for m in base).encode())
    cpio.file("lib/modules/load-net", "".join(os.path.basename(m) + "\n" for m in net).encode())
    return cpio.finish()


def build(out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``vmlinux`` and ``initrd.cpio`` from the installed packages."""
    if not os.path.exists(BUSYBOX):
        raise AspenError(ErrorCode.EXECUTOR_UNAVAILABLE, "no static busybox: apt-get install busybox-static")
    vmlinuz, release = find_kernel()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kernel, initrd = out / "vmlinux", out / "initrd.cpio"
    kernel.write_bytes(vmlinux(Path(vmlinuz).read_bytes()))
    initrd.write_bytes(initramfs(BUSYBOX, Path("/lib/modules") / release))
    return kernel, initrd


async def store(blobs: BlobStore, kernel: Path, initrd: Path) -> str:
    """Add an image's files and its manifest to ``blobs``; the image hash."""
    k, i = await blobs.add_file(str(kernel)), await blobs.add_file(str(initrd))
    manifest = {"aspen_vm_image": FORMAT, "kernel": k.hash, "initrd": i.hash}
    image = (await blobs.add_bytes(json.dumps(manifest, sort_keys=True).encode())).hash
    for tag, h in (("kernel", k.hash), ("initrd", i.hash), ("manifest", image)):
        await blobs.protect(h, f"vm-image:{image}:{tag}")
    return image


async def read_manifest(blobs: BlobStore, image: str) -> dict[str, str]:
    """The kernel and initrd hashes of an image; ``INVALID_JOB`` when the
    blob is missing or is not an image manifest."""
    try:
        if await blobs.size(image) > MAX_MANIFEST_BYTES:
            raise ValueError("too large for a manifest")
        manifest = json.loads(await blobs.get_bytes(image))
        if manifest.get("aspen_vm_image") != FORMAT:
            raise ValueError(f"aspen_vm_image is not {FORMAT}")
        files = {k: manifest[k] for k in ("kernel", "initrd")}
        if not all(isinstance(v, str) for v in files.values()):
            raise ValueError("kernel and initrd must be blob hashes")
        return files
    except AspenError as exc:
        if exc.code not in (ErrorCode.BLOB_NOT_FOUND, ErrorCode.INVALID_ARGUMENT):
            raise
        raise AspenError(ErrorCode.INVALID_JOB, f"vm image {image}: {exc.message}", image=image) from exc
    except (ValueError, KeyError, AttributeError) as exc:
        raise AspenError(
            ErrorCode.INVALID_JOB, f"vm image {image} is not an image manifest: {exc}", image=image
        ) from exc


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m aspen.jobs.vm.image OUT_DIR")
    for path in build(sys.argv[1]):
        print(path)
