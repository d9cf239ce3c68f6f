"""Context variables in protocol callbacks: asyncio's rule, on every backend.

asyncio runs a transport's callbacks in contexts copied from the task that
made it: connection_made and connection_lost are call_soon'd (a copy each),
the reads run in one copy taken when the transport registered its reader,
and a server accepts in the context of the create_server caller, so the
protocol factory and the accepted transport's callbacks see that.  Every
test here sets a ContextVar in that task and checks what one callback saw;
a value set inside data_received must not reach the task or the code that
runs the loop.  The same tests pass on stock asyncio
(RINGLINE_TEST_LOOP=asyncio), which is what makes them the specification.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import socket
import tempfile

import pytest
from test.test_asyncio import utils as test_utils

cv = contextvars.ContextVar("cv", default="outer")      # set by the creating task
leak = contextvars.ContextVar("leak", default=None)     # set inside data_received

TOTAL = 2 << 20         # what the subject writes back: enough to pause writing
CHUNK = 64 * 1024

STREAM_CALLBACKS = {
    "Protocol": ("factory", "connection_made", "data_received", "pause_writing",
                 "resume_writing", "eof_received", "connection_lost"),
    "BufferedProtocol": ("factory", "connection_made", "get_buffer", "buffer_updated",
                         "pause_writing", "resume_writing", "eof_received", "connection_lost"),
}


@pytest.fixture
def sockdir():
    # Short: a Unix socket path is at most 107 bytes.
    d = tempfile.mkdtemp(prefix="rlcv", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_outside(run, coro):
    """run(coro) in a copy of the current context: returns that copy, so a
    value set by a callback that ran outside any task shows there (and not
    in the next test)."""
    ctx = contextvars.copy_context()
    ctx.run(run, coro)
    return ctx


class Recorder:
    """What each callback saw of cv."""

    def __init__(self):
        self.seen = {}
        self.lost = asyncio.get_running_loop().create_future()

    def see(self, name):
        self.seen.setdefault(name, []).append(cv.get())


class _Subject:
    """Echoes nothing: on its first bytes it writes TOTAL bytes in chunks
    (pausing writing on the way), sets `leak`, and closes on EOF."""

    def __init__(self, rec):
        self.rec = rec
        self.answered = False

    def connection_made(self, transport):
        self.rec.see("connection_made")
        self.t = transport
        _small_buffers(transport, socket.SO_SNDBUF)

    def _got(self):
        leak.set("inner")
        if not self.answered:
            self.answered = True
            for _ in range(TOTAL // CHUNK):
                self.t.write(b"z" * CHUNK)

    def pause_writing(self):
        self.rec.see("pause_writing")

    def resume_writing(self):
        self.rec.see("resume_writing")

    def eof_received(self):
        self.rec.see("eof_received")

    def connection_lost(self, exc):
        self.rec.see("connection_lost")
        if not self.rec.lost.done():
            self.rec.lost.set_result(exc)


class SubjectProtocol(_Subject, asyncio.Protocol):
    def data_received(self, data):
        self.rec.see("data_received")
        self._got()


class SubjectBuffered(_Subject, asyncio.BufferedProtocol):
    def __init__(self, rec):
        super().__init__(rec)
        self.buf = memoryview(bytearray(65536))

    def get_buffer(self, sizehint):
        self.rec.see("get_buffer")
        return self.buf

    def buffer_updated(self, nbytes):
        self.rec.see("buffer_updated")
        self._got()


def _small_buffers(transport, option):
    # Small kernel buffers on both ends, so that TOTAL bytes cannot all go
    # into the kernel at once and the subject's writing is paused.
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, option, 65536)


async def peer(reader, writer):
    """The other end, in a context of its own: asks, reads it all, closes."""
    cv.set("peer")
    _small_buffers(writer, socket.SO_RCVBUF)
    writer.write(b"go")
    n = 0
    while n < TOTAL:
        data = await reader.read(1 << 20)
        assert data, f"EOF after {n} bytes"
        n += len(data)
    writer.close()
    await writer.wait_closed()


def _stream_cases():
    for kind, callbacks in STREAM_CALLBACKS.items():
        for callback in callbacks:
            yield kind, callback


@pytest.mark.parametrize("role", ["client", "server", "accepted"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize("family", ["tcp", "unix"])
@pytest.mark.parametrize("kind,callback", list(_stream_cases()))
def test_stream_callback_context(loop, run, sockdir, kind, callback, family, tls, role):
    """A stream protocol's `callback` sees the value the creating task set:
    client (create_connection / create_unix_connection), server
    (create_server / create_unix_server, the factory included) and accepted
    socket (connect_accepted_socket), plain and TLS."""
    server_ssl = test_utils.simple_server_sslcontext() if tls else None
    client_ssl = test_utils.simple_client_sslcontext() if tls else None
    hostname = "localhost" if tls else None
    path = os.path.join(sockdir, "s")
    proto_cls = SubjectProtocol if kind == "Protocol" else SubjectBuffered

    async def main():
        cv.set("task")
        rec = Recorder()

        def factory():
            rec.see("factory")
            return proto_cls(rec)

        async def serve_peer(reader, writer):
            await peer(reader, writer)

        if role == "client":
            if family == "tcp":
                srv = await asyncio.start_server(serve_peer, "127.0.0.1", 0, ssl=server_ssl)
                port = srv.sockets[0].getsockname()[1]
                await loop.create_connection(factory, "127.0.0.1", port, ssl=client_ssl)
            else:
                srv = await asyncio.start_unix_server(serve_peer, path, ssl=server_ssl)
                await loop.create_unix_connection(factory, path, ssl=client_ssl,
                                                  server_hostname=hostname)
            await rec.lost
            srv.close()
            await srv.wait_closed()
        elif role == "server":
            if family == "tcp":
                srv = await loop.create_server(factory, "127.0.0.1", 0, ssl=server_ssl)
                port = srv.sockets[0].getsockname()[1]
                opener = asyncio.open_connection("127.0.0.1", port, ssl=client_ssl)
            else:
                srv = await loop.create_unix_server(factory, path, ssl=server_ssl)
                opener = asyncio.open_unix_connection(path, ssl=client_ssl,
                                                      server_hostname=hostname)

            async def client():
                cv.set("peer")
                await peer(*await opener)

            await asyncio.gather(client(), rec.lost)
            srv.close()
            await srv.wait_closed()
        else:
            if family == "tcp":
                with socket.create_server(("127.0.0.1", 0)) as lsock:
                    csock = socket.create_connection(lsock.getsockname())
                    ssock, _ = lsock.accept()
            else:
                ssock, csock = socket.socketpair()

            async def client():
                cv.set("peer")
                await peer(*await asyncio.open_connection(
                    sock=csock, ssl=client_ssl, server_hostname=hostname))

            # Started first: with TLS, connect_accepted_socket returns
            # after the handshake.
            peer_task = asyncio.ensure_future(client())
            await loop.connect_accepted_socket(factory, ssock, ssl=server_ssl)
            await asyncio.gather(peer_task, rec.lost)
        assert leak.get() is None, "a value set in data_received reached the task"
        return rec.seen

    seen = {}
    ctx = run_outside(run, _into(seen, main()))
    assert ctx.run(leak.get) is None, "a value set in data_received reached the loop's caller"
    assert ctx.run(cv.get) == "outer"
    assert seen.get(callback), f"{callback} was not called (saw {sorted(seen)})"
    assert set(seen[callback]) == {"task"}, seen[callback]


async def _into(out, coro):
    out.update(await coro)


def test_stream_context_per_connection(loop, run):
    """One context per accepted connection, kept for all its reads: a value
    data_received sets is seen by that connection's later callbacks, not by
    another connection's."""

    class Proto(asyncio.Protocol):
        def __init__(self, log, lost):
            self.log = log
            self.lost = lost

        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.log.append(("data", data, leak.get()))
            leak.set(data)

        def eof_received(self):
            self.log.append(("eof", leak.get()))

        def connection_lost(self, exc):
            self.lost.set_result(None)

    async def main():
        cv.set("task")
        logs = []
        losts = []

        def factory():
            logs.append([])
            losts.append(loop.create_future())
            return Proto(logs[-1], losts[-1])

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        for name in (b"A", b"B"):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(name)
            await asyncio.sleep(0.05)
            w.write_eof()
            await losts[-1]
            w.close()
            await w.wait_closed()
        srv.close()
        await srv.wait_closed()
        return logs

    logs = run(main())
    assert logs == [[("data", b"A", None), ("eof", b"A")],
                    [("data", b"B", None), ("eof", b"B")]]


@pytest.mark.ringline_only
def test_stream_context_kept_across_resume_reading(loop, run):
    """After pause_reading() and a resume_reading() from another context,
    what was held while paused and what comes later is delivered in the
    transport's own context (uvloop's rule; asyncio's selector loop
    registers its reader again, in the resumer's context)."""

    class Proto(asyncio.Protocol):
        def __init__(self):
            self.seen = []
            self.paused = loop.create_future()
            self.lost = loop.create_future()

        def connection_made(self, t):
            self.t = t

        def data_received(self, data):
            self.seen.append(("data", cv.get()))
            if not self.paused.done():
                self.t.pause_reading()
                self.paused.set_result(None)

        def eof_received(self):
            self.seen.append(("eof", cv.get()))

        def connection_lost(self, exc):
            self.lost.set_result(None)

    async def main():
        cv.set("task")
        a, b = socket.socketpair()
        with b:
            t, p = await loop.connect_accepted_socket(Proto, a)
            b.sendall(b"x")
            await p.paused
            b.sendall(b"y" * 1000)
            b.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0.05)      # taken by the transport, or still in the kernel
            other = contextvars.Context()
            other.run(cv.set, "resumer")
            other.run(t.resume_reading)
            await p.lost
        return p.seen

    seen = run(main())
    assert seen[0] == ("data", "task") and seen[-1] == ("eof", "task"), seen
    assert {v for _, v in seen} == {"task"}, seen


# ---- datagram endpoints ---------------------------------------------------------------

class DgramSubject(asyncio.DatagramProtocol):
    def __init__(self, rec):
        self.rec = rec
        self.got = asyncio.get_running_loop().create_future()
        self.err = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.rec.see("connection_made")

    def datagram_received(self, data, addr):
        self.rec.see("datagram_received")
        leak.set("inner")
        if not self.got.done():
            self.got.set_result(data)

    def error_received(self, exc):
        self.rec.see("error_received")
        if not self.err.done():
            self.err.set_result(exc)

    def connection_lost(self, exc):
        self.rec.see("connection_lost")
        if not self.rec.lost.done():
            self.rec.lost.set_result(exc)


@pytest.mark.parametrize("family", ["udp", "unix"])
@pytest.mark.parametrize("callback", ["connection_made", "datagram_received", "connection_lost"])
def test_datagram_callback_context(loop, run, sockdir, family, callback):
    """A datagram endpoint's callbacks see the value the creating task set,
    whoever sent the datagram."""
    path = os.path.join(sockdir, "d")

    async def main():
        cv.set("task")
        rec = Recorder()
        if family == "udp":
            t, p = await loop.create_datagram_endpoint(
                lambda: DgramSubject(rec), local_addr=("127.0.0.1", 0))
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        else:
            t, p = await loop.create_datagram_endpoint(
                lambda: DgramSubject(rec), local_addr=path, family=socket.AF_UNIX)
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sender:
            contextvars.Context().run(sender.sendto, b"hello", t.get_extra_info("sockname"))
            assert await p.got == b"hello"
        t.close()
        await rec.lost
        assert leak.get() is None
        return rec.seen

    seen = {}
    ctx = run_outside(run, _into(seen, main()))
    assert ctx.run(leak.get) is None
    assert seen.get(callback) and set(seen[callback]) == {"task"}, seen


def test_datagram_error_received_context(loop, run):
    """error_received for an ICMP error the receive side reports sees the
    creating task's value, not the sender's."""

    async def main():
        cv.set("task")
        rec = Recorder()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()           # nobody listens there after this
        t, p = await loop.create_datagram_endpoint(
            lambda: DgramSubject(rec), remote_addr=closed)
        sent = contextvars.Context()
        sent.run(cv.set, "sender")
        sent.run(t.sendto, b"x")
        exc = await asyncio.wait_for(p.err, 5)
        assert isinstance(exc, ConnectionRefusedError)
        t.close()
        await rec.lost
        return rec.seen

    seen = {}
    run_outside(run, _into(seen, main()))
    assert seen.get("error_received") and set(seen["error_received"]) == {"task"}, seen
