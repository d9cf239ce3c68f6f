#!/usr/bin/env python3
"""Subprocess spawn-and-wait rate: asyncio.create_subprocess_exec + Process.wait().

    python benchmarks/spawn_bench.py                                  # the issue-5 comparison
    python benchmarks/spawn_bench.py --loops ringline,ringline-popen,asyncio,uvloop \\
           --n 2000 --concurrency 64 --reps 5 --stdio inherit,pipe

N children of PROGRAM (default `true`) are created and awaited, CONCURRENCY at a time
(CONCURRENCY tasks, each spawning and awaiting children one after the other until N have
run).  One operation = ``await asyncio.create_subprocess_exec(PROGRAM, ...)`` followed
by ``await proc.wait()`` (with ``--stdio pipe``: stdout and stderr are pipes, stdin is
/dev/null, and the operation is ``await proc.communicate()``).  The rate is N / wall time.

Loops: ``asyncio`` (the default loop with its default child watcher), ``uvloop``,
``ringline`` (default backend: children created by libc's posix_spawnp, called through
ctypes with the GIL released, on the spawner threads), ``ringline-os`` (the same with
``os.posix_spawnp``, which holds the GIL while the child execs: ringline's path where
libc lacks posix_spawn_file_actions_addclosefrom_np), ``ringline-popen`` (children
created by ``subprocess.Popen`` on the spawner threads: the fall-back path for what
posix_spawn cannot express), ``ringline-poll`` (the poll backend), ``ringline-nowaitid`` (io_uring with
exits awaited by pidfd POLL_ADD + waitid(2) rather than IORING_OP_WAITID), ``rloop`` or
``MODULE:FACTORY``; ``c`` is the floor: a C program (spawnref.c, built on demand) that
does nothing but posix_spawnp + wait, CONCURRENCY in flight (inherit stdio only).

Every measurement runs in a fresh interpreter (one loop per process).  Each process first
does a warm-up of N/10 operations.  Repetitions are interleaved (rep 1 of every loop, then
rep 2, ... with the loop order rotated); the table shows the median rate, the median of
the per-repetition ratios to asyncio and uvloop, the CPU time of the benchmark process
(all its threads: the loop and, for ringline, the spawner threads) per operation and that
of the children.  The machine is watched as run_echo.py does: busy CPU time (/proc/stat)
not spent by the benchmark process or its children is other load; a run with more than
--max-other cores of it is repeated (--retries times at most, keeping the least
disturbed), and the largest amount kept is shown.
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import _common

RINGLINE_VARIANTS = {
    # name: (backend, spawn path)
    "ringline": (None, "posix_spawn"),
    "ringline-os": (None, "os.posix_spawn"),
    "ringline-popen": (None, "popen"),
    "ringline-poll": ("poll", "posix_spawn"),
    "ringline-poll-popen": ("poll", "popen"),
    # io_uring with exits awaited by pidfd POLL_ADD + waitid(2) instead of
    # IORING_OP_WAITID (core.set_waitid(False): what kernels before 6.7 get)
    "ringline-nowaitid": (None, "posix_spawn"),
}


HERE = os.path.dirname(os.path.abspath(__file__))
C_REF = "c"


def build_spawnref():
    src = os.path.join(HERE, "spawnref.c")
    exe = os.path.join(HERE, ".build", "spawnref")
    if not (os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src)):
        os.makedirs(os.path.dirname(exe), exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-o", exe, src], check=True)
    return exe


def make_loop(name):
    if name in RINGLINE_VARIANTS:
        import ringline
        from ringline.aio import _subprocess
        from ringline.aio import _spawn
        backend, path = RINGLINE_VARIANTS[name]
        _subprocess.USE_POSIX_SPAWN = path != "popen"
        if path == "os.posix_spawn":
            _spawn.AVAILABLE = False
        if name.endswith("-nowaitid"):
            from ringline._core import core
            core.set_waitid(False)
        return ringline.new_event_loop(backend=backend)
    return _common.new_loop(name)


def probe(name):
    if name == C_REF:
        try:
            build_spawnref()
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"cannot build spawnref.c ({exc})"
        return None
    code = (f"import sys; sys.path.insert(0, {_common.HERE!r}); import spawn_bench; "
            f"spawn_bench.make_loop({name!r}).close()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if r.returncode == 0:
        return None
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    return lines[-1] if lines else _common.exit_reason(r.returncode)


# ----------------------------------------------------------------------------- in the child
async def spawn_many(n, concurrency, argv, stdio):
    left = n
    errors = 0

    async def worker():
        nonlocal left, errors
        while left > 0:
            left -= 1
            if stdio == "pipe":
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
                await proc.communicate()
            elif stdio == "devnull":
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                await proc.wait()
            else:
                proc = await asyncio.create_subprocess_exec(*argv)
                await proc.wait()
            if proc.returncode != 0:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, errors


def child(name, n, concurrency, argv, stdio):
    loop = make_loop(name)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(spawn_many(max(1, n // 10), concurrency, argv, stdio))
        t0, m0 = os.times(), _common.machine_busy_seconds()
        elapsed, errors = loop.run_until_complete(spawn_many(n, concurrency, argv, stdio))
        t1, m1 = os.times(), _common.machine_busy_seconds()
    finally:
        loop.close()
    own = t1.user + t1.system - t0.user - t0.system
    children = t1.children_user + t1.children_system - t0.children_user - t0.children_system
    print(json.dumps({"loop": name, "elapsed": elapsed, "rate": n / elapsed,
                      "cpu_per_op_us": own / n * 1e6,
                      "children_cpu_per_op_us": children / n * 1e6,
                      # busy CPU time on the machine not spent by this process or
                      # its children: other load that disturbed the run
                      "other_cores": max(0.0, (m1 - m0) - own - children) / elapsed,
                      "errors": errors, "class": _common.loop_class_name(loop)}))


def run_c_ref(args, stdio):
    if stdio != "inherit":
        return None
    m0 = _common.machine_busy_seconds()
    p = subprocess.run([build_spawnref(), str(args.n), str(args.concurrency),
                        str(max(1, args.n // 10))] + args.argv,
                       capture_output=True, text=True, timeout=args.timeout)
    m1 = _common.machine_busy_seconds()
    if p.returncode != 0:
        raise RuntimeError(f"spawnref: {_common.exit_reason(p.returncode)}: {p.stderr.strip()}")
    r = json.loads(p.stdout)
    # The busy time includes the warm-up: charge the window its share.
    work = (r["cpu_per_op_us"] + r["children_cpu_per_op_us"]) * args.n / 1e6
    total = (m1 - m0) * args.n / (args.n + max(1, args.n // 10))
    r.update(loop=C_REF, other_cores=max(0.0, total - work) / r["elapsed"], **{"class": "C"})
    return r


def run_child(name, args, stdio):
    if name == C_REF:
        return run_c_ref(args, stdio)
    cmd = [sys.executable, os.path.abspath(__file__), "--child", name, "--n", str(args.n),
           "--concurrency", str(args.concurrency), "--stdio", stdio, "--"] + args.argv
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if p.returncode != 0:
        tail = [l for l in p.stderr.splitlines() if l.strip()][-3:]
        raise RuntimeError(f"{name}: {_common.exit_reason(p.returncode)}: {' | '.join(tail)}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="ringline,ringline-popen,asyncio,uvloop,c")
    ap.add_argument("--n", type=int, default=2000, help="children per measurement")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--stdio", default="inherit",
                    help="comma-separated: inherit (stdio inherited), devnull, pipe "
                         "(stdout+stderr piped, communicate())")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--max-other", type=float, default=0.2,
                    help="cores other processes may use during a run before it counts as "
                         "disturbed and is repeated (default 0.2)")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--json", help="also write every run's raw result here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("argv", nargs="*", help="program and arguments (default: true)")
    args = ap.parse_args()
    args.argv = args.argv or ["true"]

    if args.child:
        child(args.child, args.n, args.concurrency, args.argv, args.stdio)
        return 0

    names = []
    for name in _common.split_list(args.loops):
        why = probe(name)
        if why:
            print(f"skipping loop {name}: {why}", file=sys.stderr, flush=True)
        else:
            names.append(name)
    if not names:
        sys.exit("no loop to measure")
    modes = _common.split_list(args.stdio)
    results = {}   # (stdio, name) -> {rep: result}
    for rep in range(args.reps):
        for stdio in modes:
            k = rep % len(names)
            for name in names[k:] + names[:k]:
                if name == C_REF and stdio != "inherit":
                    continue
                r, tries = _common.least_disturbed(
                    lambda: run_child(name, args, stdio),
                    lambda r: r["other_cores"] / args.max_other, args.retries)
                r["retries"] = tries
                results.setdefault((stdio, name), {})[rep] = r
                print(f"rep {rep + 1}/{args.reps} {stdio:>7} {name:>16}: {r['rate']:>8,.0f} spawns/s "
                      f"{r['cpu_per_op_us']:>6.0f} us CPU/op, other load {r['other_cores']:.2f} cores"
                      + (f" (after {tries} disturbed run(s))" if tries else "")
                      + (f"  ERRORS {r['errors']}" if r['errors'] else ""),
                      file=sys.stderr, flush=True)

    out = [f"Spawn-and-wait of `{' '.join(args.argv)}`: {args.n} children, {args.concurrency} at a "
           f"time, {args.reps} interleaved repetitions (median).  ",
           f"Machine: {_common.machine_summary()}"]
    header = ["loop", "spawns/s", "× asyncio", "× uvloop", "loop-process CPU µs/op",
              "children CPU µs/op", "other load (cores)", "spread", "errors"]
    for stdio in modes:
        rows = []
        for name in names:
            per = results.get((stdio, name))
            if not per:
                continue
            rate = {rep: r["rate"] for rep, r in per.items()}

            def ratio(base):
                b = results.get((stdio, base))
                if not b:
                    return None
                return _common.paired_ratio(rate, {rep: r["rate"] for rep, r in b.items()})
            rows.append([f"`{name}`", _common.fmt_int(_common.median(rate.values())),
                         _common.fmt_ratio(ratio("asyncio")), _common.fmt_ratio(ratio("uvloop")),
                         _common.fmt_int(_common.median(r["cpu_per_op_us"] for r in per.values())),
                         _common.fmt_int(_common.median(r["children_cpu_per_op_us"] for r in per.values())),
                         _common.fmt_float(max(r["other_cores"] for r in per.values())),
                         _common.fmt_pct(_common.spread(rate.values())),
                         sum(r["errors"] for r in per.values())])
        out += ["", f"**stdio: {stdio}**", "", _common.md_table(header, rows)]
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r, stdio=s, rep=rep) for (s, n), per in results.items()
                       for rep, r in per.items()], f, indent=1)
    return 1 if any(r["errors"] for per in results.values() for r in per.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
