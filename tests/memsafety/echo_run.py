"""A short echo run for tests/valgrind.py: every receive path of the core
once, small enough to finish under valgrind.

For each backend: a Protocol server, a BufferedProtocol server, an
asyncio.start_server (streams) server and a sock_* server, each with a few
concurrent clients (asyncio streams, on the same loop) sending messages from
1 byte to 300 KB and checking the echo; a UDP echo; on io_uring, the same TCP
run again without the provided-buffer ring (single-shot receives into
malloc'd buffers: the path RL_KERNEL_WROTE annotates); a file written, read
back and stat'ed with ringline.fs; and the runtime API
(Builder, a thread worker, with_data + send_nowait) with blocking clients.

    PYTHONPATH=<the build to test> python tests/memsafety/echo_run.py
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time

import ringline
from ringline._core import core

SIZES = (1, 100, 4096, 65536, 300_000)
CLIENTS = 3


def payload(i, n):
    return bytes((i * 7 + k) % 251 for k in range(min(n, 251))) * (n // 251 + 1)


class EchoProto(asyncio.Protocol):
    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)


class EchoBuffered(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.t = transport
        self.buf = bytearray(65536)

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, n):
        self.t.write(bytes(self.buf[:n]))


async def stream_handler(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def client(port, i):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for n in SIZES:
        msg = payload(i, n)[:n]
        writer.write(msg)
        got = await reader.readexactly(n)
        assert got == msg, f"client {i}: echo of {n} bytes differs"
    writer.close()
    await writer.wait_closed()


async def tcp_run(api):
    loop = asyncio.get_running_loop()
    if api == "protocol":
        server = await loop.create_server(EchoProto, "127.0.0.1", 0)
    elif api == "buffered":
        server = await loop.create_server(EchoBuffered, "127.0.0.1", 0)
    elif api == "streams":
        server = await asyncio.start_server(stream_handler, "127.0.0.1", 0)
    else:
        server = None
    if server is not None:
        port = server.sockets[0].getsockname()[1]
        await asyncio.gather(*(client(port, i) for i in range(CLIENTS)))
        server.close()
        await server.wait_closed()
        return
    # sock_* API
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    lsock.setblocking(False)
    port = lsock.getsockname()[1]

    async def serve_one():
        conn, _ = await loop.sock_accept(lsock)
        with conn:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)

    servers = [asyncio.ensure_future(serve_one()) for _ in range(CLIENTS)]
    await asyncio.gather(*(client(port, i) for i in range(CLIENTS)))
    await asyncio.gather(*servers)
    lsock.close()


async def udp_run():
    loop = asyncio.get_running_loop()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, t):
            self.t = t

        def datagram_received(self, data, addr):
            self.t.sendto(data, addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self):
            self.q = asyncio.Queue()

        def datagram_received(self, data, addr):
            self.q.put_nowait(data)

    st, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    ct, cp = await loop.create_datagram_endpoint(Client, remote_addr=st.get_extra_info("sockname"))
    for n in (1, 512, 8192, 60000):
        msg = payload(n, n)[:n]
        ct.sendto(msg)
        got = await asyncio.wait_for(cp.q.get(), 30)
        assert got == msg, f"udp echo of {n} bytes differs"
    ct.close()
    st.close()


class RuntimeEcho(ringline.Handler):
    async def on_accept(self, conn):
        def echo(view):
            conn.send_nowait(view)
            return len(view)
        while await conn.with_data(echo):
            pass


async def file_run():
    import tempfile
    import ringline.fs
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f")
        data = payload(3, 300_000)
        await ringline.fs.write_bytes(path, data)
        assert await ringline.fs.read_bytes(path) == data, "file read back differs"
        assert (await ringline.fs.stat(path)).st_size == len(data)


def runtime_run(backend):
    b = ringline.Builder(ringline.Config(backend=backend, workers=1, worker_mode="thread",
                                         shutdown_timeout=1.0, pin_to_core=False))
    b.bind(("127.0.0.1", 0))
    sh, workers = b.launch(RuntimeEcho)
    try:
        addr = sh.address()
        for i in range(CLIENTS):
            with socket.create_connection(addr, timeout=60) as s:
                for n in SIZES:
                    msg = payload(i, n)[:n]
                    s.sendall(msg)
                    got = bytearray()
                    while len(got) < n:
                        chunk = s.recv(n - len(got))
                        assert chunk, "runtime echo: EOF"
                        got += chunk
                    assert got == msg, f"runtime echo of {n} bytes differs"
    finally:
        sh.shutdown(timeout=60)


def main() -> int:
    t0 = time.monotonic()
    for backend in ringline.available_backends():
        rings = [None]
        if backend == "io_uring":
            rings.append((0, 131072))       # no buffer ring: single-shot receives
        for ring in rings:
            old = core.set_recv_buffers(*ring) if ring else None
            try:
                for api in ("protocol", "buffered", "streams", "sock"):
                    loop = ringline.new_event_loop(backend=backend)
                    try:
                        loop.run_until_complete(asyncio.wait_for(tcp_run(api), 600))
                    finally:
                        loop.close()
                    print(f"echo ok: {backend} {api}" + (" (no buffer ring)" if ring else ""),
                          flush=True)
            finally:
                if old:
                    core.set_recv_buffers(*old)
        loop = ringline.new_event_loop(backend=backend)
        try:
            loop.run_until_complete(asyncio.wait_for(udp_run(), 600))
        finally:
            loop.close()
        print(f"echo ok: {backend} udp", flush=True)
        loop = ringline.new_event_loop(backend=backend)
        try:
            loop.run_until_complete(file_run())
        finally:
            loop.close()
        print(f"ok: {backend} file write/read/stat", flush=True)
        runtime_run(backend)
        print(f"echo ok: {backend} runtime API (with_data)", flush=True)
    print(f"echo run done in {time.monotonic() - t0:.1f} s (pid {os.getpid()})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
