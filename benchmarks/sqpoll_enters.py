"""io_uring_enter calls per echo of the runtime API's echo worker, with and
without SQPOLL (Config.sqpoll): what SQPOLL takes off the worker thread.

    python benchmarks/sqpoll_enters.py [--messages N] [--conns C]

One worker (a thread of this process, so its loop's stats can be read),
clients in this process doing C connections x N ping-pongs of 64 bytes.
Counts, unlike wall-clock numbers, do not depend on what else the machine
runs; the SQ thread's CPU time is printed too (it is a thread of this
process: /proc/self/task).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import queue
import socket
import sys
import time

import ringline
from ringline.runtime._echo import EchoWithData


def _sq_cpu_seconds():
    total = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                if not f.read().startswith("iou-sqp-"):
                    continue
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def run(sqpoll, messages, conns):
    q = queue.Queue()

    class H(EchoWithData):
        async def on_start(self):
            q.put(asyncio.get_running_loop())

    cfg = ringline.Config(workers=1, worker_mode="thread", pin_to_core=False,
                          backend="io_uring", sqpoll=sqpoll, sqpoll_idle_ms=1000,
                          shutdown_timeout=1.0)
    sh, _ = ringline.Builder(cfg).bind(("127.0.0.1", 0)).launch(H)
    try:
        loop = q.get(timeout=10)
        socks = [socket.create_connection(sh.address()) for _ in range(conns)]
        for s in socks:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 64
        for s in socks:                     # warm up: every connection accepted
            s.sendall(msg)
            s.recv(64)
        st0, sq0, t0 = loop.stats(), _sq_cpu_seconds(), time.perf_counter()
        for _ in range(messages):
            for s in socks:
                s.sendall(msg)
            for s in socks:
                got = 0
                while got < 64:
                    got += len(s.recv(64 - got))
        wall = time.perf_counter() - t0
        st1, sq1 = loop.stats(), _sq_cpu_seconds()
        for s in socks:
            s.close()
    finally:
        sh.shutdown(timeout=10)
    n = messages * conns
    return {
        "sqpoll": st1["sqpoll"],
        "enters_per_echo": (st1["io_uring_enter"] - st0["io_uring_enter"]) / n,
        "sq_wakeups_per_echo": (st1["sq_wakeups"] - st0["sq_wakeups"]) / n,
        "sqes_per_echo": (st1["sqes_submitted"] - st0["sqes_submitted"]) / n,
        "sq_thread_cpu_share": (sq1 - sq0) / wall,
        "echo_per_s": n / wall,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--conns", type=int, default=1)
    args = ap.parse_args()
    for sqpoll in (False, True):
        r = run(sqpoll, args.messages, args.conns)
        print(f"sqpoll={str(sqpoll):5s} (ring has it: {r['sqpoll']}): "
              f"{r['enters_per_echo']:.2f} io_uring_enter/echo, "
              f"{r['sq_wakeups_per_echo']:.3f} SQ wakeups/echo, "
              f"{r['sqes_per_echo']:.2f} SQEs/echo, SQ thread {r['sq_thread_cpu_share']:.2f} CPU, "
              f"{r['echo_per_s']:,.0f} echo/s (not comparable across machines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
