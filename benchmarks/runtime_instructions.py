"""Instructions per echo on the runtime API, counted by callgrind.

One worker process (Builder.launch, no pinning) serves an echo on loopback
TCP; its on_start task is the client, on the same loop: an asyncio protocol
(``--client protocol``, default) or a ringline.connect() connection with
with_data (``--client runtime``).  The server is one of:

    with_data   the runtime API: with_data(fn) + send_nowait (examples/echo_with_data.py)
    forward     the runtime API: with_data(fn) + forward_recv_buf
    protocol    an asyncio.Protocol echo on the worker's loop (the reference;
                benchmarks/echo_server.py's, as the floor is)
    http        examples/http_hello.py on the runtime API (HelloHandler): the
                client sends one keep-alive GET at a time and reads the response
    http_protocol  the same responder as an asyncio Protocol (HelloProtocol)
    floor, http_floor  the protocol echo / HelloProtocol with each read handed to a
                coroutine resumed from data_received in a task switch
                (benchmarks/_common.CoroutineFloor): what a coroutine per
                connection costs at least, with no runtime code

The script runs the worker under ``valgrind --tool=callgrind
--trace-children=yes`` for N1 and N2 round trips of 64-byte messages and
reports (I(N2) - I(N1)) / (N2 - N1): user-space instructions of one echo
(or request),
server and client together (the launcher process is counted too; it only
waits).  Subtract the ``protocol`` row to get a server's cost over the
protocol echo's.

    python benchmarks/runtime_instructions.py                          # all servers, io_uring
    python benchmarks/runtime_instructions.py --servers with_data --no-direct-resume
    python benchmarks/runtime_instructions.py --backend poll

Needs valgrind (Debian: apt-get install valgrind).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys

MSG = b"x" * 64
#: what the http servers' client sends per round trip
GET = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\n\r\n"
EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def child(backend: str, n: int, server: str, client: str, direct: bool) -> None:
    import asyncio

    import ringline
    from _http_servers import hello_floor_protocol
    from echo_server import Echo as EchoProtocol, FloorEcho     # (the harness's echo servers)

    rfd, wfd = os.pipe()        # the worker is a forked process: it reports here
    msg, reply = MSG, len(MSG)
    Base = ringline.Handler
    if server.startswith("http"):
        sys.path.insert(0, EXAMPLES)
        import http_hello
        msg, reply = GET, len(http_hello.KEEP_ALIVE)
        if server == "http":
            Base = http_hello.HelloHandler

    class Echo(Base):
        if server in ("with_data", "forward"):
            async def on_accept(self, conn):
                send = conn.send_nowait if server == "with_data" else conn.forward_recv_buf

                def fn(view):
                    send(view)
                    return len(view)

                while await conn.with_data(fn):
                    pass

        async def on_start(self):
            loop = asyncio.get_running_loop()
            port = PORT
            if server in ("http_protocol", "http_floor"):
                sweeper = http_hello.IdleSweeper(loop, 5.0)
                proto = (http_hello.HelloProtocol if server == "http_protocol"
                         else hello_floor_protocol())
                srv = await loop.create_server(lambda: proto(sweeper), "127.0.0.1", 0)
                port = srv.sockets[0].getsockname()[1]
            elif server in ("protocol", "floor"):
                srv = await loop.create_server(EchoProtocol if server == "protocol" else FloorEcho,
                                               "127.0.0.1", 0)
                port = srv.sockets[0].getsockname()[1]
            if client == "protocol":
                done = loop.create_future()

                class C(asyncio.Protocol):
                    left, got = n, 0

                    def connection_made(self, t):
                        self.t = t
                        t.write(msg)

                    def data_received(self, d):
                        self.got += len(d)
                        while self.got >= reply:
                            self.got -= reply
                            self.left -= 1
                            if self.left:
                                self.t.write(msg)
                            elif not done.done():
                                done.set_result(None)

                t, _ = await loop.create_connection(C, "127.0.0.1", port)
                await done
                t.close()
            else:
                conn = await ringline.connect(("127.0.0.1", port))
                got = 0

                def take(view):
                    nonlocal got
                    got += len(view)
                    return len(view)

                left = n
                conn.send_nowait(msg)
                while left:
                    await conn.with_data(take)
                    while got >= reply and left:
                        got -= reply
                        left -= 1
                        if left:
                            conn.send_nowait(msg)
                conn.close()
            os.write(wfd, b"x")

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    PORT = s.getsockname()[1]
    s.close()
    cfg = ringline.Config(backend=backend, workers=1, worker_mode="process", pin_to_core=False,
                          shutdown_timeout=1.0, direct_resume=direct,
                          fixed_files=int(os.environ.get("RINGLINE_BENCH_FIXED_FILES", "0")))
    sh, _ = ringline.Builder(cfg).bind(("127.0.0.1", PORT)).launch(Echo)
    os.read(rfd, 1)
    sh.shutdown(timeout=5)


def count(backend: str, n: int, server: str, client: str, direct: bool) -> int:
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--trace-children=yes", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", backend, str(n), server, client, str(int(direct))],
        env=env, capture_output=True, text=True)
    found = re.findall(r"Collected : (\d+)", out.stderr)
    if out.returncode != 0 or not found:
        sys.exit(f"callgrind run failed ({backend}, {server}, {n}):\n{out.stderr[-2000:]}")
    return sum(int(x) for x in found)


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6] == "1")
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", choices=("io_uring", "poll"), default="io_uring")
    p.add_argument("--servers", default="protocol,with_data,forward")
    p.add_argument("--client", choices=("protocol", "runtime"), default="protocol")
    p.add_argument("--no-direct-resume", action="store_true")
    p.add_argument("--fixed-files", type=int, default=0,
                   help="the server's Config.fixed_files (direct descriptors; 0 = real fds)")
    p.add_argument("--n1", type=int, default=2000)
    p.add_argument("--n2", type=int, default=8000)
    a = p.parse_args()
    direct = not a.no_direct_resume
    os.environ["RINGLINE_BENCH_FIXED_FILES"] = str(a.fixed_files)
    print(f"python {sys.version.split()[0]}, {a.backend}, client {a.client}, "
          f"direct resume {'on' if direct else 'off'}, fixed_files {a.fixed_files}")
    for server in a.servers.split(","):
        i1 = count(a.backend, a.n1, server, a.client, direct)
        i2 = count(a.backend, a.n2, server, a.client, direct)
        print(f"{server:10} {(i2 - i1) / (a.n2 - a.n1):,.0f} instructions per echo", flush=True)


if __name__ == "__main__":
    main()
