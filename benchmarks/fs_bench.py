"""File and process benchmarks for ringline.fs and ringline.process (issue 7).

    python benchmarks/fs_bench.py                    # 256 MiB file, ~1 minute
    python benchmarks/fs_bench.py --size 1024        # the 1 GiB runs of the issue
    python benchmarks/fs_bench.py --only reads --direct

1. Random 4 KiB reads from one file, 64 in flight, page cache warm:
   ringline.fs (pread in the ring, on a ringline loop) against aiofiles
   (seek + read on a thread, one file object per worker) and
   asyncio.to_thread(os.pread), both on stock asyncio.  --direct adds the
   same with O_DIRECT (ringline.fs direct=True into aligned buffers, and
   to_thread(os.preadv) into mmap buffers).
2. Sequential copy of the file: ringline.fs.copy (SPLICE through pipes in
   the ring) against shutil.copyfile (copy_file_range / sendfile).
3. Spawn-and-wait of `true`, 64 at a time: ringline.process.Command on a
   ringline loop against asyncio.create_subprocess_exec on stock asyncio
   (and on the ringline loop).

Every case runs --rounds times (alternating), the best round is reported;
ratios are ringline / other (higher is better for ringline).
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

import ringline  # noqa: E402
from ringline import fs, process  # noqa: E402

BLOCK = 4096


def make_file(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(chunk[:min(left, len(chunk))])
            left -= len(chunk)


def warm(path):
    with open(path, "rb") as f:
        while f.read(1 << 22):
            pass


def offsets(size, n, seed=1):
    rnd = random.Random(seed)
    blocks = size // BLOCK
    return [rnd.randrange(blocks) * BLOCK for _ in range(n)]


# ---- 1. random reads ---------------------------------------------------------

async def reads_ringline(path, offs, inflight, direct=False):
    async with fs.open(path, "rb", direct=direct) as f:
        it = iter(offs)
        if direct:
            async def worker():
                buf = fs.aligned_buffer(BLOCK)
                for off in it:
                    if await f.preadinto(buf, off) != BLOCK:
                        raise RuntimeError("short read")
        else:
            async def worker():
                for off in it:
                    if len(await f.pread(BLOCK, off)) != BLOCK:
                        raise RuntimeError("short read")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return time.perf_counter() - t0


async def reads_aiofiles(path, offs, inflight):
    import aiofiles
    it = iter(offs)

    async def worker():
        async with aiofiles.open(path, "rb") as f:
            for off in it:
                await f.seek(off)
                if len(await f.read(BLOCK)) != BLOCK:
                    raise RuntimeError("short read")
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0


async def reads_to_thread(path, offs, inflight, direct=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
    it = iter(offs)
    try:
        if direct:
            async def worker():
                buf = mmap.mmap(-1, BLOCK)
                for off in it:
                    if await asyncio.to_thread(os.preadv, fd, [buf], off) != BLOCK:
                        raise RuntimeError("short read")
        else:
            async def worker():
                for off in it:
                    if len(await asyncio.to_thread(os.pread, fd, BLOCK, off)) != BLOCK:
                        raise RuntimeError("short read")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(inflight)))
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def run_on(loop_name, coro_fn, *args, backend=None):
    if loop_name == "ringline":
        loop = ringline.new_event_loop(backend=backend)
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro_fn(*args))
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def best_of(rounds, cases):
    """cases: {name: thunk returning seconds}; alternate, keep the best."""
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, thunk in cases.items():
            best[name] = min(best[name], thunk())
    return best


def report(title, unit_count, unit, best, ref):
    print(f"\n## {title}\n")
    print(f"| case | time (s) | {unit}/s | {ref} / case |")
    print("|---|---:|---:|---:|")
    for name, t in best.items():
        ratio = best[name] / best[ref] if name != ref else 1.0
        print(f"| {name} | {t:.3f} | {unit_count / t:,.0f} | {ratio:.2f}x |")
    sys.stdout.flush()


def bench_reads(path, size, args):
    offs = offsets(size, args.reads)
    warm(path)
    cases = {
        "ringline.fs pread (io_uring)": lambda: run_on("ringline", reads_ringline, path, offs, args.inflight),
        "ringline.fs pread (poll backend, thread pool)":
            lambda: run_on("ringline", reads_ringline, path, offs, args.inflight, backend="poll"),
        "asyncio.to_thread(os.pread)": lambda: run_on("asyncio", reads_to_thread, path, offs, args.inflight),
    }
    try:
        import aiofiles  # noqa: F401
        cases["aiofiles seek+read"] = lambda: run_on("asyncio", reads_aiofiles, path, offs, args.inflight)
    except ImportError:
        print("(aiofiles is not installed: pip install aiofiles)")
    best = best_of(args.rounds, cases)
    report(f"random {BLOCK}-byte reads, {args.reads} reads, {args.inflight} in flight, "
           f"{size >> 20} MiB file, page cache warm", args.reads, "reads", best,
           "ringline.fs pread (io_uring)")
    if args.direct:
        dcases = {
            "ringline.fs O_DIRECT preadinto (io_uring)":
                lambda: run_on("ringline", reads_ringline, path, offs[:args.direct_reads], args.inflight, True),
            "asyncio.to_thread(os.preadv) O_DIRECT":
                lambda: run_on("asyncio", reads_to_thread, path, offs[:args.direct_reads], args.inflight, True),
        }
        try:
            best = best_of(args.rounds, dcases)
        except OSError as exc:
            print(f"\n(O_DIRECT refused here: {exc})")
        else:
            report(f"random {BLOCK}-byte O_DIRECT reads, {args.direct_reads} reads, "
                   f"{args.inflight} in flight", args.direct_reads, "reads", best,
                   "ringline.fs O_DIRECT preadinto (io_uring)")


# ---- 2. copy ---------------------------------------------------------------------

def bench_copy(path, size, args):
    dst = path + ".copy"

    def fresh():
        # Same start for each case: no destination to truncate, no dirty
        # pages of the previous case still being written back.
        if os.path.exists(dst):
            os.unlink(dst)
        os.sync()

    def ring_copy():
        fresh()

        async def go():
            t0 = time.perf_counter()
            n = await fs.copy(path, dst)
            t = time.perf_counter() - t0
            assert n == size, (n, size)
            return t
        return run_on("ringline", go)

    def sh_copy():
        fresh()
        t0 = time.perf_counter()
        shutil.copyfile(path, dst)
        return time.perf_counter() - t0

    warm(path)
    try:
        best = best_of(args.rounds, {"ringline.fs.copy (splice in the ring)": ring_copy,
                                     "shutil.copyfile": sh_copy})
    finally:
        if os.path.exists(dst):
            os.unlink(dst)
    report(f"sequential copy of {size >> 20} MiB (page cache warm)", size >> 20, "MiB",
           best, "ringline.fs.copy (splice in the ring)")


# ---- 3. spawn-and-wait -------------------------------------------------------------

async def spawn_ringline(n, width):
    true = shutil.which("true")
    sem = asyncio.Semaphore(width)
    cmd = process.Command(true)

    async def one():
        async with sem:
            st = await cmd.status()
            assert st.success()
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


async def spawn_asyncio(n, width):
    true = shutil.which("true")
    sem = asyncio.Semaphore(width)

    async def one():
        async with sem:
            p = await asyncio.create_subprocess_exec(true)
            assert await p.wait() == 0
    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return time.perf_counter() - t0


def bench_spawn(args):
    n, w = args.spawns, args.inflight
    best = best_of(args.rounds, {
        "ringline.process (io_uring)": lambda: run_on("ringline", spawn_ringline, n, w),
        "ringline.process (poll backend)": lambda: run_on("ringline", spawn_ringline, n, w, backend="poll"),
        "asyncio.create_subprocess_exec (asyncio loop)": lambda: run_on("asyncio", spawn_asyncio, n, w),
        "asyncio.create_subprocess_exec (ringline loop)": lambda: run_on("ringline", spawn_asyncio, n, w),
    })
    report(f"spawn-and-wait of `true`, {n} processes, {w} at a time", n, "spawns", best,
           "ringline.process (io_uring)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="file size in MiB (default 256; the issue's is 1024)")
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where the test file goes")
    ap.add_argument("--reads", type=int, default=200_000, help="random reads per case")
    ap.add_argument("--direct-reads", type=int, default=50_000, help="random O_DIRECT reads per case")
    ap.add_argument("--inflight", type=int, default=64)
    ap.add_argument("--spawns", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--direct", action="store_true", help="also O_DIRECT random reads")
    ap.add_argument("--only", choices=("reads", "copy", "spawn"), action="append")
    ap.add_argument("--keep", action="store_true", help="keep the test file")
    args = ap.parse_args()
    only = set(args.only or ("reads", "copy", "spawn"))
    size = args.size << 20
    path = os.path.join(args.dir, f"ringline-fs-bench-{args.size}M.bin")
    print(f"# ringline fs/process benchmark\n\npython {sys.version.split()[0]}, kernel "
          f"{os.uname().release}, {os.cpu_count()} CPUs, file {path}, "
          f"backends {ringline.available_backends()}")
    t0 = time.perf_counter()
    try:
        if only & {"reads", "copy"}:
            make_file(path, size)
        if "reads" in only:
            bench_reads(path, size, args)
        if "copy" in only:
            bench_copy(path, size, args)
        if "spawn" in only:
            bench_spawn(args)
    finally:
        if not args.keep and os.path.exists(path):
            os.unlink(path)
    print(f"\n(total {time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
