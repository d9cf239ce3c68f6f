#!/usr/bin/env python
"""Per-mixin pass/fail/skip counts of CPython's asyncio conformance tests.

Runs tests/test_cpython_*.py with pytest and prints, for each CPython mixin
(and backend), how many tests passed, failed (or errored) and were skipped.

    python tests/count_conformance.py                  # ringline, all backends
    python tests/count_conformance.py --loop asyncio   # stock asyncio
    python tests/count_conformance.py --loop both --markdown   # README table
    python tests/count_conformance.py --failures       # + one line per failure
    python tests/count_conformance.py --features +transports -- -k create_server

Options --features / --no-skips / --backends set RINGLINE_CONFORMANCE_FEATURES,
RINGLINE_CONFORMANCE_NO_SKIPS and RINGLINE_TEST_BACKENDS (see
tests/_conformance_skips.py and tests/_loops.py); arguments after ``--`` go
to pytest.  Exit status: 0 when nothing failed, 1 otherwise, 2 when pytest
could not run (collection error, e.g. ringline not importable).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))

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


class Collector:
    """pytest plugin: outcome of every conformance test, keyed by nodeid."""

    def __init__(self):
        self.meta = {}       # nodeid -> (mixin, backend)
        self.outcome = {}    # nodeid -> passed/failed/skipped
        self.message = {}    # nodeid -> one-line failure / skip reason
        self.collect_errors = []

    def pytest_collection_finish(self, session):
        for item in session.items:  # after -k/-m deselection
            cls = getattr(item, "cls", None)
            mixin = getattr(cls, "cpython_mixin", None)
            if mixin:
                self.meta[item.nodeid] = (mixin, getattr(cls, "backend", "?"))

    def pytest_collectreport(self, report):
        if report.failed:
            self.collect_errors.append(report.nodeid or "<session>")

    def pytest_runtest_logreport(self, report):
        nodeid = report.nodeid
        if nodeid not in self.meta:
            return
        prev = self.outcome.get(nodeid)
        if report.failed:
            self.outcome[nodeid] = "failed"
            self.message.setdefault(nodeid, _one_line(report))
        elif report.skipped:
            if prev != "failed":
                self.outcome[nodeid] = "skipped"
                reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
                self.message.setdefault(nodeid, str(reason).replace("Skipped: ", ""))
        elif report.when == "call" and prev is None:
            self.outcome[nodeid] = "passed"

    def result(self):
        counts = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
        details = []
        for nodeid, (mixin, backend) in self.meta.items():
            outcome = self.outcome.get(nodeid, "failed")  # never reported: treat as failed
            counts[f"{mixin}|{backend}"][outcome] += 1
            if outcome != "passed":
                details.append([nodeid, mixin, backend, outcome,
                                self.message.get(nodeid, "")])
        return {"counts": dict(counts), "details": details,
                "collect_errors": self.collect_errors}


def _one_line(report) -> str:
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    first = next((line for line in text.splitlines() if line.strip()), "")
    where = "" if report.when == "call" else f"[{report.when}] "
    return (where + first.strip())[:200]


def run_one(args, loop: str) -> dict:
    """Run the suite in this process for one loop mode and return the result."""
    os.environ["RINGLINE_TEST_LOOP"] = loop
    if args.features is not None:
        os.environ["RINGLINE_CONFORMANCE_FEATURES"] = args.features
    if args.no_skips:
        os.environ["RINGLINE_CONFORMANCE_NO_SKIPS"] = "1"
    if args.backends:
        os.environ["RINGLINE_TEST_BACKENDS"] = args.backends
    import pytest

    files = sorted(glob.glob(os.path.join(HERE, "test_cpython_*.py")))
    collector = Collector()
    pytest_args = files + ["-q", "-p", "no:cacheprovider", "--tb=no",
                           "-o", "console_output_style=classic"] + args.pytest_args
    code = pytest.main(pytest_args, plugins=[collector])
    res = collector.result()
    res["exit_code"] = int(code)
    res["loop"] = loop
    return res


def _sort_key(key: str):
    mixin, backend = key.split("|")
    idx = ORDER.index(mixin) if mixin in ORDER else len(ORDER)
    return (idx, mixin, backend)


def render(results: list, markdown: bool) -> str:
    rows = []
    if len(results) == 1:
        res = results[0]
        header = ["CPython mixin", "backend", "tests", "passed", "failed", "skipped"]
        total = dict.fromkeys(OUTCOMES, 0)
        for key in sorted(res["counts"], key=_sort_key):
            mixin, backend = key.split("|")
            c = res["counts"][key]
            for o in OUTCOMES:
                total[o] += c[o]
            rows.append([mixin, backend, sum(c.values()), c["passed"], c["failed"], c["skipped"]])
        rows.append(["total", "", sum(total.values()), total["passed"], total["failed"], total["skipped"]])
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
        rows.append(["total", ""] + total)
    rows = [[str(x) for x in r] for r in rows]
    if markdown:
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = lambda r: "  ".join(  # noqa: E731
        str(x).ljust(w) if i < 2 else str(x).rjust(w) for i, (x, w) in enumerate(zip(r, widths)))
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
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)  # internal (--loop both)
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)

    if args.loop == "both":
        results = []
        for loop in ("asyncio", "ringline"):
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as tmp:
                path = tmp.name
            try:
                cmd = [sys.executable, os.path.abspath(__file__), "--loop", loop, "--json", path]
                for flag, value in (("--features", args.features), ("--backends", args.backends)):
                    if value is not None:
                        cmd += [flag, value]
                if args.no_skips:
                    cmd.append("--no-skips")
                cmd += ["--"] + args.pytest_args
                subprocess.run(cmd, stdout=subprocess.DEVNULL if args.markdown else None)
                with open(path) as f:
                    text = f.read()
                if not text:
                    print(f"{loop}: the run produced no result", file=sys.stderr)
                    return 2
                results.append(json.loads(text))
            finally:
                os.unlink(path)
    else:
        results = [run_one(args, args.loop)]
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results[0], f)
            return 0

    status = 0
    for res in results:
        if res["collect_errors"]:
            print(f"{res['loop']}: collection errors in {', '.join(res['collect_errors'])}",
                  file=sys.stderr)
            status = 2
    print()
    print(render(results, args.markdown))
    for res in results:
        listed = [d for d in res["details"]
                  if (args.failures and d[3] == "failed") or (args.skips and d[3] == "skipped")]
        if listed:
            print(f"\n{res['loop']}: {len(listed)} test(s) listed")
            for nodeid, _mixin, _backend, outcome, msg in listed:
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
