"""The two disks between host and guest: plain tar archives on raw
virtio-blk devices, so the guest needs no filesystem driver and the host
parses the result with :mod:`tarfile` without mounting anything.

- ``in.tar`` (read-only, ``/dev/vda``): the job's input files and
  ``.aspen/run``, the shell script that sets the environment and runs the
  command. The guest unpacks it into a tmpfs ``/in`` and remounts it read-only.
- ``out.img`` (``/dev/vdb``, sparse): the guest writes a tar of its ``/res``
  tmpfs there: ``data/out/`` (the command's work dir ``/out``),
  ``data/stdout``, ``data/stderr`` and ``status``. ``data`` is a tmpfs as large
  as the job's output quota, so stdout, stderr and outputs together cannot
  exceed it (``status`` lives outside it: a full quota cannot lose it); the
  disk leaves room for the tar headers.
"""

from __future__ import annotations

import io
import shlex
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from aspen.errors import AspenError, ErrorCode

CONTROL_DIR = ".aspen"
HEADER_ROOM = 4 << 20  # tar headers and padding of many small output files
MAX_OUTPUT_FILES = 4096


def run_script(command: str | list[str], env: dict[str, str]) -> str:
    """``.aspen/run``: a string runs through ``sh -c``, an argv as it is."""
    lines = [f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())]
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def _info(name: str, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    return info


def write_input(path: Path, script: str, files: dict[str, Path]) -> int:
    """Write ``in.tar``; ``files`` maps a relative guest path to a host file.
    Returns the bytes the guest needs to unpack it."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        data = script.encode()
        tar.addfile(_info(f"{CONTROL_DIR}/run", len(data), 0o755), io.BytesIO(data))
        for name in sorted(files):
            with open(files[name], "rb") as f:
                tar.addfile(_info(name, files[name].stat().st_size), f)
    size = path.stat().st_size
    with open(path, "r+b") as f:  # a whole number of sectors
        f.truncate(size + (-size % 512))
    return size


def check_input_path(name: str) -> str:
    """A relative guest path for an input file, without ``..`` or ``.aspen``."""
    p = PurePosixPath(name)
    if not name or "\0" in name or p.is_absolute() or ".." in p.parts or p.parts[0] == CONTROL_DIR or len(name) > 1024:
        raise AspenError(
            ErrorCode.INVALID_JOB, f"files_in path {name!r} must be relative, without '..' or {CONTROL_DIR}/"
        )
    return str(p)


def make_output(path: Path, quota: int) -> None:
    with open(path, "wb") as f:
        f.truncate(quota + HEADER_ROOM)


@dataclass
class GuestResult:
    status: int | None = None
    stdout: bytes = b""
    stderr: bytes = b""
    outputs: dict[str, bytes] = field(default_factory=dict)


def read_output(path: Path, quota: int) -> GuestResult:
    """What the guest left on ``out.img`` (``status`` None when it wrote
    nothing: the guest died before the end). Only regular files count as
    outputs, at most ``quota`` bytes in all."""
    result, total = GuestResult(), 0
    try:
        tar = tarfile.open(path, "r:")  # noqa: SIM115 (closed by the with below)
    except tarfile.ReadError:
        return result
    with tar:
        try:
            for member in tar:
                name = str(PurePosixPath(member.name))
                if not member.isfile():
                    continue
                total += member.size if name != "status" else 0
                if total > quota or len(result.outputs) >= MAX_OUTPUT_FILES:
                    raise AspenError(
                        ErrorCode.QUOTA_EXCEEDED,
                        f"vm job outputs exceed {quota} bytes or {MAX_OUTPUT_FILES} files",
                        quota="max_output_mb",
                        limit=quota,
                    )
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                if name == "status":
                    result.status = int(data.strip() or b"-1")
                elif name in ("data/stdout", "data/stderr"):
                    setattr(result, name[5:], data)
                elif name.startswith("data/out/"):
                    result.outputs[name[9:]] = data
        except (tarfile.TarError, ValueError, OSError):
            result.status = None  # a torn archive: the guest did not finish writing it
    return result
