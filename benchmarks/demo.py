#!/usr/bin/env python3
"""Demo: how many echo requests per second does ringline serve, next to stock asyncio?

    pip install .                  # from the repository root
    python benchmarks/demo.py      # ~10 s

Starts benchmarks/echo_server.py on each loop (pinned to CPU 0 when the machine has two
or more CPUs) and drives each for --duration seconds in all, split into --rounds rounds
that alternate between the loops, with a few client processes (pinned to CPU 1) that use
plain blocking sockets: nothing on the client side runs on the loop under test, and no C
compiler is needed.  Every client keeps --conns-per-client connections busy in lock-step
(send one message on each, then read every echo back and compare it byte for byte).

Printed per loop (medians over the rounds): requests/s, the CPU the server used (1.00 =
its core fully busy), and requests per server-CPU-second; then the ratio of the first
loop to the others.  Python clients are slower than a C load generator, so
when the server is not saturated (CPU well below 1.00) the clients are the bottleneck:
then requests per server-CPU-second is the fairer comparison.  For careful numbers use
benchmarks/run_echo.py (C load generator, repetitions, more APIs).

--api sock (default) uses loop.sock_accept/sock_recv/sock_sendall; --api protocol uses
loop.create_server with an asyncio.Protocol, for loops that support it.
"""
import argparse
import multiprocessing as mp
import os
import socket
import sys
import time

import _common

MAX_SIZE = 64 * 1024  # lock-step blocking clients could deadlock once a message outgrows the socket buffers


def client(port, conns, size, cpu, barrier, window, results):
    """Client process: echo in lock-step over CONNS connections; count echoes completed in WINDOW."""
    if _common.cpu_available(cpu):
        os.sched_setaffinity(0, {cpu})
    done = errors = 0
    detail = ""
    try:
        socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(conns)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        payload = os.urandom(size)
        buf = bytearray(size)
        view = memoryview(buf)
        barrier.wait()
        start, end = window[0], window[1]
        while True:
            for s in socks:
                s.sendall(payload)
            for s in socks:
                got = 0
                while got < size:
                    n = s.recv_into(view[got:])
                    if not n:
                        raise ConnectionError("server closed the connection")
                    got += n
                if buf != payload:
                    raise ValueError("echo differs from what was sent")
            now = time.monotonic()
            if now >= end:
                break
            if now >= start:
                done += conns
    except Exception as exc:  # noqa: BLE001 - reported, not raised, so the parent can go on
        errors, detail = 1, f"{type(exc).__name__}: {exc}"
        barrier.abort()  # a client that never reached the barrier must not block the others
    results.put((done, errors, detail))


def drive(server, args, seconds):
    """One round: the clients against SERVER for SECONDS; returns (requests, server CPU seconds)."""
    barrier = mp.Barrier(args.clients + 1)
    window = mp.Array("d", 2, lock=False)
    results = mp.Queue()
    procs = [mp.Process(target=client, args=(server.port, args.conns_per_client, args.size,
                                             args.client_cpu, barrier, window, results))
             for _ in range(args.clients)]
    for p in procs:
        p.start()
    # The window is fixed before the barrier opens, so every client counts the same span.
    t_start = time.monotonic() + 0.05 + args.warmup
    window[0], window[1] = t_start, t_start + seconds
    try:
        barrier.wait(timeout=30)
    except Exception:  # noqa: BLE001 - BrokenBarrierError or a timeout; the clients say why
        pass
    time.sleep(max(0.0, t_start - time.monotonic()))
    cpu0 = _common.proc_cpu_seconds(server.pid)
    time.sleep(max(0.0, window[1] - time.monotonic()))
    cpu1 = _common.proc_cpu_seconds(server.pid)
    outs = [results.get(timeout=seconds + 30) for _ in procs]
    for p in procs:
        p.join()
    errors = [d for _, e, d in outs if e]
    if errors or not server.alive():
        raise RuntimeError(f"{errors[0] if errors else 'server died'}; server stderr: {server.stderr_tail()}")
    return sum(d for d, _, _ in outs), (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loops", default="ringline,asyncio",
                    help="comma-separated; the first is compared with the others (default ringline,asyncio)")
    ap.add_argument("--api", default="sock", choices=("sock", "protocol", "streams", "buffered"))
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per loop, all rounds together")
    ap.add_argument("--rounds", type=int, default=3, help="the duration is split into this many interleaved rounds")
    ap.add_argument("--warmup", type=float, default=0.3, help="unmeasured seconds before each round")
    ap.add_argument("--clients", type=int, default=2, help="client processes")
    ap.add_argument("--conns-per-client", type=int, default=8)
    ap.add_argument("--size", type=int, default=1024, help=f"message bytes (at most {MAX_SIZE})")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    args = ap.parse_args()
    if not 0 < args.size <= MAX_SIZE:
        ap.error(f"--size must be between 1 and {MAX_SIZE}")
    if len(os.sched_getaffinity(0)) < 2:
        print("note: one CPU only, so server and clients share it; numbers mean little", flush=True)
        args.server_cpu = args.client_cpu = None

    requested = _common.split_list(args.loops)
    print(f"echo, {args.api} API, {args.size} B messages, {args.clients} client processes x "
          f"{args.conns_per_client} connections, {args.duration:g} s per loop ({_common.machine_summary()})",
          flush=True)
    servers = {}
    try:
        for loop in requested:
            why = _common.probe_loop(loop)
            if why is None:
                try:
                    servers[loop] = _common.EchoServer(loop, args.api, args.server_cpu).start()
                except RuntimeError as exc:
                    why = str(exc)
            if why:
                print(f"{loop:>10}: cannot be measured: {why}", flush=True)
        # Rounds alternate between the loops, so a slow phase of the machine hits all of them.
        rounds = {loop: [] for loop in servers}
        names = list(servers)
        for i in range(args.rounds if names else 0):
            k = i % len(names)
            for loop in names[k:] + names[:k]:
                if loop not in rounds:
                    continue  # failed in an earlier round
                try:
                    rounds[loop].append(drive(servers[loop], args, args.duration / args.rounds))
                except RuntimeError as exc:
                    print(f"{loop:>10}: FAILED: {exc}", flush=True)
                    del rounds[loop]
    finally:
        for server in servers.values():
            server.stop()

    res = {}
    for loop, rs in rounds.items():
        seconds = args.duration / args.rounds
        rps = [n / seconds for n, _ in rs]
        per_cpu = [n / c for n, c in rs if c]
        cores = [c / seconds for _, c in rs if c is not None]
        r = res[loop] = {"rps": _common.median(rps), "cores": _common.median(cores),
                         "per_cpu_s": _common.median(per_cpu), "rps_rounds": rps}
        print(f"{loop:>10}: {r['rps']:>9,.0f} req/s   server CPU {_common.fmt_float(r['cores'])} cores   "
              f"{_common.fmt_int(r['per_cpu_s'])} req per server CPU-s   ({servers[loop].ready.get('loop')})",
              flush=True)

    first = requested[0]
    for other in requested[1:]:
        if first in res and other in res:
            ratio = _common.paired_ratio(dict(enumerate(res[first]["rps_rounds"])),
                                         dict(enumerate(res[other]["rps_rounds"])))
            a, b = res[first]["per_cpu_s"], res[other]["per_cpu_s"]
            print(f"{first} / {other}: {_common.fmt_ratio(ratio)} requests/s, "
                  f"{_common.fmt_ratio(a / b if a and b else None)} requests per server CPU-second")
    if any((r["cores"] or 0) < 0.9 for r in res.values()):
        print("note: a server used well under one core, so the Python clients (or other load on "
              "the machine) limited it; compare requests per server CPU-second, or use benchmarks/run_echo.py")
    return 0 if len(res) == len(requested) else 1


if __name__ == "__main__":
    sys.exit(main())
