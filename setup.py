# The compiled core: one extension built from core.pyx and its included parts.
# Needs only a C compiler and the Python headers (no liburing).
#
# Build variants (environment variables, read here at build time):
#   RINGLINE_DEBUG=1        -O0 -g and the core's DEBUG checks (compile-time DEBUG,
#                           C macro RINGLINE_DEBUG).
#   RINGLINE_SANITIZE=LIST  compile and link with -fsanitize=LIST (e.g.
#                           "address,undefined"), -fno-omit-frame-pointer -g -O1;
#                           with "undefined", -fno-sanitize-recover=undefined so a
#                           UBSan report aborts (fails the run).  The result needs the
#                           sanitizer runtime loaded first: see tests/sanitize.py.
#   RINGLINE_VALGRIND=1     C macro RINGLINE_VALGRIND: tells valgrind (client requests
#                           from <valgrind/memcheck.h>) which memory the kernel
#                           wrote through io_uring.  See tests/valgrind.py.
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

debug = os.environ.get("RINGLINE_DEBUG") == "1"
sanitize = os.environ.get("RINGLINE_SANITIZE", "").strip()
valgrind = os.environ.get("RINGLINE_VALGRIND") == "1"

compile_args = ["-O2", "-fno-strict-aliasing"]
link_args = []
macros = []
if sanitize:
    san = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    if "undefined" in sanitize.split(","):
        san.append("-fno-sanitize-recover=undefined")
    compile_args += san + ["-O1"]
    link_args += san
if valgrind:
    compile_args += ["-g"]
    macros.append(("RINGLINE_VALGRIND", "1"))
if debug:
    compile_args += ["-g", "-O0"]
    macros.append(("RINGLINE_DEBUG", "1"))

ext = Extension(
    "ringline._core.core",
    ["src/ringline/_core/core.pyx"],
    include_dirs=["src/ringline/_core"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
    define_macros=macros,
)

setup(
    ext_modules=cythonize(
        [ext],
        compiler_directives={"language_level": "3", "embedsignature": True},
        compile_time_env={"DEBUG": debug},
        annotate=False,
    ),
)
