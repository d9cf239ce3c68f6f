"""The TLS and UDP echo benchmarks (tls_echo.py, udp_echo.py): run_echo.py's runner
with loadgen.c in its TLS (-t) or UDP (-u) mode as the client.

The servers are echo_server.py's ``tls``/``tls-streams`` and ``udp`` APIs, started and
verified as run_echo.py does; the client is loadgen (C, epoll, OpenSSL for TLS), pinned to
its own CPU, so nothing on the client side runs on the loop under test.  Measurement,
disturbance checks, CPU accounting and the report are run_echo.py's own code.
"""
import argparse
import json
import sys

import _common
import run_echo

KINDS = {
    # kind: (loadgen mode flag, APIs, default servers, default size, default conns)
    "tls": ("-t", ("tls", "tls-streams"), "asyncio-tls,uvloop-tls,ringline-tls", "1024", "64"),
    "udp": ("-u", ("udp",), "asyncio-udp,uvloop-udp,ringline-udp", "1024", "64"),
}


def main(kind, doc):
    flag, apis, default_servers, default_size, default_conns = KINDS[kind]
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default=default_servers,
                    help="comma-separated LOOP-API names (API: %s)" % ", ".join(apis))
    ap.add_argument("--size", default=default_size, help="message size(s) in bytes, comma-separated")
    ap.add_argument("--conns", default=default_conns, help="connection / flow count(s), comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds before each run")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--python", default=sys.executable, help="interpreter for the servers")
    ap.add_argument("--no-verify", action="store_true", help="skip the byte-for-byte check before measuring")
    ap.add_argument("--verify-seconds", type=float, default=0.3)
    ap.add_argument("--max-other", type=float, default=0.2,
                    help="cores that anything but the client and the servers may use during a run "
                         "before it counts as disturbed (default 0.2)")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--json", help="also write every run's raw result here")
    args = ap.parse_args()

    names = _common.split_list(args.servers)
    for name in names:
        loop, _, api = name.rpartition("-") if not name.endswith("tls-streams") else \
            (name[:-len("-tls-streams")], "-", "tls-streams")
        if api not in apis or not loop:
            ap.error(f"server {name!r}: expected LOOP-API with API one of {', '.join(apis)}")
    split = {n: ((n[:-len("-tls-streams")], "tls-streams") if n.endswith("-tls-streams")
                 else tuple(n.rsplit("-", 1))) for n in names}
    cells = [(int(s), int(c)) for s in _common.split_list(args.size) for c in _common.split_list(args.conns)]
    args.loadgen = run_echo.build_loadgen(tls=kind == "tls")    # TLS: the -DWITH_TLS build
    args.loadgen_mode = [flag]
    if kind == "tls":
        import echo_server
        echo_server.ensure_cert()        # once, before the servers start
    _common.warn_if_unpinnable(args.server_cpu, args.client_cpu)

    failed = {}
    for loop in dict.fromkeys(l for l, _ in split.values()):
        why = _common.probe_loop(loop, args.python)
        if why:
            run_echo.log(f"skipping loop {loop}: {why}")
            failed.update({n: f"loop {loop}: {why}" for n in names if split[n][0] == loop})

    servers = {}
    try:
        for name in names:
            if name in failed:
                continue
            loop, api = split[name]
            srv = _common.EchoServer(loop, api, args.server_cpu, args.python)
            try:
                srv.start()
            except RuntimeError as exc:
                failed[name] = f"did not start: {exc}"
                run_echo.log(f"{name}: {failed[name]}")
                continue
            why = None if args.no_verify else run_echo.verify_server(args, srv, sorted({s for s, _ in cells}))
            if why:
                failed[name] = f"failed verification: {why}"
                run_echo.log(f"{name}: {failed[name]}")
                srv.stop()
                continue
            servers[name] = srv
            run_echo.log(f"{name}: {srv.ready.get('loop')} on port {srv.port}"
                         + ("" if args.no_verify else ", verified"))
        live = [n for n in names if n in servers]
        if not live:
            sys.exit("no server to measure")
        run_echo.log(f"measuring {len(live)} servers x {len(cells)} cells x {args.reps} reps, "
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
                        lambda: run_echo.run_loadgen(args, srv, others, cell[0], cell[1],
                                                     args.warmup, args.duration),
                        lambda r: 0.0 if r.get("errors") else r.get("other_cores", 0.0) / args.max_other,
                        args.retries)
                    r["retries"] = tries
                    runs.setdefault((name, cell), {})[rep] = r
                    run_echo.log(
                        f"rep {rep + 1}/{args.reps} {name:>20} {cell[0]:>7} B x{cell[1]:<4} "
                        f"{r.get('rps', 0):>10,.0f} req/s  server {r.get('server_cores', 0):.2f} "
                        f"client {r.get('client_cores', 0):.2f} other {r.get('other_cores', 0):.2f} cores"
                        + (f"  lost {r['lost']}" if r.get("lost") else "")
                        + (f"  (after {tries} disturbed run(s))" if tries else "")
                        + (f"  ERRORS {r['errors']}: {r.get('detail', '')}" if r.get("errors") else ""))
    finally:
        for srv in servers.values():
            srv.stop()

    text = run_echo.report(args, names, cells, runs, failed,
                           {n: s.ready.get("loop", "?") for n, s in servers.items()})
    title = {"tls": "TLS echo (asyncio.Protocol over loop.create_server(ssl=...); client: loadgen -t, "
                    "OpenSSL, one request in flight per connection)",
             "udp": "UDP echo (DatagramProtocol echoing every datagram; client: loadgen -u, one "
                    "datagram in flight per flow, each flow its own connected socket)"}[kind]
    print(f"{title}\n\n" + text.replace("loadgen", "client"))
    if kind == "udp":
        lost = sum(r.get("lost", 0) for per in runs.values() for r in per.values())
        print(f"\nDatagrams never echoed within loadgen's timeout (200 ms), all runs: {lost}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dict(r, server=n, size=c[0], conns=c[1], rep=rep)
                       for (n, c), per in runs.items() for rep, r in per.items()], f, indent=1)
    return 1 if any(r.get("errors") for per in runs.values() for r in per.values()) else 0
