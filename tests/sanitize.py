#!/usr/bin/env python3
"""Run the test suite on a copy of ringline whose compiled core is built with
AddressSanitizer + UndefinedBehaviorSanitizer; fail on any sanitizer report.

    python3 tests/sanitize.py                    # whole suite, both backends (what CI runs)
    python3 tests/sanitize.py --subset           # only the project's own tests
    python3 tests/sanitize.py -- -x -k tls       # extra pytest arguments
    python3 tests/sanitize.py --python /tmp/v3.11.7/bin/python   # use this interpreter
                                                 # (needs Cython, setuptools, pytest)

Without --python it uses a venv ``$RINGLINE_VENVS/3.11-memsafety`` (default
~/.cache/ringline-venvs) made from CPython 3.11 (RINGLINE_MEMCHECK_PYTHON=3.12
picks another) with the build and test requirements.

What it does, and the traps:

* Builds with ``RINGLINE_SANITIZE=address,undefined`` (see setup.py) into
  ``build/sanitize/<X.Y>/`` -- a copy of src/ringline with the sanitized .so --
  never over the in-place .so a normal run imports.  That copy goes first on
  PYTHONPATH (it wins over an installed or editable ringline).
* CPython is not built with ASan, so libasan must be preloaded (LD_PRELOAD) or
  importing the core aborts ("ASan runtime does not come first").  Preloaded into
  *every* child, it makes other programs misbehave (a test's ``pgrep`` hung), so
  tests/memsafety/sitecustomize.py removes LD_PRELOAD from each Python process's
  environment at start-up and sets sys.executable to a wrapper
  (``build/sanitize/<X.Y>/bin/python``) that preloads it again: child Python
  interpreters get the runtime, other programs do not.
* PYTHONMALLOC=malloc, so Python objects are malloc blocks with redzones and a
  core overrunning into one is caught; allocator_may_return_null=1, so an absurd
  allocation size gets MemoryError as it would without ASan (not an abort).
* Leaks: LSan checks at each process's exit, with tests/memsafety/lsan.supp for
  what CPython itself leaves allocated (CPython-internal sites only).
* UBSan: the core is compiled with -fno-sanitize-recover=undefined and
  UBSAN_OPTIONS=halt_on_error=1, so a report aborts the process.
* Measured on the 2-vCPU VM, 3.11: build 2-3.5 min, suite 5.6 min (3.5 without
  sanitizers); test_debug_mode's slow-callback threshold had to allow for it.
* Every report goes to a file (log_path) in ``build/sanitize/<X.Y>/logs`` --
  including reports from child processes, whose stderr a test may swallow -- and
  the run fails if any file is there at the end, whatever pytest said.
* ASan cannot see the kernel's writes: a buffer freed while io_uring may still
  write into it is not caught here (tests/valgrind.py does not see those either).
"""

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
import _memsafety  # noqa: E402

SANITIZERS = "address,undefined"

# --subset: the project's own tests (driver, loop, transports, TLS, streams,
# datagrams, files, processes, the runtime API), not CPython's conformance tests.
SUBSET = ["-m", "not conformance"]
#: The test file whose tests fork() (process workers); see main().
FORKING = "tests/test_runtime_workers.py"


def log(*a):
    _memsafety.log("sanitize", *a)


def runtime_lib(name: str) -> str:
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if not os.path.isabs(path) or not os.path.exists(path):
        sys.exit(f"sanitize: gcc does not know {name} (install gcc's libasan)")
    return os.path.realpath(path)


def main() -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", help="interpreter to build and test with (default: a venv)")
    ap.add_argument("--subset", action="store_true", help="run the CI subset, not the whole suite")
    ap.add_argument("--rebuild", action="store_true", help="rebuild the core even if up to date")
    ap.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = ap.parse_args()

    py = _memsafety.ensure_python(args.python, "memsafety")
    ver = _memsafety.python_version(py)
    out = os.path.join(ROOT, "build", "sanitize", ver)
    os.makedirs(out, exist_ok=True)
    lib = _memsafety.build_variant("sanitize", py, out, {"RINGLINE_SANITIZE": SANITIZERS},
                                   args.rebuild)
    asan = runtime_lib("libasan.so")

    logs = os.path.join(out, "logs")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    supp = os.path.join(HERE, "memsafety", "lsan.supp")
    san_env = {
        "ASAN_OPTIONS": ":".join([
            "detect_leaks=1", "halt_on_error=1", "abort_on_error=0",
            "allocator_may_return_null=1", "detect_stack_use_after_return=0",
            f"log_path={logs}/asan"]),
        "LSAN_OPTIONS": f"suppressions={supp}:print_suppressions=0",
        "UBSAN_OPTIONS": f"halt_on_error=1:print_stacktrace=1:log_path={logs}/ubsan",
        "PYTHONMALLOC": "malloc",
    }
    # The wrapper child Pythons run (sys.executable, set by sitecustomize):
    # the sanitizer settings baked in, for a test that passes its own env.
    wrapper = os.path.join(out, "bin", "python")
    os.makedirs(os.path.dirname(wrapper), exist_ok=True)
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n# Written by tests/sanitize.py: a child Python of the sanitizer run.\n")
        for k, v in san_env.items():
            f.write(f"export {k}='{v}'\n")
        f.write(f"export RINGLINE_SANITIZE_PRELOAD='{asan}'\n"
                f"export LD_PRELOAD='{asan}'\n"
                f"exec '{py}' \"$@\"\n")
    os.chmod(wrapper, 0o755)

    env = dict(os.environ)
    env.update(san_env)
    env.update({
        "LD_PRELOAD": asan,
        "RINGLINE_SANITIZE_PRELOAD": asan,
        "RINGLINE_SANITIZE_PYTHON": wrapper,
        "PYTHONPATH": os.pathsep.join([os.path.join(HERE, "memsafety"), lib]
                                      + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
    })
    # Check the set-up before spending the suite's time on it.
    probe = ("import sys, os, ringline; from ringline._core import core; "
             "print(core.__file__); print(ringline.available_backends()); "
             "print(os.environ.get('LD_PRELOAD')); print(sys.executable)")
    r = subprocess.run([py, "-c", probe], env=env, capture_output=True, text=True)
    lines = r.stdout.split("\n")
    if r.returncode or not lines[0].startswith(lib) or lines[2] != "None" or lines[3] != wrapper:
        log("set-up check failed:", r.stdout, r.stderr)
        return 1
    log("core:", lines[0], "backends:", lines[1])

    base = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if args.subset:
        base += SUBSET
    if args.pytest_args:
        runs = [base + args.pytest_args]
    else:
        # The tests that fork() process workers go first, in a pytest process
        # of their own: GCC 12's libasan takes no allocator lock around
        # fork(), so a fork while another thread is inside malloc leaves the
        # child hung on that lock (google/sanitizers#1814).  Later tests
        # leave threads behind (executors, monitors); a child of the full run
        # hung so in CI, then was killed at Config.startup_timeout.
        runs = [base + [FORKING], base + [f"--ignore={FORKING}"]]
    t0 = time.monotonic()
    rc = 0
    for cmd in runs:
        log("running:", " ".join(cmd))
        rc = subprocess.run(cmd, cwd=ROOT, env=env).returncode or rc
    took = time.monotonic() - t0

    reports = []
    for path in sorted(glob.glob(os.path.join(logs, "*"))):
        with open(path, errors="replace") as f:
            text = f.read()
        ours = _ours(text)
        print(f"\n===== sanitizer report{'' if ours else ' (not counted: no Python or ringline frame)'}"
              f": {path} =====", flush=True)
        sys.stdout.write(text)
        if ours:
            reports.append(path)
    print(f"\n== sanitizer run ({SANITIZERS}, Python {ver}): pytest exit {rc}, "
          f"{len(reports)} report file(s), tests {took:.0f} s ==", flush=True)
    return 0 if rc == 0 and not reports else 1


def _ours(report: str) -> bool:
    """Whether a report concerns a Python process (CPython or ringline's
    core).  A non-Python program a test runs under a child Python can still
    inherit the preload (seen: /usr/bin/tr's own leaks at exit); its report
    is printed but does not fail the run."""
    return any(k in report for k in ("python", "ringline", "core.c", ".pyx", ".pxi"))


if __name__ == "__main__":
    sys.exit(main())
