"""TLS transports on every backend (and on stock asyncio, to compare).

ringline compiles asyncio SSLProtocol's per-record path (src/ringline/_core/
transport/tls.pxi); these tests aim at where that path hands over to asyncio's
code: flow control both ways, pause_reading inside data_received, records
split across receives and many records in one, BufferedProtocol apps, writes
of every bytes-like type, close_notify, start_tls, and a closed session.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl

import pytest
from test.test_asyncio import utils as test_utils

from _helpers import JitteryEcho, write_random_chunks


def _contexts():
    server = test_utils.simple_server_sslcontext()
    client = test_utils.simple_client_sslcontext()
    return server, client


async def _serve(loop, factory, ssl=None):
    """A server on 127.0.0.1 making protocols with factory; returns the server,
    its port and the list of protocols it made."""
    made = []

    def make():
        made.append(factory())
        return made[-1]

    srv = await loop.create_server(make, "127.0.0.1", 0, ssl=ssl)
    return srv, srv.sockets[0].getsockname()[1], made


def test_randomized_tls_echo(loop, run):
    """40 TLS clients, chunks of 1 B .. 100 KiB with random drains, a server
    pausing and resuming reading at random inside data_received: every byte
    back, in order (hash)."""
    server_ctx, client_ctx = _contexts()
    rnd = random.Random(20261127)

    async def client(port, crnd):
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        sent, got = hashlib.sha256(), hashlib.sha256()
        n_sent = await write_random_chunks(w, crnd, crnd.randint(5, 20), sent)
        await w.drain()
        n = 0
        while n < n_sent:
            data = await r.read(crnd.choice([1, 100, 4096, 65536]))
            assert data, "EOF before the echo was complete"
            got.update(data)
            n += len(data)
        w.close()
        await w.wait_closed()
        assert (n, got.digest()) == (n_sent, sent.digest())

    async def main():
        srv, port, _ = await _serve(loop, lambda: JitteryEcho(random.Random(rnd.random())),
                                    server_ctx)
        await asyncio.gather(*(client(port, random.Random(rnd.random())) for _ in range(40)))
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=60)


def test_tls_flow_control_both_ways(loop, run):
    """A server writing 8 MiB to a client that is not reading: the server's
    app protocol is paused at the high-water mark, the paused client gets
    nothing, and once it resumes it gets every byte and the server finishes."""
    server_ctx, client_ctx = _contexts()
    total = 8 << 20

    class Writer(asyncio.Protocol):
        def __init__(self):
            self.paused = self.resumed = 0
            self.done = asyncio.get_running_loop().create_future()

        def connection_made(self, t):
            self.t = t
            t.set_write_buffer_limits(high=64 * 1024)
            self.left = total
            self._push()

        def _push(self):
            while self.left and not self.paused_now():
                n = min(self.left, 256 * 1024)
                self.t.write(b"z" * n)
                self.left -= n
            if not self.left and not self.done.done():
                self.done.set_result(None)

        def paused_now(self):
            return self.paused > self.resumed

        def pause_writing(self):
            self.paused += 1

        def resume_writing(self):
            self.resumed += 1
            self._push()

    class Reader(asyncio.Protocol):
        def __init__(self):
            self.n = 0
            self.all = asyncio.get_running_loop().create_future()

        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            assert set(data) == {ord("z")}
            self.n += len(data)
            if self.n >= total and not self.all.done():
                self.all.set_result(None)

    async def main():
        srv, port, writers = await _serve(loop, Writer, server_ctx)
        tr, rd = await loop.create_connection(Reader, "127.0.0.1", port, ssl=client_ctx)
        tr.pause_reading()
        await asyncio.sleep(0.2)
        w = writers[0]
        # Paused at the high-water mark.  (Whether it is still paused now
        # depends on how much the client side buffered below TLS: on io_uring
        # a paused transport keeps what its multishot recv had already taken,
        # up to the loop's buffer ring, 8 MiB.)
        assert w.paused >= 1
        assert rd.n == 0
        tr.resume_reading()
        await asyncio.wait_for(rd.all, 20)
        await asyncio.wait_for(w.done, 20)
        assert rd.n == total
        assert w.resumed >= 1
        tr.close()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=60)


def test_tls_buffered_protocol_app(loop, run):
    """An asyncio.BufferedProtocol behind TLS gets plaintext in its own
    buffer, small buffers included."""
    server_ctx, client_ctx = _contexts()
    payload = random.Random(3).randbytes(300_000)

    class Buffered(asyncio.BufferedProtocol):
        def __init__(self):
            # A memoryview: asyncio's _do_read__buffered slices the buffer
            # it got, and a bytearray slice would be a copy (3.11).
            self.buf = memoryview(bytearray(777))
            self.got = bytearray()
            self.done = asyncio.get_running_loop().create_future()

        def get_buffer(self, sizehint):
            return self.buf

        def buffer_updated(self, nbytes):
            self.got += self.buf[:nbytes]
            if len(self.got) >= len(payload) and not self.done.done():
                self.done.set_result(None)

    async def main():
        srv, port, protos = await _serve(loop, Buffered, server_ctx)
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        w.write(payload)
        await w.drain()
        await asyncio.wait_for(protos[0].done, 10)
        assert bytes(protos[0].got) == payload
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_tls_write_types_and_writes_after_close(loop, run):
    """bytes, bytearray and memoryview all go out (the latter two copied at
    write time, as asyncio does); anything else is TypeError with asyncio's
    message; writes after close() are dropped, not raised."""
    server_ctx, client_ctx = _contexts()

    async def main():
        got = bytearray()
        done = loop.create_future()

        class Sink(asyncio.Protocol):
            def data_received(self, data):
                got.extend(data)
                if len(got) >= 9 and not done.done():
                    done.set_result(None)

        srv, port, _ = await _serve(loop, Sink, server_ctx)
        tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             ssl=client_ctx)
        ba = bytearray(b"bbb")
        tr.write(b"aaa")
        tr.write(ba)
        ba[:] = b"XXX"
        tr.write(memoryview(b"ccc"))
        tr.write(b"")
        with pytest.raises(TypeError, match="data: expecting a bytes-like instance, got str"):
            tr.write("text")
        await asyncio.wait_for(done, 5)
        assert bytes(got) == b"aaabbbccc"
        tr.close()
        tr.write(b"after close")        # dropped (asyncio logs after a threshold)
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_tls_close_notify_reaches_peer(loop, run):
    """The client's close() sends close_notify: the server protocol sees
    eof_received, then connection_lost(None); the client's own protocol
    gets connection_lost(None)."""
    server_ctx, client_ctx = _contexts()

    async def main():
        srv, port, servers = await _serve(loop, JitteryEcho, server_ctx)
        client_lost = loop.create_future()

        class Client(asyncio.Protocol):
            def connection_lost(self, exc):
                client_lost.set_result(exc)

        tr, _ = await loop.create_connection(Client, "127.0.0.1", port, ssl=client_ctx)
        tr.write(b"hello")
        await asyncio.sleep(0.05)
        tr.close()
        assert await asyncio.wait_for(servers[0].lost, 10) is None
        assert servers[0].eof
        assert await asyncio.wait_for(client_lost, 10) is None
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_start_tls_upgrades_a_stream(loop, run):
    """A plain connection upgraded with StreamWriter.start_tls on the client
    and loop.start_tls on the server carries data both ways."""
    server_ctx, client_ctx = _contexts()

    async def main():
        upgraded = loop.create_future()

        class Upgrader(asyncio.Protocol):
            def connection_made(self, t):
                self.t = t

            def data_received(self, data):
                assert data == b"STARTTLS\n"
                self.t.write(b"OK\n")
                loop.create_task(self._upgrade())

            async def _upgrade(self):
                # Data can arrive before start_tls() returns (asyncio delivers
                # it as the handshake completes): keep it until then.
                echo = JitteryEcho()
                echo.t = None
                orig = echo.data_received
                early = []

                def data_received(data):
                    if echo.t is None:
                        early.append(data)
                    else:
                        orig(data)
                echo.data_received = data_received
                tls = await loop.start_tls(self.t, echo, server_ctx, server_side=True)
                echo.t = tls
                for data in early:
                    orig(data)
                upgraded.set_result(tls)

        srv, port, _ = await _serve(loop, Upgrader)
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"STARTTLS\n")
        assert await r.readline() == b"OK\n"
        await w.start_tls(client_ctx, server_hostname="localhost")
        assert w.get_extra_info("ssl_object") is not None
        w.write(b"x" * 50_000)
        assert await r.readexactly(50_000) == b"x" * 50_000
        tls = await upgraded
        assert isinstance(tls.get_extra_info("ssl_object"), ssl.SSLObject)
        w.close()
        await w.wait_closed()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_tls_data_received_rebound_and_saved_write(loop, run):
    """A protocol that rebinds data_received gets data on the new method (asyncio
    looks it up per delivery); a write() bound method kept after its transport
    was closed and dropped is a silent no-op, as on asyncio."""
    server_ctx, client_ctx = _contexts()

    async def main():
        got = loop.create_future()

        class Switching(asyncio.Protocol):
            def connection_made(self, t):
                self.data_received = self.alt

            def data_received(self, data):
                got.set_result(("orig", data))

            def alt(self, data):
                if not got.done():
                    got.set_result(("alt", data))

        class Hello(asyncio.Protocol):
            def connection_made(self, t):
                t.write(b"hello")

        srv, port, _ = await _serve(loop, Hello, server_ctx)
        tr, pr = await loop.create_connection(Switching, "127.0.0.1", port, ssl=client_ctx)
        assert await asyncio.wait_for(got, 5) == ("alt", b"hello")
        write = tr.write
        tr.close()
        await asyncio.sleep(0.05)
        del tr, pr
        write(b"late")                  # dropped, no exception
        with pytest.raises(TypeError):
            write("text")
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_tls_garbage_after_handshake_fails_only_that_connection(loop, run):
    """A peer that sends bytes that are not TLS records once the session is
    up: that connection is lost with the ssl.SSLError asyncio reports, the
    exception handler is not bothered (asyncio passes OSError subclasses
    quietly), and another connection on the same server keeps echoing."""
    import os
    import socket
    server_ctx, client_ctx = _contexts()

    async def main():
        srv, port, made = await _serve(loop, JitteryEcho, server_ctx)
        handler_calls = []
        loop.set_exception_handler(lambda l, ctx: handler_calls.append(ctx))

        def rogue():
            raw = socket.create_connection(("127.0.0.1", port))
            tls = client_ctx.wrap_socket(raw, server_hostname="localhost")
            tls.sendall(b"ping")
            assert tls.recv(4) == b"ping"
            dup = socket.socket(fileno=os.dup(tls.fileno()))
            dup.sendall(b"\x17\x03\x03\x00\x10" + b"\xff" * 16)   # a forged record
            dup.sendall(os.urandom(200))
            dup.close()
            return tls

        t = await asyncio.to_thread(rogue)
        exc = await asyncio.wait_for(made[0].lost, 10)
        assert isinstance(exc, ssl.SSLError), exc
        assert handler_calls == []
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        w.write(b"still here")
        assert await r.readexactly(10) == b"still here"
        w.close()
        await w.wait_closed()
        t.close()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=30)


def test_closed_client_releases_sslcontext(loop):
    # CPython's test_ssl.test_create_connection_memory_leak, as 3.12+ runs it
    # (wait_for awaits the coroutine in the caller's task): the moment
    # run_until_complete returns, nothing keeps the client's SSLContext, not
    # even the transport the app protocol kept.  The client's close_notify
    # is still queued when it closes, so connection_lost has to come as soon
    # as that send completes, and the compiled TLS path must let go of the
    # session at connection_lost.
    import socket
    import threading
    import weakref
    server_ctx, client_ctx = _contexts()
    hello = b"1" * 1000
    lsock = socket.create_server(("127.0.0.1", 0))
    served = []

    def serve():
        s, _ = lsock.accept()
        s.settimeout(10)
        s = server_ctx.wrap_socket(s, server_side=True)
        s.sendall(b"O")
        got = b""
        while len(got) < len(hello):
            got += s.recv(65536)
        s.unwrap()
        s.close()
        served.append(len(got))

    class Client(asyncio.Protocol):
        def __init__(self, on_data, on_eof):
            self.on_data, self.on_eof = on_data, on_eof

        def connection_made(self, tr):
            self.tr = tr                     # the app keeps its transport

        def data_received(self, data):
            self.on_data.set_result(data)

        def eof_received(self):
            self.on_eof.set_result(True)

    async def client():
        on_data, on_eof = loop.create_future(), loop.create_future()
        tr, proto = await loop.create_connection(lambda: Client(on_data, on_eof),
                                                 *lsock.getsockname(), ssl=client_ctx)
        assert await on_data == b"O"
        tr.write(hello)
        await on_eof
        tr.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        loop.run_until_complete(asyncio.wait_for(client(), 30))
    finally:
        t.join(10)
        lsock.close()
    assert served == [len(hello)]
    ref = weakref.ref(client_ctx)
    del client_ctx
    assert ref() is None
