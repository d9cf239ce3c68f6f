"""Instructions per HTTP request of examples/http_hello.py, counted by callgrind:
the runtime API server against the same responder as an asyncio Protocol on
ringline, repeatable on a loaded machine where wrk's numbers are noise.

One process: the server (a runtime worker thread, ``worker_mode="thread"``, or
a ringline loop in a thread serving HelloProtocol) on 127.0.0.1, and a
blocking socket client in the main thread sending one GET at a time on one
keep-alive connection and reading the response.  The script runs it under
``valgrind --tool=callgrind`` for N1 and N2 requests and reports
(I(N2) - I(N1)) / (N2 - N1): the user-space instructions of one request,
server and client together (the client is the same code for both, so the
difference between the rows is the servers'), start-up cancelled out.

    python benchmarks/http_instructions.py                      # both backends
    python benchmarks/http_instructions.py --backend io_uring

Needs valgrind (Debian: apt-get install valgrind) and httptools.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(os.path.dirname(HERE), "examples")
GET = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def child(variant: str, backend: str, n: int) -> None:
    import asyncio
    import socket
    import threading

    sys.path.insert(0, EXAMPLES)
    import http_hello
    import ringline

    expect = len(http_hello.KEEP_ALIVE)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    if variant == "runtime":
        shutdown, _ = (ringline.Builder(ringline.Config(
            workers=1, worker_mode="thread", pin_to_core=False, backend=backend))
            .bind(("127.0.0.1", port)).launch(http_hello.HelloHandler))
        stop = shutdown.shutdown
    else:
        ready = threading.Event()
        box = {}

        def serve():
            loop = ringline.new_event_loop(backend=backend)
            box["loop"] = loop
            task = loop.create_task(http_hello.serve_protocol(
                "127.0.0.1", port, ready=lambda server: ready.set()))
            box["task"] = task
            try:
                loop.run_until_complete(task)
            finally:
                loop.close()

        t = threading.Thread(target=serve)
        t.start()
        ready.wait(60)

        def stop():
            box["loop"].call_soon_threadsafe(box["task"].cancel)
            t.join()

    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for _ in range(n):
        c.sendall(GET)
        got = 0
        while got < expect:
            chunk = c.recv(4096)
            if not chunk:
                raise SystemExit("server closed the connection")
            got += len(chunk)
    c.close()
    stop()


def count(variant: str, backend: str, n: int) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", variant, backend, str(n)],
        env=env, capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        sys.exit(f"callgrind run failed ({variant}, {backend}, {n}):\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("io_uring", "poll", "both"), default="both")
    p.add_argument("--n1", type=int, default=1000)
    p.add_argument("--n2", type=int, default=3000)
    a = p.parse_args()
    backends = ("io_uring", "poll") if a.backend == "both" else (a.backend,)
    print(f"python {sys.version.split()[0]}")
    for b in backends:
        per = {}
        for variant in ("runtime", "protocol"):
            i1, i2 = count(variant, b, a.n1), count(variant, b, a.n2)
            per[variant] = (i2 - i1) / (a.n2 - a.n1)
            print(f"{b:8} {variant:8}: {per[variant]:,.0f} instructions per request "
                  f"(server + client)", flush=True)
        print(f"{b:8} runtime - protocol: {per['runtime'] - per['protocol']:+,.0f}", flush=True)


if __name__ == "__main__":
    main()
