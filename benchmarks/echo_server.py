#!/usr/bin/env python3
"""TCP echo server on a chosen event loop and asyncio API.

    python benchmarks/echo_server.py --loop ringline --api sock --port 0

--loop  asyncio | uvloop | rloop | ringline | MODULE:FACTORY
--api   sock      loop.sock_accept; a task per connection doing loop.sock_recv /
                  loop.sock_sendall
        protocol  loop.create_server with an asyncio.Protocol that writes back in
                  data_received
        streams   asyncio.start_server; reader.read / writer.write / await writer.drain()
        buffered  loop.create_server with an asyncio.BufferedProtocol (one 64 KiB
                  buffer per connection)
        tls       the protocol server over TLS (loop.create_server(ssl=...)); the
                  certificate is --certfile (default: a self-signed one made with the
                  openssl command in benchmarks/.build)
        tls-streams  asyncio.start_server(ssl=...) with read / write / drain
        floor     the protocol server with each read handed to a coroutine per
                  connection, resumed from data_received inside a task switch
                  (_common.CoroutineFloor): the least a coroutine-per-connection API,
                  such as the runtime API's ``await conn.with_data(fn)``, costs
        udp       loop.create_datagram_endpoint with a DatagramProtocol that sends every
                  datagram back to where it came from

Once listening it prints "READY port=P loop=<module.Class> api=A pid=N" and serves until
SIGTERM or SIGINT.  TCP_NODELAY is set on every accepted connection by the server itself,
so loops that do not set it are not penalised by Nagle's algorithm.
"""
import argparse
import asyncio
import functools
import os
import signal
import socket
import sys

import _common

READ_SIZE = 64 * 1024


def nodelay(sock):
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # not TCP, or a transport that exposes no real socket


def peer_gone(exc):
    # rloop reports some socket errors as RuntimeError("... (os error N)")
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "os error" in str(exc))


# ----------------------------------------------------------------------------- sock
async def sock_echo(loop, conn):
    with conn:
        try:
            while data := await loop.sock_recv(conn, READ_SIZE):
                await loop.sock_sendall(conn, data)
        except Exception as exc:  # noqa: BLE001
            if not peer_gone(exc):
                raise


async def serve_sock(loop, host, port):
    listener = socket.create_server((host, port), backlog=4096, reuse_port=False)
    listener.setblocking(False)
    tasks = set()  # the loop keeps only weak references to tasks

    async def accept_forever():
        while True:
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            nodelay(conn)
            task = loop.create_task(sock_echo(loop, conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    tasks.add(loop.create_task(accept_forever()))
    return listener.getsockname()[1]


# ----------------------------------------------------------------------------- protocols
class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        self.transport.write(data)


class FloorEcho(_common.CoroutineFloor, asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        nodelay(transport.get_extra_info("socket"))
        self.start_reader(asyncio.get_running_loop())

    async def reader(self):
        write, next_read = self.transport.write, _common.next_read
        while True:
            write(await next_read())

    def connection_lost(self, exc):
        self.stop_reader()


class BufferedEcho(asyncio.BufferedProtocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = bytearray(READ_SIZE)
        nodelay(transport.get_extra_info("socket"))

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        # a copy: the transport may keep the data queued while the buffer is refilled
        self.transport.write(self.buffer[:nbytes])


async def serve_protocol(loop, host, port, protocol):
    server = await loop.create_server(protocol, host, port, backlog=4096, reuse_address=True)
    return server.sockets[0].getsockname()[1]


# ----------------------------------------------------------------------------- streams
async def stream_echo(reader, writer):
    nodelay(writer.get_extra_info("socket"))
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except Exception as exc:  # noqa: BLE001
        if not peer_gone(exc):
            raise
    finally:
        writer.close()


async def serve_streams(loop, host, port):
    server = await asyncio.start_server(stream_echo, host, port, backlog=4096, reuse_address=True)
    return server.sockets[0].getsockname()[1]


# ----------------------------------------------------------------------------- TLS
CERT_DIR = os.path.join(_common.HERE, ".build")
CERTFILE = os.path.join(CERT_DIR, "echo-cert.pem")


def ensure_cert(path=CERTFILE):
    """A self-signed certificate + key (one PEM file) for localhost, made once."""
    if os.path.exists(path):
        return path
    import subprocess
    import tempfile
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
        key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "crt.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650",
                        "-subj", "/CN=localhost", "-keyout", key, "-out", crt],
                       check=True, capture_output=True)
        both = os.path.join(tmp, "both.pem")
        with open(both, "wb") as out:
            for part in (crt, key):
                with open(part, "rb") as f:
                    out.write(f.read())
        os.replace(both, path)      # atomic: servers started at once all see a whole file
    return path


def server_ssl_context(certfile=None):
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certfile or ensure_cert())
    return ctx


async def serve_tls(loop, host, port, certfile=None):
    server = await loop.create_server(Echo, host, port, backlog=4096, reuse_address=True,
                                      ssl=server_ssl_context(certfile))
    return server.sockets[0].getsockname()[1]


async def serve_tls_streams(loop, host, port, certfile=None):
    server = await asyncio.start_server(stream_echo, host, port, backlog=4096, reuse_address=True,
                                        ssl=server_ssl_context(certfile))
    return server.sockets[0].getsockname()[1]


# ----------------------------------------------------------------------------- UDP
class DatagramEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def serve_udp(loop, host, port):
    transport, _ = await loop.create_datagram_endpoint(DatagramEcho, local_addr=(host, port))
    sock = transport.get_extra_info("socket")
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):   # same buffers for every loop
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        except (OSError, AttributeError):
            pass
    return transport.get_extra_info("sockname")[1]


SERVE = {
    "sock": serve_sock,
    "protocol": lambda loop, host, port: serve_protocol(loop, host, port, Echo),
    "buffered": lambda loop, host, port: serve_protocol(loop, host, port, BufferedEcho),
    "floor": lambda loop, host, port: serve_protocol(loop, host, port, FloorEcho),
    "streams": serve_streams,
    "tls": serve_tls,
    "tls-streams": serve_tls_streams,
    "udp": serve_udp,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--loop", default="asyncio", help="asyncio | uvloop | rloop | ringline | MODULE:FACTORY")
    ap.add_argument("--api", default="sock", choices=sorted(SERVE))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = any free port (printed in the READY line)")
    ap.add_argument("--no-malloc-prime", action="store_true", help="see _common.prime_malloc")
    ap.add_argument("--certfile", help="tls APIs: PEM file with certificate and key "
                                       "(default: a self-signed one in benchmarks/.build)")
    args = ap.parse_args()

    if not args.no_malloc_prime:
        _common.prime_malloc()
    loop = _common.new_loop(args.loop)
    asyncio.set_event_loop(loop)
    serve = SERVE[args.api]
    if args.api.startswith("tls"):
        serve = functools.partial(serve, certfile=args.certfile)
    port = loop.run_until_complete(serve(loop, args.host, args.port))

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, loop.stop)
        except (NotImplementedError, RuntimeError, AttributeError):
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(loop.stop))

    print(f"READY port={port} loop={_common.loop_class_name(loop)} api={args.api} pid={os.getpid()}", flush=True)
    try:
        loop.run_forever()
    finally:
        # Leave without closing the loop: tearing down hundreds of half-closed
        # connections tells nothing about the benchmark and can hang a young loop.
        sys.stdout.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
