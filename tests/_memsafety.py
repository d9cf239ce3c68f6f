"""Shared by tests/sanitize.py and tests/valgrind.py: an interpreter to build
with, and a build variant of the compiled core in a directory of its own
(never over the in-place .so that a normal run imports)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from all_pythons import find_python  # noqa: E402

BUILD_REQS = ["Cython>=3.0.10", "setuptools>=77", "wheel", "pytest>=7", "pytest-timeout>=2.1"]


def log(tag, *a):
    print(f"[{tag}]", *a, flush=True)


def ensure_python(given: str | None, suffix: str) -> str:
    """`given`, or a venv $RINGLINE_VENVS/<X.Y>-<suffix> (default
    ~/.cache/ringline-venvs) made from CPython RINGLINE_MEMCHECK_PYTHON
    (default 3.11) with what building and testing need."""
    if given:
        return given
    ver = os.environ.get("RINGLINE_MEMCHECK_PYTHON", "3.11")
    base = find_python(ver)
    if base is None:
        sys.exit(f"no CPython {ver} found (set RINGLINE_MEMCHECK_PYTHON or pass --python)")
    venvs = os.environ.get("RINGLINE_VENVS", os.path.expanduser("~/.cache/ringline-venvs"))
    venv = os.path.join(venvs, f"{ver}-{suffix}")
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([base, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", *BUILD_REQS], check=True)
    return py


def python_version(py: str) -> str:
    return subprocess.run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                          capture_output=True, text=True, check=True).stdout.strip()


def build_variant(tag: str, py: str, out: str, env: dict, force: bool = False) -> str:
    """Build the core with `env` (RINGLINE_SANITIZE=..., RINGLINE_VALGRIND=1)
    into out/ext, and a copy of the package with that core into out/lib;
    returns out/lib (to go first on PYTHONPATH).  setup.py's cythonize
    still writes src/ringline/_core/core.c (the same C for every variant)."""
    ext_dir = os.path.join(out, "ext")
    cmd = [py, "setup.py", "-q", "build_ext", "--build-lib", ext_dir,
           "--build-temp", os.path.join(out, "tmp")] + (["--force"] if force else [])
    log(tag, "building:", " ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
    t0 = time.monotonic()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "RINGLINE_REQUIRE_EXTENSION": "1", **env})
    log(tag, f"build took {time.monotonic() - t0:.0f} s")
    sos = glob.glob(os.path.join(ext_dir, "ringline", "_core", "core*.so"))
    if len(sos) != 1:
        sys.exit(f"expected one built core in {ext_dir}, found {sos}")
    lib = os.path.join(out, "lib")
    shutil.rmtree(lib, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "src", "ringline"), os.path.join(lib, "ringline"),
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.c", "*.html"))
    shutil.copy2(sos[0], os.path.join(lib, "ringline", "_core"))
    return lib
