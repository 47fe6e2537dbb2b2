"""The one compiled part: the GIL-free hand-off the plugin runtime waits on
(see aspen/handoff/_eventcount.c). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aspen.handoff._eventcount",
            ["aspen/handoff/_eventcount.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,  # without a compiler: aspen.handoff.plain, slower but the same
        )
    ]
)
