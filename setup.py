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
#
# The extension is optional: where it cannot be built (not Linux, no C
# compiler, a compile error, Cython missing) the install still succeeds with
# the pure-Python package, whose ringline.new_event_loop() returns asyncio's
# own loop (ringline.NATIVE is False; `python -m ringline info` says why).
# RINGLINE_NO_EXTENSION=1 skips the extension on purpose (to test that build);
# RINGLINE_REQUIRE_EXTENSION=1 makes a failed build an error instead.
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

debug = os.environ.get("RINGLINE_DEBUG") == "1"
sanitize = os.environ.get("RINGLINE_SANITIZE", "").strip()
valgrind = os.environ.get("RINGLINE_VALGRIND") == "1"
require = os.environ.get("RINGLINE_REQUIRE_EXTENSION") == "1"

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

# Written into the built package when the extension is left out; read by
# ringline._native (and so `python -m ringline info`).
REASON_FILE = os.path.join("ringline", "_core", "NO_EXTENSION.txt")


def _skip_reason():
    if os.environ.get("RINGLINE_NO_EXTENSION") == "1":
        return "RINGLINE_NO_EXTENSION=1 was set when this copy was built"
    if not sys.platform.startswith("linux"):
        return (f"the compiled core builds on Linux only (this is {sys.platform}); "
                f"see README, 'ringline does not build on macOS/BSD yet'")
    if sys.implementation.name != "cpython":
        return f"the compiled core needs CPython (this is {sys.implementation.name})"
    return None


class optional_build_ext(build_ext):
    """build_ext that records why the core was not built instead of failing."""

    skip_reason = None

    def run(self):
        if self.skip_reason is None:
            try:
                super().run()
                self._remove_reason()
                return
            except Exception as exc:  # noqa: BLE001 - compiler missing/failing, ...
                if require:
                    raise
                self.skip_reason = (f"building the compiled core failed: "
                                    f"{type(exc).__name__}: {exc}")
        self.warn("ringline: installing WITHOUT the compiled core ("
                  + self.skip_reason + "); ringline.new_event_loop() will return "
                  "asyncio's own loop")
        self._write_reason(self.skip_reason)

    def _reason_path(self):
        base = "src" if self.inplace else self.build_lib
        return os.path.join(base, REASON_FILE)

    def _write_reason(self, reason):
        path = self._reason_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(reason + "\n")

    def _remove_reason(self):
        try:
            os.remove(self._reason_path())
        except OSError:
            pass


class build_py_with_reason(build_py):
    """With no extension to build, build_ext does not run: record the reason here."""

    def run(self):
        super().run()
        if optional_build_ext.skip_reason is not None:
            path = os.path.join(self.build_lib, REASON_FILE)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(optional_build_ext.skip_reason + "\n")


def _extensions():
    reason = _skip_reason()
    if reason is None:
        try:
            from Cython.Build import cythonize
        except ImportError as exc:
            reason = f"Cython is not installed ({exc})"
    if reason is not None:
        if require:
            raise SystemExit(f"RINGLINE_REQUIRE_EXTENSION=1 but {reason}")
        optional_build_ext.skip_reason = reason
        return []   # a pure wheel (py3-none-any); build_py records the reason
    ext = Extension(
        "ringline._core.core",
        ["src/ringline/_core/core.pyx"],
        include_dirs=["src/ringline/_core"],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
        define_macros=macros,
    )
    return cythonize(
        [ext],
        compiler_directives={"language_level": "3", "embedsignature": True},
        compile_time_env={"DEBUG": debug},
        annotate=False,
    )


setup(
    ext_modules=_extensions(),
    cmdclass={"build_ext": optional_build_ext, "build_py": build_py_with_reason},
)
