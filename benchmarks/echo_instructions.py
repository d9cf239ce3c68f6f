"""Instructions per protocol echo, counted by callgrind: repeatable to a few
instructions on a loaded machine, where wall-clock differences of a few
percent are noise.

Both ends of a socketpair are ringline transports with asyncio.Protocol
(64-byte messages); with ``--api streams`` or ``--api sock`` the echoing
end is an asyncio streams or sock_recv()/sock_sendall() server instead (the
other end stays a protocol), and with ``--api runtime`` both are runtime API
connections (ConnCtx) echoing with with_data() and send_nowait().  The script runs the echo under ``valgrind
--tool=callgrind`` for N1 and N2 round trips and reports (I(N2) - I(N1)) /
(2 * (N2 - N1)): the user-space instructions of one echo on one side
(receive completion, data_received, write, send completion), with start-up
and imports cancelled out.

    python benchmarks/echo_instructions.py                    # both backends
    python benchmarks/echo_instructions.py --backend poll
    python benchmarks/echo_instructions.py --api runtime
    PYTHONPATH=/other/checkout/src python benchmarks/echo_instructions.py   # compare trees

Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys


def child(backend: str, n: int, api: str = "protocol") -> None:
    if os.environ.get("ECHO_WHOLE_BUFFERS"):
        from ringline._core import core
        core.set_recv_incremental(False)
    if api == "runtime":
        return child_runtime(backend, n)
    import asyncio
    import socket

    import ringline

    msg = b"x" * 64

    class Echo(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.t.write(d)

    class Client(asyncio.Protocol):
        def __init__(self, done):
            self.left = n
            self.done = done

        def connection_made(self, t):
            self.t = t

        def data_received(self, d):
            self.left -= 1
            if self.left <= 0:
                self.done.set_result(None)
            else:
                self.t.write(msg)

    async def serve_streams(a):
        reader, writer = await asyncio.open_connection(sock=a)
        while data := await reader.read(65536):
            writer.write(data)
        writer.close()

    async def serve_sock(loop, a):
        a.setblocking(False)
        while data := await loop.sock_recv(a, 65536):
            await loop.sock_sendall(a, data)

    async def main(loop):
        a, b = socket.socketpair()
        server = None
        if api == "streams":
            server = loop.create_task(serve_streams(a))
        elif api == "sock":
            server = loop.create_task(serve_sock(loop, a))
        else:
            await loop.connect_accepted_socket(Echo, a)
        done = loop.create_future()
        t, _ = await loop.connect_accepted_socket(lambda: Client(done), b)
        t.write(msg)
        await done
        if server is not None:
            t.close()
            await server

    loop = ringline.new_event_loop(backend=backend)
    loop.run_until_complete(main(loop))
    loop.close()


def child_runtime(backend: str, n: int) -> None:
    import asyncio
    import socket

    import ringline
    from ringline.runtime._conn import _make_conn
    from ringline.runtime._state import current_runtime

    msg = b"x" * 64

    async def echo(conn):
        def fn(view):
            conn.send_nowait(view)
            return len(view)
        while await conn.with_data(fn):
            pass

    async def client(conn):
        got = 0

        def fn(view):
            return len(view)
        conn.send_nowait(msg)
        for _ in range(n - 1):
            while got < len(msg):
                got += await conn.with_data(fn)
            got -= len(msg)
            conn.send_nowait(msg)
        while got < len(msg):
            got += await conn.with_data(fn)

    async def main(loop):
        rt = current_runtime(loop)
        a, b = socket.socketpair()
        ca, cb = _make_conn(loop, rt, a, False), _make_conn(loop, rt, b, True)
        ca._start()
        cb._start()
        server = loop.create_task(echo(ca))
        await client(cb)
        cb.close()
        await server
        ca.close()

    loop = ringline.new_event_loop(backend=backend)
    loop.run_until_complete(main(loop))
    loop.close()


def count(backend: str, n: int, api: str = "protocol") -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", backend, str(n), api],
        env=env, capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not m:
        sys.exit(f"callgrind run failed ({backend}, {n}):\n{out.stderr[-2000:]}")
    return int(m.group(1))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("io_uring", "poll", "both"), default="both")
    p.add_argument("--n1", type=int, default=2000)
    p.add_argument("--n2", type=int, default=6000)
    p.add_argument("--api", choices=("protocol", "streams", "sock", "runtime"), default="protocol",
                   help="the echoing end: a Protocol, streams, sock_* calls, or runtime API connections")
    p.add_argument("--whole-buffers", action="store_true",
                   help="a whole ring buffer per receive (core.set_recv_incremental(False))")
    a = p.parse_args()
    if a.whole_buffers:
        os.environ["ECHO_WHOLE_BUFFERS"] = "1"
    backends = ("io_uring", "poll") if a.backend == "both" else (a.backend,)
    print(f"python {sys.version.split()[0]}, {a.api} API")
    for b in backends:
        i1, i2 = count(b, a.n1, a.api), count(b, a.n2, a.api)
        print(f"{b}: {(i2 - i1) / (2 * (a.n2 - a.n1)):,.0f} instructions per echo")


if __name__ == "__main__":
    main()
