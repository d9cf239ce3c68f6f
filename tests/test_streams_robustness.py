"""Stream transports under stress and misuse (issue 3): peer resets,
half-close, large transfers, many connections, slow readers and flow
control, a tiny provided-buffer ring, accept under EMFILE, and every
transport method after close() compared with asyncio's.

Run on every ringline backend and, with RINGLINE_TEST_LOOP=asyncio, on stock
asyncio (the reference).  Traffic is loopback only; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import random
import resource
import socket
import struct

import pytest

import _loops
from _helpers import JitteryEcho, recorder, wait_until, write_random_chunks

BIG = os.environ.get("RINGLINE_BIG_TESTS") == "1"
LARGE_TRANSFER = (1 << 30) if BIG else (64 << 20)

_RST_LINGER = struct.pack("ii", 1, 0)


def _reset(sock):
    """Close ``sock`` with an RST (SO_LINGER on, timeout 0)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    sock.close()


def _raise_nofile(needed):
    """Raise the soft RLIMIT_NOFILE to at least ``needed`` (up to the hard
    limit); skip when the hard limit is too low.  Returns the old limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed or soft == resource.RLIM_INFINITY:
        return soft, hard
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed} needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed if hard == resource.RLIM_INFINITY
                                                else hard, hard))
    return soft, hard


class RecordingProtocol(asyncio.Protocol):
    """Records everything the transport tells it."""

    def __init__(self, loop, eof_keep_open=False):
        self.loop = loop
        self.transport = None
        self.data = bytearray()
        self.eof = False
        self.eof_keep_open = eof_keep_open
        self.lost = loop.create_future()
        self.lost_calls = 0
        self.made = loop.create_future()
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport):
        self.transport = transport
        self.made.set_result(None)

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True
        return self.eof_keep_open

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1

    def connection_lost(self, exc):
        self.lost_calls += 1
        if not self.lost.done():
            self.lost.set_result(exc)



@contextlib.asynccontextmanager
async def _serving(loop, make):
    """A TCP server on 127.0.0.1; yields (its address, the protocols it made)."""
    protos = []

    def factory():
        p = make()
        protos.append(p)
        return p

    server = await loop.create_server(factory, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname(), protos
    finally:
        server.close()
        await server.wait_closed()


# ---------------------------------------------------------------------------
# peer reset mid-stream
# ---------------------------------------------------------------------------

def test_peer_reset_while_reading(loop, run):
    """The peer sends, then closes with RST: connection_lost gets
    ConnectionResetError (what asyncio's selector transport gives)."""
    async def main():
        async with _serving(loop, lambda: RecordingProtocol(loop)) as (addr, protos):
            client = socket.create_connection(addr)
            client.sendall(b"x" * 10_000)
            await wait_until(lambda: protos and len(protos[0].data) == 10_000,
                            what="server got the data")
            _reset(client)
            exc = await asyncio.wait_for(protos[0].lost, 5)
            assert protos[0].lost_calls == 1
            return exc

    exc = run(main())
    assert type(exc) is ConnectionResetError, repr(exc)


def test_peer_reset_while_writing(loop, run):
    """The server is writing (the peer does not read) when the peer resets."""
    async def main():
        async with _serving(loop, lambda: RecordingProtocol(loop)) as (addr, protos):
            client = socket.create_connection(addr)
            await wait_until(lambda: protos, what="accept")
            tr = protos[0].transport
            for _ in range(64):
                tr.write(b"y" * 65536)
            await asyncio.sleep(0.05)
            assert tr.get_write_buffer_size() > 0
            _reset(client)
            exc = await asyncio.wait_for(protos[0].lost, 5)
            assert protos[0].lost_calls == 1
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            return exc

    exc = run(main())
    assert type(exc) is ConnectionResetError, repr(exc)


def test_peer_reset_stream_reader(loop, run):
    async def main():
        got = loop.create_future()

        async def handler(reader, writer):
            try:
                await reader.readexactly(5)
                await reader.read()  # blocks until the reset
                got.set_result(None)
            except Exception as exc:  # noqa: BLE001
                got.set_result(exc)
            finally:
                writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            client = socket.create_connection(server.sockets[0].getsockname())
            client.sendall(b"hello")
            await asyncio.sleep(0.05)
            _reset(client)
            return await asyncio.wait_for(got, 5)
        finally:
            server.close()
            await server.wait_closed()

    exc = run(main())
    assert type(exc) is ConnectionResetError, repr(exc)


# ---------------------------------------------------------------------------
# half-close
# ---------------------------------------------------------------------------

def test_half_close_client_write_eof_server_keeps_writing(loop, run):
    """Client write_eof(); the server's eof_received() returns True and it
    keeps writing afterwards; the client reads it all, then the server
    closes."""
    async def main():
        class Server(RecordingProtocol):
            def eof_received(self):
                super().eof_received()
                # Answer after EOF: the write side is still open.
                self.transport.write(b"reply-after-eof:" + bytes(self.data))
                self.loop.call_later(0.02, self._more)
                return True

            def _more(self):
                self.transport.write(b"|more")
                self.transport.close()

        async with _serving(loop, lambda: Server(loop)) as (addr, server_protos):
            client = RecordingProtocol(loop)
            tr, _ = await loop.create_connection(lambda: client, *addr)
            tr.write(b"request")
            assert tr.can_write_eof()
            tr.write_eof()
            with pytest.raises(RuntimeError):
                tr.write(b"after eof")
            exc = await asyncio.wait_for(client.lost, 5)
            sp = server_protos[0]
            await asyncio.wait_for(sp.lost, 5)
            return bytes(client.data), client.eof, sp.eof, exc

    data, client_eof, server_eof, exc = run(main())
    assert server_eof
    assert data == b"reply-after-eof:request|more"
    assert client_eof
    assert exc is None


def test_half_close_server_write_eof_client_keeps_writing(loop, run):
    """The reverse: the server writes and write_eof()s; the client's
    eof_received() returns True and it keeps writing; the server receives
    what the client sent after the EOF."""
    async def main():
        class Server(RecordingProtocol):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.write(b"greeting")
                transport.write_eof()

            def eof_received(self):
                super().eof_received()
                return False  # close when the client is done too

        class Client(RecordingProtocol):
            def eof_received(self):
                super().eof_received()
                self.transport.write(b"after-server-eof:" + bytes(self.data))
                self.loop.call_later(0.02, self._finish)
                return True

            def _finish(self):
                self.transport.write(b"|late")
                self.transport.write_eof()
                self.transport.close()

        async with _serving(loop, lambda: Server(loop)) as (addr, server_protos):
            client = Client(loop, eof_keep_open=True)
            tr, _ = await loop.create_connection(lambda: client, *addr)
            await wait_until(lambda: server_protos, what="accept")
            sp = server_protos[0]
            sp_exc = await asyncio.wait_for(sp.lost, 5)
            client_exc = await asyncio.wait_for(client.lost, 5)
            return bytes(sp.data), sp.eof, client.eof, bytes(client.data), sp_exc, client_exc

    server_data, server_eof, client_eof, client_data, sp_exc, client_exc = run(main())
    assert client_data == b"greeting"
    assert client_eof
    assert server_data == b"after-server-eof:greeting|late"
    assert server_eof
    assert client_exc is None


def test_half_close_streams(loop, run):
    """The same with asyncio streams (StreamWriter.write_eof / reader.read())."""
    async def main():
        async def handler(reader, writer):
            data = await reader.read()  # until the client's EOF
            writer.write(data[::-1])
            await writer.drain()
            writer.write_eof()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"0123456789" * 1000)
            writer.write_eof()
            reply = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            await writer.wait_closed()
            return reply
        finally:
            server.close()
            await server.wait_closed()

    assert run(main()) == (b"0123456789" * 1000)[::-1]


# ---------------------------------------------------------------------------
# a large transfer, checked by sha256
# ---------------------------------------------------------------------------

@pytest.mark.timeout(600 if BIG else 60)
def test_large_transfer_sha256(loop, run):
    """LARGE_TRANSFER bytes (64 MiB; 1 GiB with RINGLINE_BIG_TESTS=1) each
    way in varying chunk sizes; both ends check sha256."""
    total = LARGE_TRANSFER
    rnd = random.Random(2024)
    block = rnd.randbytes(1 << 20)

    def chunks():
        # Varying sizes and offsets, so chunk edges fall everywhere.
        sent = 0
        k = 0
        while sent < total:
            size = min(total - sent, rnd.randint(1, 256 * 1024))
            off = (k * 7919) % (len(block) - size + 1) if size < len(block) else 0
            yield block[off:off + size] if off or size != len(block) else block
            sent += size
            k += 1

    async def main():
        result = loop.create_future()

        async def handler(reader, writer):
            h = hashlib.sha256()
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                h.update(data)
                n += len(data)
            # Send it all back as a digest plus the byte count, then the
            # same volume back the other way.
            writer.write(h.digest() + n.to_bytes(8, "big"))
            await writer.drain()
            result.set_result((n, h.hexdigest()))
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=1 << 20)
        try:
            reader, writer = await asyncio.open_connection(
                *server.sockets[0].getsockname(), limit=1 << 20)
            h = hashlib.sha256()
            for c in chunks():
                h.update(c)
                writer.write(c)
                if writer.transport.get_write_buffer_size() > (1 << 20):
                    await writer.drain()
            await writer.drain()
            writer.write_eof()
            reply = await reader.readexactly(40)
            assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            n, server_digest = await result
            return h.hexdigest(), reply, n, server_digest
        finally:
            server.close()
            await server.wait_closed()

    digest, reply, n, server_digest = run(main(), timeout=550 if BIG else 50)
    assert n == total
    assert server_digest == digest
    assert reply == bytes.fromhex(digest) + total.to_bytes(8, "big")


@pytest.mark.timeout(600 if BIG else 60)
def test_large_transfer_server_to_client_sha256(loop, run):
    total = LARGE_TRANSFER
    seed_block = random.Random(77).randbytes(1 << 20)

    async def main():
        digest_fut = loop.create_future()

        async def handler(reader, writer):
            h = hashlib.sha256()
            sent = 0
            k = 0
            while sent < total:
                size = min(total - sent, 65536 + (k * 4099) % 300_000)
                off = (k * 104729) % (len(seed_block) - size + 1)
                c = seed_block[off:off + size]
                h.update(c)
                writer.write(c)
                await writer.drain()
                sent += size
                k += 1
            digest_fut.set_result(h.hexdigest())
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            h = hashlib.sha256()
            n = 0
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                h.update(data)
                n += len(data)
            writer.close()
            await writer.wait_closed()
            return n, h.hexdigest(), await digest_fut
        finally:
            server.close()
            await server.wait_closed()

    n, got, expected = run(main(), timeout=550 if BIG else 50)
    assert n == total
    assert got == expected


# ---------------------------------------------------------------------------
# 1,000 concurrent connections
# ---------------------------------------------------------------------------

N_CONCURRENT = 1000


@pytest.mark.timeout(120)
def test_thousand_concurrent_echo_connections(loop, run):
    old = _raise_nofile(2 * N_CONCURRENT + 200)
    try:
        _thousand_connections(loop, run)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def _thousand_connections(loop, run):
    active = set()
    peak = [0]

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport
            active.add(self)
            peak[0] = max(peak[0], len(active))

        def data_received(self, data):
            self.transport.write(data)

        def eof_received(self):
            return False

        def connection_lost(self, exc):
            active.discard(self)

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=N_CONCURRENT)
        addr = server.sockets[0].getsockname()
        conns = []
        try:
            # Open them all first (in bounded batches), so they are all
            # open at the same time.
            for start in range(0, N_CONCURRENT, 100):
                conns += await asyncio.gather(*[
                    asyncio.open_connection(*addr) for _ in range(start, min(start + 100, N_CONCURRENT))])
            await wait_until(lambda: len(active) == N_CONCURRENT, timeout=20,
                            what=f"{N_CONCURRENT} accepted connections")

            async def one(i, reader, writer):
                msg = f"client {i:04d} ".encode() * (1 + i % 7)
                writer.write(msg)
                await writer.drain()
                echoed = await reader.readexactly(len(msg))
                assert echoed == msg, i
                return i

            done = await asyncio.gather(*[one(i, r, w) for i, (r, w) in enumerate(conns)])
            assert done == list(range(N_CONCURRENT))
        finally:
            for _, w in conns:
                w.close()
            for _, w in conns:
                with contextlib.suppress(Exception):
                    await w.wait_closed()
            await wait_until(lambda: not active, timeout=20, what="server side closed")
            server.close()
            await server.wait_closed()

    run(main(), timeout=100)
    assert peak[0] == N_CONCURRENT


# ---------------------------------------------------------------------------
# slow reader: flow control bounds the server's buffer
# ---------------------------------------------------------------------------

def test_slow_reader_pause_resume_bounded_buffer(loop, run):
    TOTAL = 32 << 20
    CHUNK = 64 * 1024
    HIGH = 256 * 1024
    LOW = 64 * 1024
    block = random.Random(5).randbytes(CHUNK)

    class Producer(asyncio.Protocol):
        def __init__(self):
            self.paused = False
            self.pause_calls = 0
            self.resume_calls = 0
            self.sent = 0
            self.max_buffer = 0
            self.lost = loop.create_future()
            self.hash = hashlib.sha256()

        def connection_made(self, transport):
            self.transport = transport
            transport.set_write_buffer_limits(high=HIGH, low=LOW)
            assert transport.get_write_buffer_limits() == (LOW, HIGH)
            loop.call_soon(self.produce)

        def produce(self):
            # Write until told to pause (never more than one chunk past it).
            while not self.paused and self.sent < TOTAL:
                self.hash.update(block)
                self.transport.write(block)
                self.sent += CHUNK
                self.max_buffer = max(self.max_buffer, self.transport.get_write_buffer_size())
            if self.sent >= TOTAL and not self.transport.is_closing():
                self.transport.close()

        def pause_writing(self):
            assert not self.paused
            self.paused = True
            self.pause_calls += 1

        def resume_writing(self):
            assert self.paused
            self.paused = False
            self.resume_calls += 1
            assert self.transport.get_write_buffer_size() <= LOW
            loop.call_soon(self.produce)

        def connection_lost(self, exc):
            self.lost.set_result(exc)

    async def main():
        with contextlib.closing(socket.socket()) as client:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            client.setblocking(False)
            async with _serving(loop, Producer) as (addr, protos):
                await loop.sock_connect(client, addr)
                await wait_until(lambda: protos and protos[0].pause_calls >= 1, timeout=10,
                                what="pause_writing")
                p = protos[0]
                # Not reading: the producer stays paused, its buffer bounded.
                samples = []
                for _ in range(20):
                    await asyncio.sleep(0.01)
                    samples.append(p.transport.get_write_buffer_size())
                assert p.paused
                assert p.sent < TOTAL
                assert max(samples) <= HIGH + CHUNK
                assert min(samples) > LOW  # nothing drains while nobody reads
                # Now drain.
                h = hashlib.sha256()
                n = 0
                while True:
                    data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 10)
                    if not data:
                        break
                    h.update(data)
                    n += len(data)
                exc = await asyncio.wait_for(p.lost, 5)
                return p, n, h.hexdigest(), exc

    p, n, digest, exc = run(main(), timeout=50)
    assert exc is None
    assert n == TOTAL
    assert digest == p.hash.hexdigest()
    assert p.pause_calls >= 1
    assert p.resume_calls == p.pause_calls
    assert p.max_buffer <= HIGH + CHUNK


def test_stream_writer_drain_blocks_for_slow_reader(loop, run):
    """StreamWriter.drain() waits while the peer does not read."""
    async def main():
        accepted = loop.create_future()

        async def handler(reader, writer):
            accepted.set_result((reader, writer))

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        try:
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            sr, sw = await asyncio.wait_for(accepted, 5)
            block = b"z" * 65536
            blocked = False
            written = 0
            for _ in range(2000):  # bounded: at most ~128 MiB
                w.write(block)
                written += len(block)
                try:
                    await asyncio.wait_for(w.drain(), 0.2)
                except asyncio.TimeoutError:
                    blocked = True
                    break
            assert blocked, "drain() never blocked"
            assert w.transport.get_write_buffer_size() > 0
            # Read everything; drain completes.
            drain = loop.create_task(w.drain())
            n = 0
            while not drain.done():
                n += len(await asyncio.wait_for(sr.read(1 << 20), 5))
            await drain
            w.close()
            await w.wait_closed()
            while True:
                data = await asyncio.wait_for(sr.read(1 << 20), 5)
                if not data:
                    break
                n += len(data)
            sw.close()
            return n, written
        finally:
            server.close()
            await server.wait_closed()

    n, written = run(main(), timeout=50)
    assert n == written


# ---------------------------------------------------------------------------
# a tiny provided-buffer ring (io_uring only)
# ---------------------------------------------------------------------------

def _io_uring_available():
    if _loops.is_asyncio_mode():
        return False
    import ringline
    return "io_uring" in ringline.available_backends()


@pytest.mark.ringline_only
@pytest.mark.skipif(not _io_uring_available(), reason="io_uring unavailable")
@pytest.mark.parametrize("entries", [4, 0], ids=["four_buffers", "no_ring"])
def test_four_buffer_ring_under_64_connections(entries):
    # entries=0: no buffer ring at all, every receive a single-shot recv into
    # the connection's own buffer -- what a kernel before 5.19 gets.
    import ringline
    from ringline._core import core

    old = core.set_recv_buffers(entries, 4096)
    try:
        loop = ringline.new_event_loop("io_uring")
    finally:
        restored = core.set_recv_buffers(*old)
    assert restored == (entries, 4096)
    try:
        assert loop.stats()["recv_buffers"] == ((4, 4096) if entries else None)
        rnd = random.Random(64)
        sizes_per_conn = [
            [rnd.choice([1, 4095, 4096, 4097, 8191, 8192, 8193, 16385,
                         rnd.randint(1, 70_000)]) for _ in range(8)]
            for _ in range(64)]

        class Echo(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                self.transport.write(data)

        async def client(i, addr):
            reader, writer = await asyncio.open_connection(*addr)
            try:
                for j, size in enumerate(sizes_per_conn[i]):
                    payload = random.Random(i * 1000 + j).randbytes(size)
                    writer.write(payload)
                    await writer.drain()
                    echoed = await reader.readexactly(size)
                    assert echoed == payload, (i, j, size)
                # And everything at once, several buffers' worth in flight.
                blob = random.Random(-i).randbytes(sum(sizes_per_conn[i]))
                writer.write(blob)
                echoed = await reader.readexactly(len(blob))
                assert echoed == blob, i
                return len(blob) * 2
            finally:
                writer.close()
                await writer.wait_closed()

        async def main():
            server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=128)
            try:
                addr = server.sockets[0].getsockname()
                totals = await asyncio.gather(*[client(i, addr) for i in range(64)])
                return sum(totals)
            finally:
                server.close()
                await server.wait_closed()

        total = loop.run_until_complete(asyncio.wait_for(main(), 50))
        assert total == sum(2 * sum(s) for s in sizes_per_conn)
        # The loop survived: still running I/O, nothing overflowed.
        stats = loop.stats()
        assert stats["cq_overflow"] == 0
        assert stats["cqes_processed"] > 0

        async def after():
            a, b = socket.socketpair()
            a.setblocking(False)
            b.setblocking(False)
            with a, b:
                await loop.sock_sendall(a, b"still alive")
                return await loop.sock_recv(b, 100)

        assert loop.run_until_complete(asyncio.wait_for(after(), 5)) == b"still alive"
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---------------------------------------------------------------------------
# accept under EMFILE
# ---------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_accept_emfile_reports_and_recovers(loop, run):
    contexts = []
    loop.set_exception_handler(lambda lp, ctx: contexts.append(ctx))
    old_limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []

    class Echo(asyncio.Protocol):
        made = []

        def connection_made(self, transport):
            self.transport = transport
            Echo.made.append(self)

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        # Lower the limit first, leaving a few fds free.  It must be lowered
        # before the server starts accepting: io_uring's accept reads the
        # limit when the (multishot) accept is armed, so lowering it later
        # does not affect an accept already in the ring.
        open_fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
        limit = max(open_fds) + 32
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, old_limits[1]))
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        client = socket.socket()
        client.setblocking(False)
        try:
            # Use up every fd left below the limit.
            try:
                while len(fillers) < 10_000:  # bounded
                    fillers.append(os.open(os.devnull, os.O_RDONLY))
            except OSError as exc:
                assert exc.errno == errno.EMFILE
            await loop.sock_connect(client, server.sockets[0].getsockname())
            await wait_until(
                lambda: any(c.get("message") == "socket.accept() out of system resource"
                            for c in contexts),
                timeout=5, what="the EMFILE report")
            ctx = next(c for c in contexts
                       if c.get("message") == "socket.accept() out of system resource")
            assert isinstance(ctx["exception"], OSError)
            assert ctx["exception"].errno == errno.EMFILE
            assert ctx.get("socket") is not None
            assert Echo.made == []
            # Free the fds: the server accepts again (asyncio retries after
            # ACCEPT_RETRY_DELAY, 1 s).
            while fillers:
                os.close(fillers.pop())
            resource.setrlimit(resource.RLIMIT_NOFILE, old_limits)
            await wait_until(lambda: Echo.made, timeout=3, what="accept after EMFILE")
            await loop.sock_sendall(client, b"ping")
            assert await asyncio.wait_for(loop.sock_recv(client, 10), 5) == b"ping"
            # And a new connection is accepted too.
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            w.write(b"pong")
            assert await asyncio.wait_for(r.readexactly(4), 5) == b"pong"
            w.close()
            await w.wait_closed()
        finally:
            client.close()
            for tr in Echo.made:
                tr.transport.close()
            server.close()
            await server.wait_closed()

    try:
        run(main(), timeout=30)
    finally:
        while fillers:
            os.close(fillers.pop())
        resource.setrlimit(resource.RLIMIT_NOFILE, old_limits)


# ---------------------------------------------------------------------------
# every transport method after close(), compared with asyncio
# ---------------------------------------------------------------------------

def _after_close_observations(loop, caplog):
    """Run the same sequence of calls on a closed transport and record what
    each does: returned values, exceptions, warnings logged."""
    obs = {}
    attempt = recorder(obs)

    def send_warnings():
        return sum(1 for r in caplog.records
                   if r.name == "asyncio" and "socket.send() raised exception" in r.getMessage())

    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            proto = RecordingProtocol(loop)
            tr, _ = await loop.create_connection(lambda: proto,
                                                 *server.sockets[0].getsockname())
            peername = tr.get_extra_info("peername")
            sockname = tr.get_extra_info("sockname")
            caplog.clear()
            # ---- right after close(), before connection_lost ran ----
            attempt("close", tr.close)
            attempt("is_closing", tr.is_closing)
            attempt("close_twice", tr.close)
            attempt("is_reading", tr.is_reading)
            for i in range(1, 5):
                attempt(f"write_{i}", lambda: tr.write(b"dropped"))
            obs["warnings_after_4_writes"] = send_warnings()
            attempt("write_5", lambda: tr.write(b"dropped"))
            obs["warnings_after_5_writes"] = send_warnings()
            attempt("write_empty", lambda: tr.write(b""))
            attempt("write_str", lambda: tr.write("text"))
            attempt("writelines", lambda: tr.writelines([b"a", b"b"]))
            attempt("pause_reading", tr.pause_reading)
            attempt("resume_reading", tr.resume_reading)
            attempt("is_reading_after_pause_resume", tr.is_reading)
            attempt("can_write_eof", tr.can_write_eof)
            attempt("write_eof", tr.write_eof)
            attempt("get_write_buffer_size", tr.get_write_buffer_size)
            attempt("abort", tr.abort)
            obs["peername"] = tr.get_extra_info("peername") == peername
            obs["sockname"] = tr.get_extra_info("sockname") == sockname
            obs["socket"] = tr.get_extra_info("socket") is not None
            obs["default"] = tr.get_extra_info("no-such-key", "dflt")
            obs["lost_before_iteration"] = proto.lost_calls
            exc = await asyncio.wait_for(proto.lost, 5)
            await asyncio.sleep(0.01)
            obs["connection_lost_exc"] = repr(exc)
            obs["connection_lost_calls"] = proto.lost_calls
            # ---- after connection_lost ----
            attempt("post_close", tr.close)
            attempt("post_abort", tr.abort)
            attempt("post_write", lambda: tr.write(b"x"))
            attempt("post_writelines", lambda: tr.writelines([b"x"]))
            attempt("post_write_eof", tr.write_eof)
            attempt("post_pause_reading", tr.pause_reading)
            attempt("post_resume_reading", tr.resume_reading)
            attempt("post_is_closing", tr.is_closing)
            attempt("post_is_reading", tr.is_reading)
            attempt("post_get_write_buffer_size", tr.get_write_buffer_size)
            obs["post_peername"] = tr.get_extra_info("peername") == peername
            obs["post_sockname"] = tr.get_extra_info("sockname") == sockname
            obs["post_get_protocol"] = tr.get_protocol() is None
            await asyncio.sleep(0.01)
            obs["connection_lost_calls_final"] = proto.lost_calls
        finally:
            server.close()
            await server.wait_closed()

    loop.run_until_complete(asyncio.wait_for(main(), 10))
    return obs


# What asyncio's selector transport does (Python 3.11); the test also
# compares against a live asyncio loop, this documents the expectations.
_ASYNCIO_AFTER_CLOSE = {
    "close": ("returns", None),
    "is_closing": ("returns", True),
    "close_twice": ("returns", None),
    "is_reading": ("returns", False),
    "write_1": ("returns", None),
    "write_2": ("returns", None),
    "write_3": ("returns", None),
    "write_4": ("returns", None),
    "warnings_after_4_writes": 0,
    "write_5": ("returns", None),
    "warnings_after_5_writes": 1,     # logged from the 5th write on
    "write_empty": ("returns", None),
    "write_str": ("raises", "TypeError"),
    "writelines": ("returns", None),
    "pause_reading": ("returns", None),
    "resume_reading": ("returns", None),
    "is_reading_after_pause_resume": ("returns", False),
    "can_write_eof": ("returns", True),
    "write_eof": ("returns", None),
    "get_write_buffer_size": ("returns", 0),
    "abort": ("returns", None),
    "peername": True,
    "sockname": True,
    "socket": True,
    "default": "dflt",
    "lost_before_iteration": 0,
    "connection_lost_exc": "None",
    "connection_lost_calls": 1,
    "post_close": ("returns", None),
    "post_abort": ("returns", None),
    "post_write": ("returns", None),
    "post_writelines": ("returns", None),
    "post_write_eof": ("returns", None),
    "post_pause_reading": ("returns", None),
    "post_resume_reading": ("returns", None),
    "post_is_closing": ("returns", True),
    "post_is_reading": ("returns", False),
    "post_get_write_buffer_size": ("returns", 0),
    "post_peername": True,
    "post_sockname": True,
    "post_get_protocol": True,
    "connection_lost_calls_final": 1,
}


def test_transport_methods_after_close_match_asyncio(loop, caplog):
    caplog.set_level(logging.WARNING, logger="asyncio")
    observed = _after_close_observations(loop, caplog)
    reference_loop = asyncio.SelectorEventLoop()
    try:
        reference = _after_close_observations(reference_loop, caplog)
    finally:
        reference_loop.close()
    expected = dict(reference)
    if reference["writelines"] == ("raises", "TypeError"):
        # CPython gh-136234 (3.12 and 3.13 before the fix): the selector
        # transport's sendmsg-based writelines() skips write()'s _conn_lost
        # check, appends to the buffer and calls the _write_ready that
        # connection_lost cleared (TypeError).  Fixed upstream by treating
        # writelines() as write(); ringline keeps the fixed behaviour.
        for key in ("writelines", "post_writelines", "get_write_buffer_size",
                    "post_get_write_buffer_size"):
            expected[key] = _ASYNCIO_AFTER_CLOSE[key]
    assert expected == _ASYNCIO_AFTER_CLOSE
    mismatches = {k: (observed.get(k), expected[k])
                  for k in expected if observed.get(k) != expected[k]}
    assert not mismatches, f"(loop under test, asyncio): {mismatches}"


def test_write_after_write_eof_raises(loop, run):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            tr, _ = await loop.create_connection(asyncio.Protocol,
                                                 *server.sockets[0].getsockname())
            tr.write_eof()
            tr.write_eof()  # twice is fine
            with pytest.raises(RuntimeError, match="write_eof"):
                tr.write(b"x")
            tr.close()
        finally:
            server.close()
            await server.wait_closed()

    run(main())


def test_abort_with_pending_writes_drops_them(loop, run):
    async def main():
        accepted = []
        server = await loop.create_server(
            lambda: accepted.append(RecordingProtocol(loop)) or accepted[-1],
            "127.0.0.1", 0)
        try:
            proto = RecordingProtocol(loop)
            # A peer that never reads: writes pile up in the buffer.
            tr, _ = await loop.create_connection(lambda: proto,
                                                 *server.sockets[0].getsockname())
            await wait_until(lambda: accepted, what="accept")
            accepted[0].transport.pause_reading()
            for _ in range(200):
                tr.write(b"q" * 65536)
            await asyncio.sleep(0.05)
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            assert tr.is_closing()
            assert tr.get_write_buffer_size() == 0
            exc = await asyncio.wait_for(proto.lost, 5)
            assert exc is None
            assert proto.lost_calls == 1
            # The peer reads again and sees the connection end.
            accepted[0].transport.resume_reading()
            await asyncio.wait_for(accepted[0].lost, 5)
        finally:
            server.close()
            await server.wait_closed()

    run(main())


@pytest.mark.ringline_only
def test_full_completion_ring_is_not_eof():
    """The kernel ends a multishot recv with data (no IORING_CQE_F_MORE) when
    the CQ ring is full; that is not EOF: the transport must re-arm.  A
    16-entry CQ and 64 connections with data make it happen every time."""
    import ringline
    from ringline._core import core
    if "io_uring" not in ringline.available_backends():
        pytest.skip("io_uring is not usable here")
    old = core.set_ring_entries(8, 16)
    try:
        loop = ringline.new_event_loop(backend="io_uring")
    finally:
        core.set_ring_entries(*old)

    class P(asyncio.Protocol):
        def __init__(self):
            self.n = 0
            self.eof = False

        def data_received(self, data):
            self.n += len(data)

        def eof_received(self):
            self.eof = True
            return True

    async def main():
        pairs = []
        for _ in range(64):
            a, b = socket.socketpair()
            a.setblocking(False)
            tr, pr = await loop.connect_accepted_socket(P, a)
            pairs.append((tr, b, pr))
        await asyncio.sleep(0.02)
        for _ in range(10):
            for tr, b, pr in pairs:
                b.send(b"x" * 100)
            await asyncio.sleep(0.005)
        end = loop.time() + 5
        while sum(pr.n for _, _, pr in pairs) < 64 * 10 * 100 and loop.time() < end:
            await asyncio.sleep(0.01)
        assert [pr.n for _, _, pr in pairs] == [1000] * 64
        assert not any(pr.eof for _, _, pr in pairs)
        for tr, b, pr in pairs:
            tr.close()
            b.close()
        await asyncio.sleep(0)

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def test_randomized_echo_with_pauses_and_half_closes(loop, run):
    """100 clients, random chunk sizes (1 B .. 100 KiB), random drains and
    sleeps, a server that pauses/resumes reading at random, every client
    half-closing at the end: every byte back, in order (hash)."""
    rnd = random.Random(20261126)

    async def client(port, crnd):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        sent, got = hashlib.sha256(), hashlib.sha256()

        async def reader():
            n = 0
            while data := await r.read(crnd.choice([1, 100, 4096, 65536])):
                got.update(data)
                n += len(data)
            return n

        rt = asyncio.ensure_future(reader())
        n_sent = await write_random_chunks(w, crnd, crnd.randint(5, 30), sent, sleep_p=0.2)
        await w.drain()
        w.write_eof()
        n = await rt
        w.close()
        await w.wait_closed()
        assert (n, got.digest()) == (n_sent, sent.digest())

    async def main():
        protos = []

        def factory():
            protos.append(JitteryEcho(random.Random(rnd.random())))
            return protos[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0)
        port = srv.sockets[0].getsockname()[1]
        await asyncio.gather(*(client(port, random.Random(rnd.random())) for _ in range(100)))
        # The server's transports stay open after the half-close (eof_received
        # returned True); 3.12+'s wait_closed() waits for them.
        for p in protos:
            p.t.close()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=60)


def test_idle_connections_hold_no_read_buffer(loop, run):
    """After 200 server transports have each received 64 KiB and the loop
    has been idle for a while, what it keeps for reading is a few pooled
    buffers, not one per connection (that was 25 MiB here with the clients'
    buffers; 250 MiB at 4,000 connections).  PyMem allocations are what
    tracemalloc sees.  It means something on the poll backend, whose every
    read borrows a buffer; io_uring reads into its buffer ring."""
    import tracemalloc
    n = 200
    size = 65536

    class Sink(asyncio.Protocol):
        def __init__(self):
            self.n = 0

        def data_received(self, data):
            self.n += len(data)

    async def main():
        sinks = []

        def factory():
            sinks.append(Sink())
            return sinks[-1]

        srv = await loop.create_server(factory, "127.0.0.1", 0, backlog=n)
        port = srv.sockets[0].getsockname()[1]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            clients = [await loop.create_connection(Sink, "127.0.0.1", port)
                       for _ in range(n)]
            await wait_until(lambda: len(sinks) == n, what="accepts")
            for tr, _ in clients:
                tr.write(b"c" * size)
            await wait_until(lambda: all(s.n == size for s in sinks), what="server reads")
            # The pool keeps what a busy second needed: trimmed within ~2 s.
            await asyncio.sleep(3.5)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        # The transports themselves take a few KiB each.
        assert after - before < 6 << 20, f"{(after - before) >> 20} MiB kept after reads"
        for tr, _ in clients:
            tr.close()
        srv.close()
        await srv.wait_closed()

    run(main(), timeout=60)
