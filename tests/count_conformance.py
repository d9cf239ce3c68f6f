#!/usr/bin/env python
"""Per-mixin pass/fail/skip counts of CPython's asyncio conformance tests.

Runs tests/test_cpython_*.py with pytest and prints, for each CPython mixin
(and backend), how many tests passed, failed (or errored) and were skipped.

    python tests/count_conformance.py                  # ringline, all backends
    python tests/count_conformance.py --loop asyncio   # stock asyncio
    python tests/count_conformance.py --loop both --markdown   # README table
    python tests/count_conformance.py --failures       # + one line per failure
    python tests/count_conformance.py --features +transports -- -k create_server

--features / --no-skips / --backends set RINGLINE_CONFORMANCE_FEATURES,
RINGLINE_CONFORMANCE_NO_SKIPS and RINGLINE_TEST_BACKENDS (see
tests/_conformance_skips.py and tests/_loops.py); arguments after ``--`` go
to pytest.  pytest runs in a child process: when a test crashes the
interpreter (segfault in the core) or hangs past its timeout (conftest's
watchdog ends the process), that test is counted as failed and the run
resumes with the tests not yet run.

Exit status: 0 when nothing failed, 1 otherwise, 2 when pytest could not
run (collection error, e.g. ringline not importable).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MAX_RESTARTS = 25
WATCHDOG_EXIT_CODE = 86  # tests/conftest.py: a test outlived its timeout + grace

# Display order; unknown mixins are appended.
ORDER = [
    "test_events.EventLoopTestsMixin",
    "test_events.SubprocessTestsMixin",
    "test_sock_lowlevel.BaseSockTestsMixin",
    "test_sendfile.SendfileTestsBase",
    "test_server.BaseStartServer",
    "test_sslproto.BaseStartTLS",
    "test_subprocess.SubprocessMixin",
    "test_buffered_proto.BaseTestBufferedProtocol",
    "test_streams.StreamTests",
]
OUTCOMES = ("passed", "failed", "skipped")


# ---------------------------------------------------------------------------
# child: runs pytest, streams one JSON line per event to a progress file
# ---------------------------------------------------------------------------

class ChildPlugin:
    def __init__(self, progress_path: str, exclude: set):
        self.out = open(progress_path, "a", buffering=1)
        self.exclude = exclude
        self.meta = {}
        self.state = {}

    def _emit(self, **obj):
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()
        os.fsync(self.out.fileno())

    def pytest_collection_modifyitems(self, config, items):
        drop = [i for i in items if i.nodeid in self.exclude]
        if drop:
            items[:] = [i for i in items if i.nodeid not in self.exclude]
            config.hook.pytest_deselected(items=drop)

    def pytest_collection_finish(self, session):
        for item in session.items:  # after -k/-m deselection
            cls = getattr(item, "cls", None)
            mixin = getattr(cls, "cpython_mixin", None)
            if mixin:
                self.meta[item.nodeid] = (mixin, getattr(cls, "backend", "?"))
        self._emit(collected=[[n, m, b] for n, (m, b) in self.meta.items()])

    def pytest_collectreport(self, report):
        if report.failed:
            self._emit(collect_error=report.nodeid or "<session>")

    def pytest_runtest_logstart(self, nodeid, location):
        if nodeid in self.meta:
            self._emit(start=nodeid)

    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid
        if nodeid not in self.meta:
            return
        outcome, msg = self.state.get(nodeid, (None, ""))
        if report.failed:
            if outcome != "failed":
                outcome, msg = "failed", _one_line(report)
        elif report.skipped:
            if outcome != "failed":
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
                outcome, msg = "skipped", str(reason).replace("Skipped: ", "")
        elif report.when == "call" and outcome is None:
            outcome = "passed"
        self.state[nodeid] = (outcome, msg)

    def pytest_runtest_logfinish(self, nodeid, location):
        if nodeid in self.meta:
            outcome, msg = self.state.get(nodeid, (None, ""))
            self._emit(done=nodeid, outcome=outcome or "failed", msg=msg)

    def pytest_sessionfinish(self, session, exitstatus):
        self._emit(exit=int(exitstatus))


def _one_line(report) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    first = next((line for line in text.splitlines() if line.strip()), "")
    where = "" if report.when == "call" else f"[{report.when}] "
    return (where + first.strip())[:200]


def child_main(progress: str, exclude_file: str, pytest_args: list) -> int:
    import pytest
    exclude = set()
    if exclude_file and os.path.exists(exclude_file):
        with open(exclude_file) as f:
            exclude = {line.strip() for line in f if line.strip()}
    files = sorted(glob.glob(os.path.join(HERE, "test_cpython_*.py")))
    args = files + ["-q", "-p", "no:cacheprovider", "--tb=no",
                    "-o", "console_output_style=classic"] + pytest_args
    return int(pytest.main(args, plugins=[ChildPlugin(progress, exclude)]))


# ---------------------------------------------------------------------------
# parent: (re)starts the child until every selected test has a result
# ---------------------------------------------------------------------------

def run_loop_mode(args, loop: str, quiet: bool) -> dict:
    env = dict(os.environ, RINGLINE_TEST_LOOP=loop)
    if args.features is not None:
        env["RINGLINE_CONFORMANCE_FEATURES"] = args.features
    if args.no_skips:
        env["RINGLINE_CONFORMANCE_NO_SKIPS"] = "1"
    if args.backends:
        env["RINGLINE_TEST_BACKENDS"] = args.backends

    meta, results, collect_errors = {}, {}, []
    exit_code = None
    with tempfile.TemporaryDirectory(prefix="ringline-count-") as tmp:
        exclude_file = os.path.join(tmp, "exclude")
        for attempt in range(MAX_RESTARTS + 1):
            progress = os.path.join(tmp, f"progress{attempt}")
            with open(exclude_file, "w") as f:
                f.write("\n".join(results))
            cmd = [sys.executable, os.path.abspath(__file__), "--child", progress,
                   "--exclude", exclude_file, "--"] + args.pytest_args
            proc = subprocess.run(cmd, env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL if quiet else None)
            started, exit_code = None, None
            if os.path.exists(progress):
                with open(progress) as f:
                    for line in f:
                        try:
                            ev = json.loads(line)
                        except ValueError:
                            continue  # torn last line
                        if "collected" in ev:
                            for nodeid, mixin, backend in ev["collected"]:
                                meta[nodeid] = (mixin, backend)
                        elif "collect_error" in ev:
                            collect_errors.append(ev["collect_error"])
                        elif "start" in ev:
                            started = ev["start"]
                        elif "done" in ev:
                            results[ev["done"]] = (ev["outcome"], ev["msg"])
                            started = None
                        elif "exit" in ev:
                            exit_code = ev["exit"]
            if exit_code is not None:
                break
            # The child died without finishing the session.
            rc = proc.returncode
            try:
                how = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
            except ValueError:
                how = f"signal {-rc}"
            if started is None:
                collect_errors.append(f"<pytest died outside a test: {how}>")
                break
            if rc == WATCHDOG_EXIT_CODE:
                results[started] = ("failed", "hung: its timeout was not processed, "
                                              "conftest's watchdog ended the run")
            else:
                results[started] = ("failed", f"crashed the interpreter ({how})")
            print(f"[count_conformance] {started}: {results[started][1]}; resuming",
                  file=sys.stderr)
        else:
            collect_errors.append("<too many crashes; gave up>")

    counts = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
    details = []
    for nodeid, (mixin, backend) in meta.items():
        outcome, msg = results.get(nodeid, ("failed", "no result (run aborted)"))
        counts[f"{mixin}|{backend}"][outcome] += 1
        if outcome != "passed":
            details.append([nodeid, mixin, backend, outcome, msg])
    return {"loop": loop, "counts": dict(counts), "details": details,
            "collect_errors": collect_errors, "exit_code": exit_code}


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------

def _sort_key(key: str):
    mixin, backend = key.split("|")
    idx = ORDER.index(mixin) if mixin in ORDER else len(ORDER)
    return (idx, mixin, backend)


def render(results: list, markdown: bool) -> str:
    rows = []
    if len(results) == 1:
        res = results[0]
        header = ["CPython mixin", "backend", "tests", "passed", "failed", "skipped"]
        total = [0, 0, 0, 0]
        for key in sorted(res["counts"], key=_sort_key):
            mixin, backend = key.split("|")
            c = res["counts"][key]
            row = [sum(c.values()), c["passed"], c["failed"], c["skipped"]]
            total = [a + b for a, b in zip(total, row)]
            rows.append([mixin, backend] + row)
        rows.append(["total", ""] + total)
    else:
        base = next(r for r in results if r["loop"] == "asyncio")
        other = next(r for r in results if r["loop"] != "asyncio")
        base_by_mixin = defaultdict(int)
        for key, c in base["counts"].items():
            base_by_mixin[key.split("|")[0]] += c["passed"]
        header = ["CPython mixin", "backend", "tests", "asyncio passed",
                  "ringline passed", "ringline failed", "ringline skipped"]
        total = [0, 0, 0, 0, 0]
        for key in sorted(other["counts"], key=_sort_key):
            mixin, backend = key.split("|")
            c = other["counts"][key]
            row = [sum(c.values()), base_by_mixin[mixin], c["passed"], c["failed"], c["skipped"]]
            total = [a + b for a, b in zip(total, row)]
            rows.append([mixin, backend] + row)
        # asyncio ran each mixin once, whatever the number of ringline backends
        total[1] = sum(base_by_mixin.values())
        rows.append(["total", ""] + total)
    rows = [[str(x) for x in r] for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def fmt(r):
        return "  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                         for i, (x, w) in enumerate(zip(r, widths)))
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("ringline", "asyncio", "both"), default="ringline")
    parser.add_argument("--features", default=None,
                        help="RINGLINE_CONFORMANCE_FEATURES, e.g. '+transports,+unix' or 'all'")
    parser.add_argument("--no-skips", action="store_true",
                        help="apply no skip-table entry (see what really fails)")
    parser.add_argument("--backends", default=None, help="RINGLINE_TEST_BACKENDS")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    parser.add_argument("--failures", action="store_true",
                        help="also list failed tests with a one-line cause")
    parser.add_argument("--skips", action="store_true", help="also list skipped tests with reasons")
    parser.add_argument("--quiet", action="store_true", help="hide pytest's own output")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--exclude", default=None, help=argparse.SUPPRESS)
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)

    if args.child:
        return child_main(args.child, args.exclude, args.pytest_args)

    loops = ("asyncio", "ringline") if args.loop == "both" else (args.loop,)
    results = [run_loop_mode(args, loop, quiet=args.quiet or args.markdown) for loop in loops]

    status = 0
    for res in results:
        if res["collect_errors"]:
            print(f"{res['loop']}: errors: {', '.join(res['collect_errors'])}", file=sys.stderr)
            status = 2
    print()
    print(render(results, args.markdown))
    for res in results:
        listed = [d for d in res["details"]
                  if (args.failures and d[3] == "failed") or (args.skips and d[3] == "skipped")]
        if listed:
            print(f"\n{res['loop']}: {len(listed)} test(s) listed")
            for nodeid, _mixin, _backend, outcome, msg in sorted(listed):
                print(f"  {outcome.upper():7} {nodeid.split('/')[-1]}: {msg}")
    totals = dict.fromkeys(OUTCOMES, 0)
    for c in results[-1]["counts"].values():
        for o in OUTCOMES:
            totals[o] += c[o]
    print(f"\n{results[-1]['loop']}: {totals['passed']} passed, {totals['failed']} failed, "
          f"{totals['skipped']} skipped")
    if status == 0 and totals["failed"]:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
