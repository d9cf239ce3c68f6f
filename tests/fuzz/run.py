#!/usr/bin/env python3
"""Run every fuzz target (tests/fuzz/fuzz_*.py) for a bounded time.

    python tests/fuzz/run.py --seconds 60                 # each target 60 s (atheris)
    python tests/fuzz/run.py --seconds 10 --only nvme,sockaddr
    python tests/fuzz/run.py --replay                     # the committed corpus only, no atheris
    python tests/fuzz/run.py --seconds 60 --merge         # then copy new inputs into the corpus

Each target runs in its own process under atheris (libFuzzer), seeded from
tests/fuzz/corpus/<target>/ (read-only: new inputs go to a scratch
directory, unless --merge).  A finding -- an AssertionError, an unexpected
exception, or the interpreter dying (a guard-page fault, an abort) -- is
saved as <workdir>/crash-<target>-*; the run prints its path, how to
replay it, and exits 1.  A finding, once understood and fixed, becomes a
case in tests/test_fuzz_regressions.py (plain pytest, no atheris).

Without atheris (not installable for this Python) --seconds falls back to
random inputs and mutations of the corpus, replayed in a subprocess: no
coverage guidance, but the same checks.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = sorted(os.path.basename(p)[5:-3] for p in glob.glob(os.path.join(HERE, "fuzz_*.py")))


def _env():
    """This environment with PYTHONPATH's entries made absolute."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in
                                            env["PYTHONPATH"].split(os.pathsep) if p)
    return env


def have_atheris(python) -> bool:
    return subprocess.run([python, "-c", "import atheris"], capture_output=True).returncode == 0


def fuzz_atheris(python, target, seconds, work, merge) -> tuple[bool, str]:
    corpus = os.path.join(HERE, "corpus", target)
    os.makedirs(corpus, exist_ok=True)
    scratch = os.path.join(work, f"corpus-{target}")
    os.makedirs(scratch, exist_ok=True)
    log = os.path.join(work, f"{target}.log")
    cmd = [python, os.path.join(HERE, f"fuzz_{target}.py"), scratch, corpus,
           f"-max_total_time={int(seconds)}", f"-artifact_prefix={work}/crash-{target}-",
           "-timeout=60", "-rss_limit_mb=3072", "-max_len=4096", "-print_final_stats=1"]
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=_env()).returncode
    text = open(log, errors="replace").read()
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+)", text)
    summary = f"{runs[-1] if runs else '?'} runs, cov {cov[-1] if cov else '?'}"
    if rc == 0 and merge:
        # The inputs that added coverage, named by their SHA-1 (libFuzzer's
        # own -merge=1 re-executes argv[0], which a .py script is not).
        have = set(os.listdir(corpus))
        new = sorted(f for f in os.listdir(scratch) if f not in have)
        for f in new[:max(0, 100 - len(have))]:
            shutil.copy(os.path.join(scratch, f), corpus)
        summary_extra = f", {len(new)} new inputs, corpus {len(os.listdir(corpus))}"
    else:
        summary_extra = ""
    return rc == 0, summary + summary_extra + ("" if rc == 0 else f" (exit {rc}; log {log})")


def fuzz_random(python, target, seconds, work) -> tuple[bool, str]:
    """No atheris: random inputs and corpus mutations, in batches, each
    batch replayed by the target's --replay in a subprocess."""
    corpus = os.path.join(HERE, "corpus", target)
    seeds = [open(p, "rb").read() for p in sorted(glob.glob(os.path.join(corpus, "*")))] or [b""]
    rnd = random.Random()
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        batch = os.path.join(work, f"batch-{target}")
        shutil.rmtree(batch, ignore_errors=True)
        os.makedirs(batch)
        for i in range(200):
            b = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randint(0, 8)):
                op = rnd.randint(0, 3)
                if op == 0 or not b:
                    b[rnd.randint(0, len(b)):0] = rnd.randbytes(rnd.randint(1, 8))
                elif op == 1:
                    b[rnd.randrange(len(b))] = rnd.randrange(256)
                elif op == 2:
                    del b[rnd.randrange(len(b))]
                else:
                    b = bytearray(rnd.randbytes(rnd.randint(0, 64)))
            with open(os.path.join(batch, f"{i:04d}"), "wb") as f:
                f.write(b)
        r = subprocess.run([python, os.path.join(HERE, f"fuzz_{target}.py"), "--replay", batch],
                           capture_output=True, text=True, env=_env())
        if r.returncode != 0:
            keep = os.path.join(work, f"crash-{target}-batch")
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(batch, keep)
            return False, (f"{n} runs, failed (exit {r.returncode}); batch kept in {keep}\n"
                           + r.stderr[-3000:])
        n += 200
    return True, f"{n} runs (random, no atheris)"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="per target (default 60)")
    p.add_argument("--only", default="", help="comma-separated targets: " + ",".join(TARGETS))
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--workdir", default=None, help="crashes and logs (default: a temp dir)")
    p.add_argument("--replay", action="store_true", help="only replay the committed corpus")
    p.add_argument("--merge", action="store_true", help="add new coverage to the corpus")
    args = p.parse_args()
    targets = [t for t in args.only.split(",") if t] or TARGETS
    for t in targets:
        if t not in TARGETS:
            p.error(f"unknown target {t!r}; targets: {', '.join(TARGETS)}")
    work = args.workdir or tempfile.mkdtemp(prefix="ringline-fuzz-")
    os.makedirs(work, exist_ok=True)
    ok = True
    if args.replay:
        for t in targets:
            r = subprocess.run([args.python, os.path.join(HERE, f"fuzz_{t}.py"), "--replay",
                                os.path.join(HERE, "corpus", t)], env=_env())
            ok = ok and r.returncode == 0
        return 0 if ok else 1
    atheris = have_atheris(args.python)
    if not atheris:
        print("fuzz: atheris is not importable here; random inputs without coverage guidance")
    for t in targets:
        t0 = time.monotonic()
        if atheris:
            good, summary = fuzz_atheris(args.python, t, args.seconds, work, args.merge)
        else:
            good, summary = fuzz_random(args.python, t, args.seconds, work)
        print(f"fuzz {t}: {summary}, {time.monotonic() - t0:.0f} s: "
              f"{'OK' if good else 'FINDING'}", flush=True)
        if not good:
            ok = False
            for c in sorted(glob.glob(os.path.join(work, f"crash-{t}-*"))):
                print(f"  input: {c}\n  replay: {args.python} {HERE}/fuzz_{t}.py --replay {c}")
            log = os.path.join(work, f"{t}.log")
            if os.path.exists(log):
                print("".join(open(log, errors="replace").readlines()[-40:]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
