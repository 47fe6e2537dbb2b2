"""The compiled parts, all optional (each has a pure-Python twin that passes the suite):
the GIL-free hand-off the plugin runtime waits on (aspen/handoff/_eventcount.c), the
plugin workers that call libextism without the GIL (aspen/handoff/_calls.c, POSIX threads) and the
BLAKE3 segment tree of the blob stores (aspen/storage/_treehash.c), which compiles in
the official BLAKE3 C implementation from Debian's librust-blake3-dev when it is
installed. Everything else is in pyproject.toml."""

import glob
import os
import platform
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def blake3_sources() -> tuple[str, list[str], list[tuple[str, str]]] | None:
    """(include dir, sources, macros) of the newest BLAKE3 C sources Debian installed,
    copied under build/ (setuptools takes relative source paths only)."""
    found = sorted(glob.glob("/usr/share/cargo/registry/blake3-*/c/blake3.h"))
    if not found:
        return None
    names = ["blake3.h", "blake3_impl.h", "blake3.c", "blake3_dispatch.c", "blake3_portable.c"]
    macros = [(f"BLAKE3_NO_{isa}", "1") for isa in ("SSE2", "SSE41", "AVX2", "AVX512")]
    if platform.machine() in ("x86_64", "AMD64") and os.name == "posix":
        names += [f"blake3_{isa}_x86-64_unix.S" for isa in ("sse2", "sse41", "avx2", "avx512")]
        macros = []
    c = "build/blake3-c"
    os.makedirs(c, exist_ok=True)
    for name in names:
        shutil.copyfile(os.path.join(os.path.dirname(found[-1]), name), f"{c}/{name}")
    return c, [f"{c}/{n}" for n in names if not n.endswith(".h")], macros


class BuildExt(build_ext):
    """Lets the compiler take BLAKE3's assembly sources (.S, run through the C preprocessor)."""

    def build_extensions(self):
        self.compiler.src_extensions.append(".S")
        super().build_extensions()


extensions = [
    Extension(
        "aspen.handoff._eventcount",
        ["aspen/handoff/_eventcount.c"],
        extra_compile_args=["-O2", "-std=c11"],
        optional=True,  # without a compiler: aspen.handoff.plain, slower but the same
    )
]
if os.name == "posix":  # without it: Python worker threads (aspen.plugins.python_workers)
    extensions.append(
        Extension(
            "aspen.handoff._calls",
            ["aspen/handoff/_calls.c"],
            extra_compile_args=["-O2", "-std=gnu11"],
            extra_link_args=["-pthread"],
            optional=True,
        )
    )
if (b3 := blake3_sources()) is not None:  # without them: aspen.storage.tree_hash_py
    include, sources, macros = b3
    extensions.append(
        Extension(
            "aspen.storage._treehash",
            ["aspen/storage/_treehash.c", *sources],
            include_dirs=[include],
            define_macros=macros,
            extra_compile_args=["-O3"],
            optional=True,
        )
    )

setup(ext_modules=extensions, cmdclass={"build_ext": BuildExt})
