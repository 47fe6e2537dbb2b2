"""A process plugin's program as one content-addressed blob, like a WASM module.

The bundle is a msgpack map, encoded deterministically (files sorted by
path, no times, owners or modes beyond "executable"), so the same plugin
directory always gives the same bytes and the same BLAKE3 hash. It also
carries the launch record (``command``, ``env``, ``cwd``, ``handles``): the
signature over the bundle's hash thus covers how the program is started, and
a load whose manifest says otherwise is ``PLUGIN_HASH_MISMATCH``.

Unpacking refuses what could write outside its directory: absolute names,
``..``, empty or ``.`` segments, backslashes, NUL. Links cannot be in a
bundle (only bytes are); packing a directory that holds one is refused.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgspec

from aspen.errors import AspenError, ErrorCode
from aspen.plugins.manifest import MAX_WASM_BYTES, PluginManifest

FORMAT = 1
MAX_FILES = 1024
MAX_PATH_BYTES = 255
# a command's program is one of these (found on the sandbox's PATH) or a file of the bundle
INTERPRETERS = frozenset({"python3", "sh", "bash", "node", "perl"})
SKIPPED = ("plugin.json", "plugin.wasm")  # the manifest travels beside the bundle, not in it


class BundleFile(msgspec.Struct, frozen=True, array_like=True):
    data: bytes
    executable: bool = False


class Bundle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    command: tuple[str, ...]
    handles: tuple[str, ...]
    files: dict[str, BundleFile]
    env: dict[str, str] = {}
    cwd: str = "."
    format: int = FORMAT
    allowed_hosts: tuple[str, ...] = ()  # in the bundle, so its hash (and a signature) covers them

    def launch(self) -> tuple[object, ...]:
        return (self.command, sorted(self.env.items()), self.cwd, sorted(self.handles), self.allowed_hosts)


def launch_of(m: PluginManifest) -> tuple[object, ...]:
    return (m.command, sorted(m.env.items()), m.cwd, sorted(m.handles), m.allowed_hosts)


def bad_path(path: str) -> str | None:
    """Why ``path`` cannot name a place inside a bundle (None: it can)."""
    if not path or len(path.encode()) > MAX_PATH_BYTES:
        return f"a path is 1-{MAX_PATH_BYTES} bytes"
    if path.startswith("/") or "\\" in path or "\0" in path:
        return f"{path!r} is absolute or holds a backslash or NUL"
    if any(part in ("", ".", "..") for part in path.split("/")):
        return f"{path!r} has an empty, '.' or '..' segment"
    return None


def _invalid(message: str, **details: object) -> AspenError:
    return AspenError(ErrorCode.PLUGIN_BUNDLE_INVALID, message, **details)


def pack(directory: Path, m: PluginManifest) -> bytes:
    """The bundle of ``directory``'s program files (not hidden names, not
    ``__pycache__``, not the manifest) with ``m``'s launch record."""
    files: dict[str, BundleFile] = {}
    total = 0
    for root, dirs, names in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                raise _invalid(f"{os.path.join(root, d)} is a link; a bundle holds only files", path=d)
        for name in sorted(names):
            full = Path(root, name)
            rel = full.relative_to(directory).as_posix()
            if name.startswith(".") or rel in SKIPPED:
                continue
            st = full.lstat()
            if not stat.S_ISREG(st.st_mode):
                raise _invalid(f"{full} is a link or not a regular file; a bundle holds only files", path=rel)
            total += st.st_size
            if total > MAX_WASM_BYTES or len(files) >= MAX_FILES:
                raise _invalid(f"a bundle holds at most {MAX_FILES} files of {MAX_WASM_BYTES} bytes in all")
            files[rel] = BundleFile(full.read_bytes(), bool(st.st_mode & stat.S_IXUSR))
    bundle = Bundle(
        m.command,
        tuple(sorted(m.handles)),
        dict(sorted(files.items())),
        dict(sorted(m.env.items())),
        m.cwd,
        allowed_hosts=m.allowed_hosts,
    )
    return msgspec.msgpack.encode(bundle)


def read(data: bytes, name: str) -> Bundle:
    """The bundle in ``data``: well-formed, every name inside it, its program there."""
    try:
        bundle = msgspec.msgpack.decode(data, type=Bundle)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise _invalid(f"plugin '{name}': not a bundle: {exc}", plugin=name) from None
    if bundle.format != FORMAT or len(bundle.files) > MAX_FILES or not bundle.command:
        raise _invalid(f"plugin '{name}': bundle format {bundle.format}, {len(bundle.files)} files", plugin=name)
    for path in bundle.files:
        problem = bad_path(path)
        if problem is not None:
            raise _invalid(f"plugin '{name}': {problem}", plugin=name, path=path[:MAX_PATH_BYTES])
    program = bundle.command[0]
    if program not in INTERPRETERS and program not in bundle.files:
        raise _invalid(f"plugin '{name}': the program {program[:MAX_PATH_BYTES]!r} is not in the bundle", plugin=name)
    return bundle


def check(data: bytes, m: PluginManifest) -> Bundle:
    """:func:`read`, and the launch record must be ``m``'s."""
    bundle = read(data, m.name)
    if bundle.launch() != launch_of(m):
        raise AspenError(
            ErrorCode.PLUGIN_HASH_MISMATCH,
            f"plugin '{m.name}': the manifest's command, env, cwd, handles or allowed_hosts are not the bundle's",
            plugin=m.name,
        )
    return bundle


def unpack(bundle: Bundle, directory: Path) -> None:
    """Write ``bundle`` (from :func:`read`) into the new directory
    ``directory``: read-only files, never through a link."""
    directory.mkdir(mode=0o755)
    for path, file in bundle.files.items():
        target = directory / path
        parent = target.parent
        parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o555 if file.executable else 0o444)
        with os.fdopen(fd, "wb") as f:
            f.write(file.data)
