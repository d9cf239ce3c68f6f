#!/usr/bin/env python3
"""Event-loop micro-benchmarks: the cost of the loop's own scheduling primitives.

    python benchmarks/micro.py --loops asyncio,uvloop,rloop,ringline --n 200000 --reps 5

Benchmarks (each runs N operations inside one running loop; ops/s = N / elapsed):
  call_soon      schedule N callbacks with loop.call_soon, run until the last one has run
  call_later     N times: loop.call_later(3600, cb).cancel(); then one loop iteration, so
                 a loop that tidies cancelled timers lazily pays for it
  sleep0         one task does `await asyncio.sleep(0)` N times (a full trip through the
                 ready queue per operation)
  future         N times: fut = loop.create_future(); loop.call_soon(fut.set_result, None);
                 await fut  (create, resolve from a callback, wake the awaiting task)

The cyclic garbage collector is run before and disabled during each timed benchmark
(--gc leaves it on): with N handles alive at once its passes over them would otherwise
dominate call_soon and call_later and make the result depend on N more than on the loop.

Every loop type runs in its own subprocess (one loop per process, nothing else loaded),
pinned to one CPU; each subprocess first runs every benchmark once with N/10 as warm-up.
A run whose process got less than 90% of its CPU (process CPU time / wall time) was
disturbed by other load: it is repeated (--retries times at most, keeping the least
disturbed) and flagged if still disturbed.  Repetitions are interleaved (rep 1 of every loop, then rep 2, ... with the loop order
rotated), and the median is reported; ratios are medians of per-repetition ratios.
Loops that cannot be imported or created are skipped with the reason.
"""
import argparse
import asyncio
import gc
import json
import subprocess
import sys
import time

import _common

BENCHMARKS = ("call_soon", "call_later", "sleep0", "future")
MIN_CPU_SHARE = 0.9  # a run whose process got less of its CPU than this was disturbed


# ----------------------------------------------------------------------------- in the child
async def bench_call_soon(loop, n):
    done = loop.create_future()
    left = n

    def cb():
        nonlocal left
        left -= 1
        if not left:
            done.set_result(None)

    call_soon = loop.call_soon
    t0 = time.perf_counter()
    for _ in range(n):
        call_soon(cb)
    await done
    return time.perf_counter() - t0


async def bench_call_later(loop, n):
    def cb():
        raise AssertionError("a cancelled timer ran")

    call_later = loop.call_later
    t0 = time.perf_counter()
    for _ in range(n):
        call_later(3600.0, cb).cancel()
    await asyncio.sleep(0)
    return time.perf_counter() - t0


async def bench_sleep0(loop, n):
    async def spin():
        sleep = asyncio.sleep
        for _ in range(n):
            await sleep(0)

    t0 = time.perf_counter()
    await loop.create_task(spin())
    return time.perf_counter() - t0


async def bench_future(loop, n):
    create_future, call_soon = loop.create_future, loop.call_soon
    t0 = time.perf_counter()
    for _ in range(n):
        fut = create_future()
        call_soon(fut.set_result, None)
        await fut
    return time.perf_counter() - t0


def child(loop_name, n, names, keep_gc):
    """Run the benchmarks in one fresh loop; print {"loop": class, "ops": {bench: ops/s}}."""
    loop = _common.new_loop(loop_name)
    asyncio.set_event_loop(loop)
    funcs = {name: globals()["bench_" + name] for name in names}

    async def main():
        for name, fn in funcs.items():  # warm-up: caches, free lists, lazily built code paths
            await fn(loop, max(1000, n // 10))
        ops, share = {}, {}
        for name, fn in funcs.items():
            gc.collect()
            if not keep_gc:
                gc.disable()
            try:
                wall0, cpu0 = time.perf_counter(), time.process_time()
                ops[name] = n / await fn(loop, n)
                # below 1.0 when something else ran on our CPU and the result is too low
                share[name] = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
            finally:
                gc.enable()
        return ops, share

    try:
        ops, share = loop.run_until_complete(main())
    finally:
        loop.close()
    print(json.dumps({"loop": _common.loop_class_name(loop), "ops": ops, "cpu_share": share}), flush=True)


# ----------------------------------------------------------------------------- in the parent
def badness(result):
    """> 1 when the child got less than MIN_CPU_SHARE of its CPU in some benchmark."""
    return (1.0 - min(result["cpu_share"].values())) / (1.0 - MIN_CPU_SHARE)


def run_child(loop_name, args, names):
    cmd = [sys.executable, __file__, "--child", loop_name, "--n", str(args.n), "--only", ",".join(names)]
    if args.gc:
        cmd.append("--gc")
    p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_common.pinned(args.cpu),
                       timeout=args.timeout)
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode or not lines:
        err = [l for l in p.stderr.strip().splitlines() if l.strip()]
        raise RuntimeError(f"exit status {p.returncode}: {err[-1] if err else 'no output'}")
    return json.loads(lines[-1])


def report(args, loops, names, results, classes):
    """results[loop][bench] = {rep: ops/s}"""
    header = ["benchmark", "loop", "ops/s (median)", "ns/op", "spread", "vs uvloop", "vs asyncio"]
    rows = []
    for bench in names:
        for loop in loops:
            per_rep = results[loop][bench]
            ops = _common.median(per_rep.values())
            ratios = [_common.paired_ratio(per_rep, results[base][bench]) if base in results else None
                      for base in ("uvloop", "asyncio")]
            rows.append([f"`{bench}`", loop, _common.fmt_int(ops), _common.fmt_float(1e9 / ops if ops else None, 0),
                         _common.fmt_pct(_common.spread(per_rep.values())),
                         _common.fmt_ratio(ratios[0]), _common.fmt_ratio(ratios[1])])
    out = [f"Micro-benchmarks: N={args.n:,} per benchmark, {args.reps} interleaved repetitions "
           f"(subprocess per loop and repetition), "
           f"{'unpinned' if args.cpu is None else f'pinned to CPU {args.cpu}'}, garbage collector "
           f"{'on' if args.gc else 'off'} while timing.  ",
           f"Machine: {_common.machine_summary()}  "]
    out += [f"- {loop}: `{classes.get(loop, '?')}` {_common.loop_version(loop)}" for loop in loops]
    out += ["", _common.md_table(header, rows, "llrrrrr"), "",
            "ops/s = N / elapsed seconds; spread = (max - min) / median over repetitions; "
            "vs X = median of the per-repetition ratios ops/s(loop) / ops/s(X), > 1 means faster than X."]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="asyncio,uvloop,rloop,ringline",
                    help="comma-separated: asyncio, uvloop, rloop, ringline or MODULE:FACTORY")
    ap.add_argument("--n", type=int, default=200_000, help="operations per benchmark")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default=",".join(BENCHMARKS), help="subset of " + ",".join(BENCHMARKS))
    ap.add_argument("--cpu", type=int, default=0, help="pin the benchmark processes to this CPU (-1: no pinning)")
    ap.add_argument("--retries", type=int, default=2,
                    help="repeat a run disturbed by other load up to this many times, keeping the least disturbed")
    ap.add_argument("--gc", action="store_true", help="leave the cyclic garbage collector on while timing")
    ap.add_argument("--timeout", type=float, default=300, help="seconds one subprocess may take")
    ap.add_argument("--json", help="also write the raw per-repetition numbers here")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()

    names = _common.split_list(args.only)
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        ap.error(f"unknown benchmark(s) {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    if args.child:
        return child(args.child, args.n, names, args.gc)

    if args.cpu >= 0:
        _common.warn_if_unpinnable(args.cpu)
    else:
        args.cpu = None
    loops = _common.usable_loops(_common.split_list(args.loops))
    if not loops:
        sys.exit("no usable loop")
    results = {loop: {b: {} for b in names} for loop in loops}
    classes = {}
    disturbed = []
    for rep in range(args.reps):
        k = rep % len(loops)
        for loop in loops[k:] + loops[:k]:
            try:
                r, tries = _common.least_disturbed(lambda: run_child(loop, args, names), badness, args.retries)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"rep {rep + 1} {loop}: failed: {exc}", file=sys.stderr, flush=True)
                continue
            classes[loop] = r["loop"]
            for bench, ops in r["ops"].items():
                results[loop][bench][rep] = ops
            low = min(r["cpu_share"].values())
            if badness(r) > 1.0:
                disturbed.append(f"rep {rep + 1} {loop} ({low:.0%})")
            print(f"rep {rep + 1}/{args.reps} {loop:>10}: "
                  + "  ".join(f"{b} {ops:,.0f}/s" for b, ops in r["ops"].items())
                  + (f"  (after {tries} disturbed run(s))" if tries else "")
                  + (f"  DISTURBED: got {low:.0%} of its CPU" if badness(r) > 1.0 else ""),
                  file=sys.stderr, flush=True)
    loops = [l for l in loops if any(results[l][b] for b in names)]
    if not loops:
        sys.exit("every run failed")
    print(report(args, loops, names, results, classes))
    if disturbed:
        print(f"\n**Warning: other load took CPU time from {len(disturbed)} kept run(s): {', '.join(disturbed)}.** "
              "Interleaving and paired ratios soften this; rerun on a quiet machine to be sure.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"n": args.n, "reps": args.reps, "classes": classes, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
