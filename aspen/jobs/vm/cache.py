"""Images on the node's disk, where QEMU (in the sandbox, as an unprivileged
uid) can read them: ``CACHE/images/<image hash>/{vmlinux,initrd}``, written
from the blob store once and verified by the store as it streams. The
default image is built once from the installed packages into
``CACHE/build`` (rebuilt when a source file changes) and added to the blob
store, which gives its hash.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from aspen.jobs.vm import image as vm_image
from aspen.storage.protocol import BlobStore

DEFAULT_CACHE = "/var/tmp/aspen-vm-cache"


def _sources() -> dict[str, list[int]]:
    vmlinuz, _ = vm_image.find_kernel()
    paths = [vmlinuz, vm_image.BUSYBOX, str(vm_image.INIT), str(Path(vm_image.__file__))]
    return {p: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in paths}


def _readable(path: Path) -> None:
    """World-readable files, traversable directories: the sandbox uid reads them."""
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


async def fetch(blobs: BlobStore, h: str, path: Path) -> None:
    """Write blob ``h`` to ``path`` (verified as it streams)."""
    f = await asyncio.to_thread(open, path, "wb")
    try:
        async for chunk in blobs.get_stream(h):
            await asyncio.to_thread(f.write, chunk)
    finally:
        f.close()


class ImageCache:
    def __init__(self, root: str | os.PathLike[str] = DEFAULT_CACHE) -> None:
        self.root = Path(root)
        self._lock = asyncio.Lock()

    def prebuilt(self) -> tuple[Path, Path]:
        """The default image's files, built now unless the sources are unchanged."""
        build, stamp = self.root / "build", self.root / "build" / "sources.json"
        sources = _sources()
        if not (stamp.exists() and json.loads(stamp.read_text()) == sources):
            tmp = self.root / f"build.{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            vm_image.build(tmp)
            (tmp / "sources.json").write_text(json.dumps(sources))
            shutil.rmtree(build, ignore_errors=True)
            os.replace(tmp, build)
        _readable(self.root)
        return build / "vmlinux", build / "initrd.cpio"

    async def default_image(self, blobs: BlobStore) -> str:
        async with self._lock:
            kernel, initrd = await asyncio.to_thread(self.prebuilt)
            return await vm_image.store(blobs, kernel, initrd)

    async def files(self, blobs: BlobStore, image: str) -> tuple[Path, Path]:
        """The kernel and initrd of ``image`` on disk."""
        target = self.root / "images" / image
        kernel, initrd = target / "vmlinux", target / "initrd"
        if kernel.exists() and initrd.exists():
            return kernel, initrd
        manifest = await vm_image.read_manifest(blobs, image)
        async with self._lock:
            if kernel.exists() and initrd.exists():
                return kernel, initrd
            tmp = self.root / "images" / f".{image}.{os.getpid()}"
            tmp.mkdir(parents=True, exist_ok=True)
            try:
                for name, h in (("vmlinux", manifest["kernel"]), ("initrd", manifest["initrd"])):
                    await fetch(blobs, h, tmp / name)
                await asyncio.to_thread(_readable, tmp)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            _readable(self.root)
        return kernel, initrd
