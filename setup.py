# The compiled core: one extension built from core.pyx and its included parts.
# Needs only a C compiler and the Python headers (no liburing).
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("RINGLINE_DEBUG") == "1"

ext = Extension(
    "ringline._core.core",
    ["src/ringline/_core/core.pyx"],
    include_dirs=["src/ringline/_core"],
    extra_compile_args=["-O2", "-fno-strict-aliasing"] + (["-g", "-O0"] if debug else []),
    define_macros=[("RINGLINE_DEBUG", "1")] if debug else [],
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3", "embedsignature": True},
        compile_time_env={"DEBUG": debug},
        annotate=False,
    ),
)
