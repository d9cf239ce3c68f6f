#!/usr/bin/env python3
"""Real HTTP servers on each event loop, driven by wrk; asyncpg queries against
a local PostgreSQL.  Issue 17's real-world benchmarks.

    sudo apt-get install wrk                          # Debian/Ubuntu: the load generator
    pip install . uvloop 'uvicorn>=0.36' httptools starlette aiohttp asyncpg matplotlib
    eval "$(bash tools/ci_postgres.sh start)"         # for --pg (or set RINGLINE_PG_DSN)
    python benchmarks/http_bench.py --reps 3 --plot benchmarks/charts --json http.json
    python benchmarks/http_bench.py --servers uvicorn --loops ringline,uvloop --duration 3
    python benchmarks/http_bench.py --servers hello --reps 5 --duration 5

Servers (each selects its loop as the README says users do):
  uvicorn    plain ASGI app ("Hello, world!"), uvicorn + httptools, --loop MODULE:FACTORY
  starlette  Starlette JSON endpoint, uvicorn + httptools
  aiohttp    aiohttp.web, web.run_app(app, loop=factory())
  hello      examples/http_hello.py (httptools, no framework): "runtime" and "runtime-poll"
             are the example on the runtime API (--workers 1, io_uring / poll backend), the
             loops run the same responder as an asyncio Protocol (--protocol LOOP)
Loops: ringline (io_uring backend), ringline-poll (poll backend), uvloop, asyncio; for
hello also runtime and runtime-poll, and floor: the Protocol on ringline with each
read handed to a coroutine resumed per read inside a task switch (_http_servers.py
hello-floor), the least a coroutine-per-connection API adds (the default for hello:
all seven).

Each server runs pinned to CPU 0, wrk (1 thread, --conns connections, --latency)
pinned to CPU 1.  All servers of a kind are started together and measured
interleaved: each repetition runs every loop once, in an order rotated per
repetition, each run preceded by a 1 s warm-up; ratios against the baseline
loop (uvloop) are taken per repetition and their median reported (for hello also
against the Protocol on ringline, and the range of runtime's per-repetition ratios).
Reported: requests/s, p99 latency (wrk's), requests per server CPU-second (the
user+system CPU of the server process and its descendants -- the runtime API's worker
process -- over the measured run, from /proc).

--pg: a client process per loop (pinned to CPU 0) runs --pg-concurrency tasks
of ``SELECT $1::int + 1`` over an 8-connection asyncpg pool for --duration s;
reported: queries/s, p99 latency, queries per client CPU-second.  PostgreSQL
itself runs unpinned (on the other core, mostly).

--plot DIR writes one PNG bar chart per table (matplotlib), titled with the
machine and date of the run, from the same numbers as the tables.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common  # noqa: E402

SERVERS = ("uvicorn", "starlette", "aiohttp")      # the default --servers
KINDS = SERVERS + ("hello",)
LOOPS = {
    # name: (factory import string, environment); None: the runtime API, no asyncio loop
    "ringline": ("ringline:new_event_loop", {"RINGLINE_BACKEND": "io_uring"}),
    "ringline-poll": ("ringline:new_event_loop", {"RINGLINE_BACKEND": "poll"}),
    "uvloop": ("uvloop:new_event_loop", {}),
    "asyncio": ("asyncio:new_event_loop", {}),
    "runtime": (None, {"RINGLINE_BACKEND": "io_uring"}),
    "runtime-poll": (None, {"RINGLINE_BACKEND": "poll"}),
    # hello only: the Protocol on ringline with each read through a coroutine
    # (_http_servers.py hello-floor): what a coroutine per connection costs at least
    "floor": ("ringline:new_event_loop", {"RINGLINE_BACKEND": "io_uring"}),
}
HELLO_ONLY = ("runtime", "runtime-poll", "floor")
DEFAULT_LOOPS = ("ringline", "ringline-poll", "uvloop", "asyncio")
KIND_LOOPS = {"hello": ("runtime", "runtime-poll", "floor") + DEFAULT_LOOPS}
BASELINE = "uvloop"
#: a second paired baseline per kind (hello: the same responder as a Protocol on ringline)
SECOND_BASELINE = {"hello": "ringline"}
HELLO = os.path.join(os.path.dirname(HERE), "examples", "http_hello.py")
SERVER_CPU, CLIENT_CPU = 0, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(loop: str) -> dict:
    env = dict(os.environ)
    env.update(LOOPS[loop][1])
    return env


class Server:
    def __init__(self, kind: str, loop: str):
        self.kind, self.loop, self.port = kind, loop, free_port()
        self.log = tempfile.TemporaryFile()
        factory = LOOPS[loop][0]
        if kind == "hello" and loop == "floor":
            argv = [os.path.join(HERE, "_http_servers.py"), "hello-floor", factory, str(self.port)]
        elif kind == "hello":
            # The example itself: one worker process on the runtime API (pinned, by
            # inheritance, to SERVER_CPU), or the Protocol version on one loop.
            argv = [HELLO, "--host", "127.0.0.1", "--port", str(self.port)]
            argv += ["--workers", "1"] if factory is None else ["--protocol", factory]
        else:
            argv = [os.path.join(HERE, "_http_servers.py"), kind, factory, str(self.port)]
        self.proc = subprocess.Popen(
            [sys.executable] + argv, env=env_for(loop), stdout=self.log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_common.pinned(SERVER_CPU))
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{kind} on {loop} exited: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} on {loop} not serving: {self.output()}")
                time.sleep(0.05)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-2000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(2)  # SIGINT: every server here stops cleanly on it
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(port: int, seconds: float, conns: int) -> dict:
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{seconds:g}s", "--latency", f"http://127.0.0.1:{port}/"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         preexec_fn=_common.pinned(CLIENT_CPU)).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = _to_us(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    return {"rps": rps, "requests": total, "p99_us": p99,
            "errors": errors.group(0) if errors else None}


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def loops_for(kind: str, wanted) -> list:
    """The loops KIND runs on: WANTED (None: its default) less those it has not."""
    if wanted is None:
        return list(KIND_LOOPS.get(kind, DEFAULT_LOOPS))
    return [l for l in wanted if l not in HELLO_ONLY or kind == "hello"]


def bench_servers(kinds, wanted_loops, reps, seconds, conns) -> dict:
    results = {}
    for kind in kinds:
        loops = loops_for(kind, wanted_loops)
        servers = {}
        try:
            for loop in loops:
                servers[loop] = Server(kind, loop)
            runs = {loop: {} for loop in loops}
            for rep in range(reps):
                order = loops[rep % len(loops):] + loops[:rep % len(loops)]
                for loop in order:
                    srv = servers[loop]
                    wrk(srv.port, 1, conns)                         # warm-up
                    split0 = _common.tree_cpu_split(srv.proc.pid)
                    busy0, kids0, t0 = _common.machine_busy_seconds(), _children_cpu(), \
                        time.monotonic()
                    r = wrk(srv.port, seconds, conns)
                    split = _common.tree_cpu_split(srv.proc.pid)
                    user, system = split[0] - split0[0], split[1] - split0[1]
                    cpu = user + system
                    wall = time.monotonic() - t0
                    # CPU the rest of the machine used meanwhile (other processes), in cores.
                    r["other_load"] = max(0.0, (_common.machine_busy_seconds() - busy0 - cpu
                                                - (_children_cpu() - kids0)) / wall)
                    r["server_cpu"] = cpu
                    r["cores"] = cpu / wall
                    r["per_cpu_s"] = r["requests"] / cpu if cpu else None
                    # Where a request's server CPU goes: user space (the loop, the
                    # interpreter, the parser) and the kernel (TCP, syscalls, io_uring).
                    r["user_us"] = user / r["requests"] * 1e6 if r["requests"] else None
                    r["sys_us"] = system / r["requests"] * 1e6 if r["requests"] else None
                    runs[loop][rep] = r
                    print(f"{kind:9} {loop:13} rep {rep}: {r['rps']:10,.0f} req/s  "
                          f"p99 {r['p99_us']:8,.0f} us  cpu {cpu / seconds:4.2f}  "
                          f"other load {r['other_load']:4.2f}  "
                          f"user/sys {r['user_us'] or 0:5.2f}/{r['sys_us'] or 0:5.2f} us/req"
                          + (f"  {r['errors']}" if r["errors"] else ""),
                          file=sys.stderr, flush=True)
            results[kind] = runs
        finally:
            for srv in servers.values():
                srv.stop()
    return results


def bench_pg(loops, reps, seconds, concurrency, dsn) -> dict:
    runs = {loop: {} for loop in loops}
    for rep in range(reps):
        order = loops[rep % len(loops):] + loops[:rep % len(loops)]
        for loop in order:
            busy0, kids0, t0 = _common.machine_busy_seconds(), _children_cpu(), time.monotonic()
            out = subprocess.run(
                [sys.executable, os.path.join(HERE, "_http_servers.py"), "asyncpg",
                 LOOPS[loop][0], dsn, str(seconds), str(concurrency)],
                env=env_for(loop), capture_output=True, text=True, check=True,
                preexec_fn=_common.pinned(SERVER_CPU)).stdout
            r = json.loads(out.strip().splitlines()[-1])
            # Everything but this client (PostgreSQL included), in cores.
            r["other_load"] = max(0.0, (_common.machine_busy_seconds() - busy0
                                        - (_children_cpu() - kids0)) / (time.monotonic() - t0))
            r["rps"] = r["qps"]
            r["cores"] = r["cpu"] / r["seconds"]
            r["per_cpu_s"] = r["queries"] / r["cpu"] if r["cpu"] else None
            runs[loop][rep] = r
            print(f"asyncpg   {loop:13} rep {rep}: {r['qps']:10,.0f} q/s  "
                  f"p99 {r['p99_us']:8,.0f} us  cpu {r['cpu'] / seconds:4.2f}  "
                  f"other load {r['other_load']:4.2f} (PostgreSQL included)",
                  file=sys.stderr, flush=True)
    return runs


def summarize(runs: dict, loops, second=None) -> list[dict]:
    rows = []
    base = runs.get(BASELINE)
    base2 = runs.get(second) if second else None
    for loop in loops:
        by_rep = runs[loop]
        rps = {k: v["rps"] for k, v in by_rep.items()}
        pcs = {k: v["per_cpu_s"] for k, v in by_rep.items()}
        row = {"loop": loop,
               "rps": _common.median(rps.values()),
               "p99_us": _common.median(v["p99_us"] for v in by_rep.values()),
               "per_cpu_s": _common.median(pcs.values()),
               "spread": _common.spread(list(rps.values())),
               "cores": _common.median(v["cores"] for v in by_rep.values()),
               "user_us": _common.median(v.get("user_us") for v in by_rep.values()),
               "sys_us": _common.median(v.get("sys_us") for v in by_rep.values()),
               "other_load": _common.median(v.get("other_load") for v in by_rep.values())}
        if base:
            row["ratio"] = _common.paired_ratio(rps, {k: v["rps"] for k, v in base.items()})
            row["ratio_cpu"] = _common.paired_ratio(
                pcs, {k: v["per_cpu_s"] for k, v in base.items()})
        if base2:
            row["ratio_cpu2"] = _common.paired_ratio(
                pcs, {k: v["per_cpu_s"] for k, v in base2.items()})
        rows.append(row)
    return rows


def paired_range(runs: dict, loop: str, base: str, key: str = "per_cpu_s") -> str:
    """'1.05× (0.98–1.10 over 5 repetitions)': median and range of LOOP/BASE per rep."""
    a, b = runs.get(loop), runs.get(base)
    if not a or not b:
        return "–"
    ratios = sorted(a[r][key] / b[r][key] for r in a
                    if r in b and a[r][key] is not None and b[r][key])
    if not ratios:
        return "–"
    return (f"{_common.fmt_ratio(_common.median(ratios))} ({ratios[0]:.2f}–{ratios[-1]:.2f} "
            f"over {len(ratios)} repetitions)")


def table(title: str, rows: list[dict], unit: str, second=None, split=False) -> str:
    header = ["loop", f"{unit}/s", f"× {BASELINE}", "p99 µs", f"{unit} per CPU-s",
              f"× {BASELINE}"] + ([f"× {second}"] if second else []) + \
        (["user µs/req", "sys µs/req"] if split else []) + ["spread", "cores", "other load"]
    body = [[r["loop"], _common.fmt_int(r["rps"]), _common.fmt_ratio(r.get("ratio")),
             _common.fmt_int(r["p99_us"]), _common.fmt_int(r["per_cpu_s"]),
             _common.fmt_ratio(r.get("ratio_cpu"))]
            + ([_common.fmt_ratio(r.get("ratio_cpu2"))] if second else [])
            + ([_common.fmt_float(r.get("user_us")), _common.fmt_float(r.get("sys_us"))]
               if split else [])
            + [_common.fmt_pct(r["spread"]), _common.fmt_float(r["cores"]),
               _common.fmt_float(r["other_load"])]
            for r in rows]
    return f"**{title}**\n\n" + _common.md_table(header, body)


def plot(path: str, title: str, rows: list[dict], unit: str, subtitle: str,
         client: bool = False) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    names = [r["loop"] for r in rows]
    colors = ["#c0392b" if n.startswith(("ringline", "runtime")) else "#7f8c8d" for n in names]
    for ax, key, label in ((axes[0], "rps", f"{unit}/s"),
                           (axes[1], "per_cpu_s",
                            f"{unit} per {'client' if client else 'server'} CPU-second")):
        values = [r[key] or 0 for r in rows]
        bars = ax.bar(names, values, color=colors)
        ax.set_title(label, fontsize=10)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylim(0, max(values) * 1.15 if any(values) else 1)
    fig.suptitle(f"{title}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


TITLES = {"uvicorn": "uvicorn + httptools, plain ASGI app",
          "starlette": "Starlette JSON endpoint (uvicorn + httptools)",
          "aiohttp": "aiohttp.web",
          "hello": "examples/http_hello.py (httptools): runtime API vs the same responder "
                   "as an asyncio Protocol"}


def render(report: dict, plot_dir: str | None) -> None:
    """Tables (stdout) and charts (plot_dir) from one run's numbers."""
    a, loops = report["args"], report["loops"]
    subtitle = f"{report['machine']}; {report['date']}; {a['reps']} reps × {a['duration']:g} s"
    sections = []
    items = [(kind, TITLES[kind] + f", wrk -c{a['conns']}", "req", "requests", f"http_{kind}")
             for kind in report["servers"]]
    if "asyncpg" in report:
        items.append(("asyncpg", f"asyncpg, {a['pg_concurrency']} tasks × SELECT $1::int + 1 "
                      f"over an 8-connection pool", "queries", "queries", "asyncpg"))
    for kind, title, unit, long_unit, name in items:
        entry = report["asyncpg"] if kind == "asyncpg" else report["servers"][kind]
        runs, kind_loops = entry["runs"], entry.get("loops", loops)
        second = SECOND_BASELINE.get(kind) if SECOND_BASELINE.get(kind) in runs else None
        rows = summarize(runs, kind_loops, second)
        text = table(title, rows, unit, second, split=kind == "hello")
        if kind == "asyncpg":
            text = text.replace("queries per CPU-s", "queries per client CPU-s")
        if kind == "hello":
            notes = [f"- {loop} / {base}, requests per server CPU-second: "
                     f"{paired_range(runs, loop, base)}; requests/s: "
                     f"{paired_range(runs, loop, base, 'rps')}"
                     for loop, bases in (("runtime", (second, BASELINE, "floor")),
                                         ("runtime-poll", (second, BASELINE)),
                                         ("floor", (second, BASELINE))) if loop in runs
                     for base in bases if base and base in runs]
            if notes:
                text += "\n\nPaired ratios, median (range):\n\n" + "\n".join(notes)
        sections.append(text)
        if plot_dir:
            os.makedirs(plot_dir, exist_ok=True)
            other = _common.median(r["other_load"] for r in rows)
            note = (f"other load on the machine meanwhile: {other:.2f} cores (median)"
                    + (", PostgreSQL included" if kind == "asyncpg" else ""))
            plot(os.path.join(plot_dir, f"{name}.png"), title, rows, long_unit,
                 subtitle + "\n" + note, client=kind == "asyncpg")
    print(f"\n{report['machine']}; {report['date']}; {a['reps']} repetitions × "
          f"{a['duration']:g} s, server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}\n")
    print("\n\n".join(sections))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default=",".join(SERVERS),
                    help=f"any of {', '.join(KINDS)} (default: %(default)s)")
    ap.add_argument("--loops", default=None,
                    help=f"default: {','.join(DEFAULT_LOOPS)}; for hello "
                         f"{','.join(KIND_LOOPS['hello'])}")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measured run")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--pg", action="store_true", help="also the asyncpg benchmark")
    ap.add_argument("--pg-only", action="store_true")
    ap.add_argument("--pg-dsn", default=os.environ.get("RINGLINE_PG_DSN"))
    ap.add_argument("--pg-concurrency", type=int, default=64)
    ap.add_argument("--plot", metavar="DIR", help="write PNG bar charts there (matplotlib)")
    ap.add_argument("--json", metavar="FILE", help="write every run's numbers there")
    ap.add_argument("--from-json", metavar="FILE",
                    help="measure nothing: tables and charts (--plot) from a --json file")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            render(json.load(f), args.plot)
        return 0

    loops = _common.split_list(args.loops) if args.loops else None
    unknown = [l for l in loops or () if l not in LOOPS]
    if unknown:
        ap.error(f"unknown loop(s) {unknown}: choose from {', '.join(LOOPS)}")
    kinds = [] if args.pg_only else _common.split_list(args.servers)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        ap.error(f"unknown server(s) {bad}: choose from {', '.join(KINDS)}")
    pg_loops = [l for l in loops or DEFAULT_LOOPS if l not in HELLO_ONLY]
    if kinds and not shutil.which("wrk"):
        print("wrk not found: apt-get install wrk (Debian/Ubuntu)", file=sys.stderr)
        return 1
    if (args.pg or args.pg_only) and not args.pg_dsn:
        print("--pg needs a PostgreSQL DSN: --pg-dsn or RINGLINE_PG_DSN "
              "(eval \"$(bash tools/ci_postgres.sh start)\")", file=sys.stderr)
        return 1
    _common.warn_if_unpinnable(SERVER_CPU, CLIENT_CPU)

    report = {"machine": _common.machine_summary(),
              "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
              "args": vars(args), "loops": pg_loops, "servers": {}}
    results = bench_servers(kinds, loops, args.reps, args.duration, args.conns)
    for kind in kinds:
        report["servers"][kind] = {"runs": results[kind], "loops": loops_for(kind, loops)}
    if args.pg or args.pg_only:
        report["asyncpg"] = {"runs": bench_pg(pg_loops, args.reps, args.duration,
                                              args.pg_concurrency, args.pg_dsn)}
    render(report, args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
