"""The one compiled part: the GIL-free hand-off the plugin runtime waits on
(see aspen/_eventcount.c). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "aspen._eventcount",
            ["aspen/_eventcount.c"],
            extra_compile_args=["-O2", "-std=c11"],
            optional=True,  # without a compiler: aspen.eventcount_fallback, slower but the same
        )
    ]
)
