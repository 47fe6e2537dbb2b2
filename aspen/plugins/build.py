"""Build every WASM plugin in the repository from source.

``python -m aspen.plugins.build [root]`` compiles each directory under
``plugins/`` that holds a ``plugin.json`` and a ``plugin.zig`` / ``main.zig``
(Zig, with the SDK in ``sdk/zig`` importable as ``aspen``) or a ``plugin.c`` /
``main.c`` (C, no SDK) into ``plugin.wasm`` next to the manifest, using the
Zig toolchain from the ``ziglang`` PyPI package. A module newer than all of
its sources (and the SDK) is left alone.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE_NAMES = ("plugin.zig", "main.zig", "plugin.c", "main.c")
WASM_NAME = "plugin.wasm"


def find_plugins(root: Path) -> list[tuple[Path, Path]]:
    """(plugin directory, main source) for every buildable plugin under ``root``."""
    found = []
    for manifest in sorted(root.rglob("plugin.json")):
        for name in SOURCE_NAMES:
            source = manifest.parent / name
            if source.exists():
                found.append((manifest.parent, source))
                break
    return found


def _sources(directory: Path, sdk: Path) -> list[Path]:
    own = [p for p in directory.iterdir() if p.suffix in (".zig", ".c", ".h")]
    return own + (sorted(sdk.glob("*.zig")) if own and own[0].suffix == ".zig" else [])


def is_stale(directory: Path, sdk: Path) -> bool:
    wasm = directory / WASM_NAME
    if not wasm.exists():
        return True
    built = wasm.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _sources(directory, sdk))


def compile_command(source: Path, out: Path, sdk: Path, cache: Path) -> list[str]:
    zig = [sys.executable, "-m", "ziglang"]
    if source.suffix == ".c":
        return zig + [
            "cc", "--target=wasm32-freestanding", "-O2", "-nostdlib",
            "-Wl,--no-entry", "-o", str(out), str(source),
        ]  # fmt: skip
    return zig + [
        "build-exe", "-target", "wasm32-freestanding", "-fno-entry", "-rdynamic", "-O", "ReleaseSmall",
        "--cache-dir", str(cache), "--dep", "aspen", f"-Mroot={source}", f"-Maspen={sdk / 'aspen.zig'}",
        f"-femit-bin={out}",
    ]  # fmt: skip


def build(directory: Path, source: Path, sdk: Path, cache: Path) -> None:
    out = directory / WASM_NAME
    tmp = directory / (WASM_NAME + ".tmp")
    result = subprocess.run(compile_command(source, tmp, sdk, cache), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"building {source} failed:\n{result.stderr}")
    tmp.replace(out)  # atomic: a reader never sees half a module


def build_all(root: Path = REPO, *, force: bool = False) -> list[Path]:
    """Build what is stale; returns the modules that were (re)built."""
    sdk = root / "sdk" / "zig"
    cache = root / "build" / "zig-cache"  # build/ is git-ignored
    built = []
    for directory, source in find_plugins(root / "plugins"):
        if force or is_stale(directory, sdk):
            build(directory, source, sdk, cache)
            built.append(directory / WASM_NAME)
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=REPO)
    parser.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args()
    try:
        built = build_all(args.root, force=args.force)
    except RuntimeError as exc:
        sys.exit(str(exc))
    for path in built:
        print(f"built {path.relative_to(args.root)}")


if __name__ == "__main__":
    main()
