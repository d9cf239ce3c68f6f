#!/usr/bin/env python3
"""Echo-server throughput: Python echo servers on different loops, driven by loadgen.c.

    python benchmarks/run_echo.py --servers asyncio-sock,uvloop-sock,ringline-sock \\
                                  --size 1024 --conns 64 --reps 3

A server is LOOP-API: LOOP is asyncio, uvloop, rloop, ringline or MODULE:FACTORY, API is
sock, protocol, streams or buffered (see echo_server.py).  All servers are started once,
pinned to --server-cpu (idle ones sleep in their poller); the C load generator runs pinned
to --client-cpu.  Before measuring, every server is checked with a short byte-for-byte
verified run per size; a server that fails is reported and left out.

Each run: --warmup seconds unmeasured, then --duration seconds measured, closed loop (one
request in flight per connection).  Repetitions are interleaved: repetition 1 of every
(size, conns) cell on every server, then repetition 2, ..., with the server order rotated.
A run during which other processes used more than --max-other cores is repeated
(--retries times at most, keeping the least disturbed).

Reported per server and cell: median req/s, the ratio to uvloop with the same API
(median of per-repetition ratios), latency, and the server's CPU time over the measured
window (utime + stime of the server process from /proc/PID/stat) as cores used and as
requests per server-CPU-second, a throughput measure that still means something when
the client, not the server, is the bottleneck.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time

import _common

APIS = ("sock", "protocol", "streams", "buffered")
LOADGEN_SRC = os.path.join(_common.HERE, "loadgen.c")
BUILD_DIR = os.path.join(_common.HERE, ".build")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def build_loadgen(tls=False):
    """Compile loadgen.c into the (gitignored) build dir unless an up-to-date binary is there.

    The plain build (TCP and UDP modes) needs only a C compiler; TLS=True builds
    loadgen-tls with -DWITH_TLS against OpenSSL (libssl-dev) for -t."""
    exe = os.path.join(BUILD_DIR, "loadgen-tls" if tls else "loadgen")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(LOADGEN_SRC):
        return exe
    os.makedirs(BUILD_DIR, exist_ok=True)
    cmd = [os.environ.get("CC", "cc"), "-O2", "-Wall", "-o", exe, LOADGEN_SRC]
    if tls:
        cmd[2:2] = ["-DWITH_TLS"]
        cmd += ["-lssl", "-lcrypto"]
    log("building: " + " ".join(cmd))
    try:
        subprocess.run(cmd, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"cannot build the load generator ({exc}); a C compiler is needed"
                 + (" and, for TLS, the OpenSSL headers (libssl-dev)" if tls
                    else " (benchmarks/demo.py needs none)"))
    return exe


# ----------------------------------------------------------------------------- one client run
def run_loadgen(args, server, others, size, conns, warmup, duration, verify=False):
    """Run loadgen against SERVER; returns its JSON result plus server CPU over the window.

    args.loadgen_mode, if set, is loadgen's mode flag (["-u"] or ["-t"]; TCP without).

    CPU time is sampled when loadgen reports the edges of its measured window (-m), so the
    warm-up does not count.  OTHERS (idle servers) are sampled too: an idle server that
    burns CPU would steal it from the one being measured."""
    cmd = [args.loadgen, *getattr(args, "loadgen_mode", ()), "-p", str(server.port),
           "-c", str(conns), "-s", str(size), "-d", str(duration), "-w", str(warmup), "-m"] \
        + (["-V"] if verify else [])
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, preexec_fn=_common.pinned(args.client_cpu))
    watchdog = threading.Timer(warmup + duration + 30, p.kill)
    watchdog.start()
    # [machine, loadgen, server, idle servers...]
    pids = [p.pid, server.pid] + [o.pid for o in others]

    def sample():
        return [_common.machine_busy_seconds()] + [_common.proc_cpu_seconds(pid) for pid in pids]

    cpu0 = cpu1 = t0 = t1 = None
    result = None
    try:
        for line in p.stdout:
            if line.startswith("# measure-start"):
                t0, cpu0 = time.monotonic(), sample()
            elif line.startswith("# measure-end"):
                t1, cpu1 = time.monotonic(), sample()
            elif line.startswith("{"):
                result = json.loads(line)
        err = p.stderr.read()
        p.wait()
    finally:
        watchdog.cancel()
    if result is None:
        return {"errors": 1, "rps": 0.0, "detail": f"loadgen exit status {p.returncode}: {err.strip()[-300:]}"}
    if err.strip():
        result["detail"] = err.strip().splitlines()[0]
    if cpu0 and cpu1 and None not in cpu0 + cpu1 and t1 > t0:
        used = [b - a for a, b in zip(cpu0, cpu1)]
        result["server_cpu_s"] = used[2]
        result["server_cores"] = used[2] / (t1 - t0)
        result["client_cores"] = used[1] / (t1 - t0)
        result["idle_servers_cores"] = max(used[3:], default=0.0) / (t1 - t0)
        # Busy time not charged to loadgen or the servers: other processes, or kernel work
        # done outside any process context (a few hundredths of a core is normal).
        result["other_cores"] = max(0.0, used[0] - sum(used[1:])) / (t1 - t0)
        if result["server_cpu_s"] > 0:
            result["req_per_cpu_s"] = result["requests"] / result["server_cpu_s"]
    if not server.alive():
        result["errors"] = result.get("errors", 0) + 1
        result["detail"] = f"server died (exit status {server.proc.returncode}): {server.stderr_tail()}"
    return result


def verify_server(args, server, sizes):
    """None if SERVER echoes every size correctly, else what went wrong."""
    for size in sizes:
        for conns in (1, 8):
            r = run_loadgen(args, server, [], size, conns, 0, args.verify_seconds, verify=True)
            if r.get("errors") or not r.get("requests"):
                return f"size {size} x{conns}: errors={r.get('errors')} requests={r.get('requests')} " \
                       f"{r.get('detail', '')}".strip()
    return None


# ----------------------------------------------------------------------------- report
def baseline_for(name, names):
    same_api = "uvloop-" + name.rpartition("-")[2]
    if same_api in names:
        return same_api
    return next((n for n in names if n.startswith("uvloop-")), None)


def report(args, names, cells, runs, failed, ready):
    """runs[(name, cell)] = {rep: result}"""
    out = [f"Echo benchmark: {args.reps} interleaved repetitions, {args.warmup}s warm-up + "
           f"{args.duration}s measured per run, closed loop; servers on CPU {args.server_cpu}, "
           f"loadgen on CPU {args.client_cpu}.  ",
           f"Machine: {_common.machine_summary()}  "]
    out += [f"- `{n}`: {ready[n]}" for n in names if n in ready]
    header = ["server", "req/s", "× uvloop", "MB/s", "p50 µs", "p99 µs", "server CPU (cores)",
              "req per server CPU-s", "loadgen CPU", "spread", "errors"]
    for cell in cells:
        size, conns = cell
        rows = []
        for name in names:
            if name in failed:
                rows.append([f"`{name}`", "skipped"] + [""] * (len(header) - 2))
                continue
            per_rep = runs.get((name, cell), {})
            vals = list(per_rep.values())
            rps = {rep: r.get("rps", 0.0) for rep, r in per_rep.items()}
            base = baseline_for(name, names)
            base_rps = {rep: r.get("rps", 0.0) for rep, r in runs.get((base, cell), {}).items()}
            med = lambda key: _common.median(r.get(key) for r in vals)  # noqa: E731
            rows.append([
                f"`{name}`", _common.fmt_int(_common.median(rps.values())),
                _common.fmt_ratio(_common.paired_ratio(rps, base_rps) if base else None)
                + ("" if not base or base.rpartition("-")[2] == name.rpartition("-")[2] else f" (vs `{base}`)"),
                _common.fmt_float(med("mbps"), 1),
                _common.fmt_float(_common.median(r.get("lat_us", {}).get("p50") for r in vals), 0),
                _common.fmt_float(_common.median(r.get("lat_us", {}).get("p99") for r in vals), 0),
                _common.fmt_float(med("server_cores")), _common.fmt_int(med("req_per_cpu_s")),
                _common.fmt_float(med("client_cores")), _common.fmt_pct(_common.spread(rps.values())), sum(r.get("errors", 0) for r in vals)])
        out += ["", f"**{size:,} bytes × {conns} connections**", "", _common.md_table(header, rows)]
    every = [r for per in runs.values() for r in per.values()]
    idle = max((r.get("idle_servers_cores", 0.0) for r in every), default=0.0)
    other = max((r.get("other_cores", 0.0) for r in every), default=0.0)
    out += ["", "req/s = echoes completed per second (median); × uvloop = median of per-repetition ratios "
            "to uvloop with the same API (or the one named); MB/s = payload one way; latency = request written to echo "
            "received; server / loadgen CPU = user+system CPU time / window (1.00 = a core busy all "
            "the time; loopback TCP work is charged to the sending side, so a loadgen near 1.00 may be "
            "the limit); spread = (max - min) / median of req/s over repetitions.",
            f"During measured windows, idle servers used at most {idle:.2f} cores and everything "
            f"else on the machine at most {other:.2f} cores."]
    if idle > 0.05:
        out.append("**Warning: an idle server burned CPU and may have slowed the measured one.**")
    if other > args.max_other:
        out.append("**Warning: other load on the machine during some kept runs; their numbers may be "
                   "low (see the per-run log, `other`).**")
    for name, why in failed.items():
        out.append(f"- `{name}` skipped: {why}")
    return "\n".join(out)


# ----------------------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="asyncio-sock,uvloop-sock,ringline-sock",
                    help="comma-separated LOOP-API names (API: %s)" % ", ".join(APIS))
    ap.add_argument("--size", default="1024", help="message size(s) in bytes, comma-separated")
    ap.add_argument("--conns", default="64", help="connection count(s), comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    ap.add_argument("--loadgen", help="prebuilt loadgen binary (default: build benchmarks/.build/loadgen)")
    ap.add_argument("--no-verify", action="store_true", help="skip the byte-for-byte check before measuring")
    ap.add_argument("--verify-seconds", type=float, default=0.3)
    ap.add_argument("--max-other", type=float, default=0.2,
                    help="cores that anything but loadgen and the servers may use during a run before it "
                         "counts as disturbed (default 0.2)")
    ap.add_argument("--retries", type=int, default=2,
                    help="repeat a disturbed run up to this many times, keeping the least disturbed")
    ap.add_argument("--json", help="also write every run's raw result here")
    args = ap.parse_args()

    names = _common.split_list(args.servers)
    for name in names:
        if name.rpartition("-")[2] not in APIS or not name.rpartition("-")[0]:
            ap.error(f"server {name!r}: expected LOOP-API with API one of {', '.join(APIS)}")
    cells = [(int(s), int(c)) for s in _common.split_list(args.size) for c in _common.split_list(args.conns)]
    args.loadgen = args.loadgen or build_loadgen()
    _common.warn_if_unpinnable(args.server_cpu, args.client_cpu)

    failed = {}
    loops = dict.fromkeys(n.rpartition("-")[0] for n in names)
    for loop in loops:
        why = _common.probe_loop(loop, args.python)
        if why:
            log(f"skipping loop {loop}: {why}")
            failed.update({n: f"loop {loop}: {why}" for n in names if n.rpartition("-")[0] == loop})

    servers = {}
    try:
        for name in names:
            if name in failed:
                continue
            loop, _, api = name.rpartition("-")
            srv = _common.EchoServer(loop, api, args.server_cpu, args.python)
            try:
                srv.start()
            except RuntimeError as exc:
                failed[name] = f"did not start: {exc}"
                log(f"{name}: {failed[name]}")
                continue
            why = None if args.no_verify else verify_server(args, srv, sorted({s for s, _ in cells}))
            if why:
                failed[name] = f"failed verification: {why}"
                log(f"{name}: {failed[name]}")
                srv.stop()
                continue
            servers[name] = srv
            log(f"{name}: {srv.ready.get('loop')} on port {srv.port}" + ("" if args.no_verify else ", verified"))
        live = [n for n in names if n in servers]
        if not live:
            sys.exit("no server to measure")
        log(f"measuring {len(live)} servers x {len(cells)} cells x {args.reps} reps, "
            f"~{len(live) * len(cells) * args.reps * (args.warmup + args.duration + 0.2) / 60:.1f} min")

        runs = {}
        for rep in range(args.reps):
            for cell in cells:
                k = rep % len(live)
                for name in live[k:] + live[:k]:
                    srv = servers[name]
                    if not srv.alive():
                        continue
                    others = [servers[o] for o in live if o != name and servers[o].alive()]
                    r, tries = _common.least_disturbed(
                        lambda: run_loadgen(args, srv, others, cell[0], cell[1], args.warmup, args.duration),
                        lambda r: 0.0 if r.get("errors") else r.get("other_cores", 0.0) / args.max_other,
                        args.retries)
                    r["retries"] = tries
                    runs.setdefault((name, cell), {})[rep] = r
                    log(f"rep {rep + 1}/{args.reps} {name:>20} {cell[0]:>7} B x{cell[1]:<4} "
                        f"{r.get('rps', 0):>10,.0f} req/s  server {r.get('server_cores', 0):.2f} "
                        f"loadgen {r.get('client_cores', 0):.2f} other {r.get('other_cores', 0):.2f} cores"
                        + (f"  (after {tries} disturbed run(s))" if tries else "")
                        + (f"  ERRORS {r['errors']}: {r.get('detail', '')}" if r.get("errors") else ""))
    finally:
        for srv in servers.values():
            srv.stop()

    print(report(args, names, cells, runs, failed, {n: s.ready.get("loop", "?") for n, s in servers.items()}))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r, server=n, size=c[0], conns=c[1], rep=rep)
                       for (n, c), per in runs.items() for rep, r in per.items()], f, indent=1)
    return 1 if any(r.get("errors") for per in runs.values() for r in per.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
