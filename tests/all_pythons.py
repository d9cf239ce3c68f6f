#!/usr/bin/env python3
"""Install ringline and run its test suite on every CPython the project
supports that this machine has (3.11, 3.12, 3.13), each in its own venv,
on every backend (the suite parametrizes over them).  Exit status 1 if any
version fails, is missing where RINGLINE_REQUIRE_ALL=1, or collects nothing.

    python3 tests/all_pythons.py               # every version found
    python3 tests/all_pythons.py -- -x -k tls  # extra pytest arguments
    RINGLINE_PYTHONS=3.12 python3 tests/all_pythons.py
    RINGLINE_PURE=1 python3 tests/all_pythons.py   # built without the core

Each venv gets ``.[test,integration]`` (the frameworks of
tests/test_integration_frameworks.py); the asyncpg test there wants a
PostgreSQL server in ``RINGLINE_PG_DSN`` (.ci/run starts one with
tools/ci_postgres.sh).

Interpreters are looked up as ``python3.X`` on PATH and in pyenv's versions
directory.  Venvs live in ``$RINGLINE_VENVS`` (default ~/.cache/ringline-venvs)
and are reused; the project is rebuilt into each on every run.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSIONS = ("3.11", "3.12", "3.13")


def find_python(ver: str) -> str | None:
    candidates = []
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    try:
        root = subprocess.run(["pyenv", "root"], capture_output=True, text=True,
                              check=True).stdout.strip() or root
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates += sorted(glob.glob(os.path.join(root, "versions", f"{ver}.*", "bin", "python")),
                         reverse=True)
    exe = shutil.which(f"python{ver}")
    if exe:
        candidates.append(exe)
    for c in candidates:
        # A free-threaded build (3.13t) is a different ABI: not this run's.
        try:
            out = subprocess.run([c, "-c", "import sys, sysconfig; print('%d.%d' % "
                                  "sys.version_info[:2], sysconfig.get_config_var('Py_GIL_DISABLED') or 0)"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if out and out[0] == ver and out[1] in ("0", "None"):
            return c
    return None


def run(cmd, **kw) -> int:
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=ROOT, **kw).returncode


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "--":
        args = args[1:]
    wanted = [v.strip() for v in os.environ.get("RINGLINE_PYTHONS", ",".join(VERSIONS)).split(",")
              if v.strip()]
    venvs = os.environ.get("RINGLINE_VENVS", os.path.expanduser("~/.cache/ringline-venvs"))
    # RINGLINE_PURE=1: install without the compiled core (RINGLINE_NO_EXTENSION=1,
    # venvs <ver>-pure) and run the entry points' tests, tests/test_public_api.py
    # (unless test arguments are given): ringline.NATIVE False, asyncio's loop.
    pure = os.environ.get("RINGLINE_PURE") == "1"
    install_env = dict(os.environ, RINGLINE_NO_EXTENSION="1") if pure else None
    if pure and not args:
        args = ["tests/test_public_api.py"]
    results = []
    for ver in wanted:
        py = find_python(ver)
        if py is None:
            results.append((ver, "missing", 0.0))
            continue
        t0 = time.monotonic()
        venv = os.path.join(venvs, ver + ("-pure" if pure else ""))
        vpy = os.path.join(venv, "bin", "python")
        if not os.path.exists(vpy) and run([py, "-m", "venv", venv]) != 0:
            results.append((ver, "venv failed", time.monotonic() - t0))
            continue
        run([vpy, "-m", "pip", "install", "-q", "--upgrade", "pip"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # [integration]: the frameworks tests/test_integration_frameworks.py
        # runs on ringline (uvicorn, aiohttp, hypercorn, anyio, pytest-asyncio,
        # asyncpg); RINGLINE_REQUIRE_INTEGRATION makes a missing one a failure.
        if run([vpy, "-m", "pip", "install", "-q", ".[test,integration]"], env=install_env) != 0:
            results.append((ver, "install failed", time.monotonic() - t0))
            continue
        t1 = time.monotonic()
        run([vpy, "-c", "import sys, ringline; print('ringline', ringline.__version__, "
             "'on Python', sys.version.split()[0], 'native core:', ringline.NATIVE, "
             "'backends:', ringline.available_backends())"])
        rc = run([vpy, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                 env=dict(os.environ, RINGLINE_REQUIRE_INTEGRATION="1"))
        status = {0: "passed", 5: "no tests collected"}.get(rc, f"failed (pytest exit {rc})")
        results.append((ver, status, time.monotonic() - t0, time.monotonic() - t1))
    print("\n== ringline test suite per Python version ==")
    ok = True
    for ver, status, *times in results:
        detail = ""
        if len(times) == 2:
            detail = f"  (install {times[0] - times[1]:.0f} s, tests {times[1]:.0f} s)"
        print(f"  {ver}: {status}{detail}")
        if status != "passed" and not (status == "missing"
                                       and os.environ.get("RINGLINE_REQUIRE_ALL") != "1"):
            ok = False
    if not any(r[1] == "passed" for r in results):
        print("no Python version ran the suite", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
