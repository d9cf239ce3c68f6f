#!/usr/bin/env python
"""Run whole CPython asyncio test modules with ringline as the default loop.

    python tests/run_cpython_modules.py                       # the issue-5 modules, all loops
    python tests/run_cpython_modules.py --modules test_streams --loops ringline-poll -v
    python tests/run_cpython_modules.py --failures            # + one line per failure
    python tests/run_cpython_modules.py --modules all         # every module of test_asyncio

Each module of ``test.test_asyncio`` (default: test_ssl, test_streams,
test_subprocess, test_taskgroups, test_runners, test_timeouts) runs with
``unittest`` in a fresh interpreter, once per loop:

``asyncio``         stock asyncio, untouched (the reference)
``ringline-io_uring`` / ``ringline-poll``
                    the default event loop policy's loop factory is replaced by
                    ``ringline.new_event_loop`` (RINGLINE_BACKEND set to the
                    backend), so every ``asyncio.new_event_loop()``,
                    ``asyncio.run()``, ``asyncio.Runner()`` and
                    ``IsolatedAsyncioTestCase`` gets a ringline loop -- also
                    after a test resets the policy with
                    ``set_event_loop_policy(None)``, as these modules do.
                    Tests that build a loop class themselves (test_runners'
                    mocked BaseEventLoop, test_utils.TestLoop) keep theirs.

The table shows tests run, failures, errors, skipped (and expected failures /
unexpected successes when there are any), the time, and for ringline how many
ringline loops the run created (proof that ringline was under test).  Then
every test that fails on a ringline backend but passes on asyncio is listed.

Tests that fail on ringline by design are listed separately with their
cause (KNOWN below).

Exit status: 0 when no test outside KNOWN fails on ringline that passes on
asyncio, else 1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

#: Tests that fail on ringline by design, with the cause (matched as a
#: prefix of the test id after "test.test_asyncio.").  Listed, not counted
#: as regressions.
KNOWN: dict[str, str] = {}

MODULES = ("test_ssl", "test_streams", "test_subprocess", "test_taskgroups",
           "test_runners", "test_timeouts")
LOOPS = ("asyncio", "ringline-io_uring", "ringline-poll")
HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------------------
# child: one module on one loop
# ---------------------------------------------------------------------------

def install_ringline_default(backend: str | None):
    """Make the default policy's loops ringline's; returns a counter of the
    loops made."""
    import asyncio
    from asyncio import unix_events

    import ringline

    made = [0]

    def factory():
        made[0] += 1
        return ringline.new_event_loop(backend)

    unix_events._UnixDefaultEventLoopPolicy._loop_factory = staticmethod(factory)
    asyncio.set_event_loop_policy(None)
    return made


def _one_line(text: str) -> str:
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:200] if lines else ""


#: Address-space cap of each child (bytes): a module that runs away (seen
#: once on a loaded machine: a test_runners child grew past 20 GiB, on stock
#: asyncio too) fails with MemoryError instead of waking the OOM killer.
CHILD_MEMORY_LIMIT = int(os.environ.get("RINGLINE_MODULES_MEMORY_LIMIT", 8 << 30))


def child(module: str, loop: str, out_path: str, verbosity: int) -> None:
    import resource
    import unittest

    if CHILD_MEMORY_LIMIT > 0:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_LIMIT, CHILD_MEMORY_LIMIT))
    made = None
    if loop.startswith("ringline"):
        backend = loop.partition("-")[2] or None
        if backend:
            os.environ["RINGLINE_BACKEND"] = backend
        made = install_ringline_default(backend)
    try:
        suite = unittest.defaultTestLoader.loadTestsFromName(f"test.test_asyncio.{module}")
    except unittest.SkipTest as exc:      # a whole module skipped (Windows-only ones)
        with open(out_path, "w") as f:
            json.dump({"module": module, "loop": loop, "run": 0, "failures": 0, "errors": 0,
                       "skipped": 1, "expected_failures": 0, "unexpected_successes": 0,
                       "time": 0.0, "ringline_loops": made[0] if made is not None else None,
                       "failed": {}, "unexpected": [], "module_skipped": str(exc)}, f)
        return
    t0 = time.monotonic()
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=verbosity).run(suite)
    elapsed = time.monotonic() - t0
    data = {
        "module": module, "loop": loop, "run": result.testsRun,
        "failures": len(result.failures), "errors": len(result.errors),
        "skipped": len(result.skipped),
        "expected_failures": len(result.expectedFailures),
        "unexpected_successes": len(result.unexpectedSuccesses),
        "time": elapsed,
        "ringline_loops": made[0] if made is not None else None,
        "failed": {t.id(): _one_line(tb) for t, tb in result.failures + result.errors},
        "unexpected": [t.id() for t in result.unexpectedSuccesses],
    }
    with open(out_path, "w") as f:
        json.dump(data, f)


# ---------------------------------------------------------------------------
# parent
# ---------------------------------------------------------------------------

def run_one(module, loop, args):
    with tempfile.NamedTemporaryFile("r", suffix=".json", delete=False) as tmp:
        path = tmp.name
    cmd = [sys.executable, os.path.abspath(__file__), "--child", module, "--loop", loop,
           "--out", path, "--verbosity", str(2 if args.verbose else 0)]
    env = dict(os.environ)
    env.pop("RINGLINE_BACKEND", None)
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if args.verbose else subprocess.PIPE,
                           text=True, timeout=args.timeout, env=env)
        rc = p.returncode
        tail = _one_line(p.stderr or "")
    except subprocess.TimeoutExpired:
        rc, tail = None, f"timed out after {args.timeout:.0f} s"
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {"module": module, "loop": loop, "crashed": True,
                "detail": tail if rc is None else f"exit status {rc}: {tail}",
                "time": time.monotonic() - t0}
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    return data


def all_modules():
    """Every test module of this interpreter's test.test_asyncio."""
    import pkgutil
    import test.test_asyncio as pkg
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                  if m.name.startswith("test_"))


def available_loops(wanted):
    loops = []
    for loop in wanted:
        if loop.startswith("ringline"):
            backend = loop.partition("-")[2]
            code = ("import ringline, sys; "
                    f"sys.exit(0 if {backend!r} in ringline.available_backends() else 3)")
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"skipping {loop}: " + (_one_line(r.stderr) or "backend not available"),
                      file=sys.stderr)
                continue
        loops.append(loop)
    return loops


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modules", default=",".join(MODULES))
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--timeout", type=float, default=900, help="seconds per module and loop")
    ap.add_argument("--failures", action="store_true",
                    help="list every failing test with a one-line cause")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("-v", "--verbose", action="store_true", help="unittest verbosity 2, live")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--loop", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--verbosity", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        child(args.child, args.loop, args.out, args.verbosity)
        return 0

    modules = [m.strip() for m in args.modules.split(",") if m.strip()]
    if modules == ["all"]:
        modules = all_modules()
    loops = available_loops([l.strip() for l in args.loops.split(",") if l.strip()])
    results = {}
    for module in modules:
        for loop in loops:
            r = run_one(module, loop, args)
            results[(module, loop)] = r
            if r.get("crashed"):
                print(f"{module:>16} {loop:>18}: CRASHED {r['detail']}", file=sys.stderr)
            else:
                print(f"{module:>16} {loop:>18}: run {r['run']:>4} failures {r['failures']:>3} "
                      f"errors {r['errors']:>3} skipped {r['skipped']:>3} ({r['time']:.1f} s)",
                      file=sys.stderr, flush=True)

    header = "| module | loop | run | failures | errors | skipped | xfail/xpass | time (s) | ringline loops |"
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (module, loop), r in results.items():
        if r.get("crashed"):
            lines.append(f"| {module} | {loop} | crashed: {r['detail']} | | | | | {r['time']:.1f} | |")
            continue
        lines.append(
            f"| {module} | {loop} | {r['run']} | {r['failures']} | {r['errors']} | {r['skipped']} | "
            f"{r['expected_failures']}/{r['unexpected_successes']} | {r['time']:.1f} | "
            f"{'' if r['ringline_loops'] is None else r['ringline_loops']} |")
    print("\n".join(lines))

    def known(test):
        short = test.replace("test.test_asyncio.", "", 1)
        return next((why for prefix, why in KNOWN.items() if short.startswith(prefix)), None)

    regressions, expected = [], []
    for (module, loop), r in results.items():
        if not loop.startswith("ringline"):
            continue
        ref = results.get((module, "asyncio"), {})
        ref_failed = set(ref.get("failed", {})) if not ref.get("crashed") else None
        if r.get("crashed"):
            regressions.append(f"{loop}: {module} crashed: {r['detail']}")
            continue
        for test, why in sorted(r["failed"].items()):
            if ref_failed is None or test not in ref_failed:
                cause = known(test)
                if cause:
                    expected.append(f"{loop}: {test}: {why} -- known: {cause}")
                else:
                    regressions.append(f"{loop}: {test}: {why}")
    if expected:
        print("\nFailing on ringline by design (KNOWN in this script):")
        print("\n".join(f"- {line}" for line in expected))
    if regressions:
        print("\nFailing on ringline, passing on asyncio:")
        print("\n".join(f"- {line}" for line in regressions))
    if args.failures:
        print("\nAll failures:")
        for (module, loop), r in results.items():
            for test, why in sorted(r.get("failed", {}).items()):
                print(f"- {loop}: {test}: {why}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r) for r in results.values()], f, indent=1)
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
