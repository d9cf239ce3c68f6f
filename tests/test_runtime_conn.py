"""ConnCtx: receive over kernel buffers, sends, EOF, errors, TLS, Unix (issue 6).

Servers are launched workers (threads here: the handler reports through a
queue; process workers are covered in test_runtime_workers.py); clients are
blocking sockets or ringline.connect() on the test loop.  Every test runs on
every backend.
"""

from __future__ import annotations

import asyncio
import os
import queue
import random
import socket
import struct
import threading
import zlib

import pytest

from _runtime_helpers import (client, get, launched, recv_all, recv_exactly, short_tmpdir,
                              tls_contexts)

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")


# The handlers `python -m ringline echo` ships: tested as they are.
from ringline.runtime._echo import EchoForward, EchoWithData as Echo  # noqa: E402


# ---- echo -------------------------------------------------------------------------

@pytest.mark.parametrize("handler", [Echo, EchoForward], ids=["with_data", "forward"])
def test_echo(backend, handler):
    with launched(handler, backend) as (sh, _):
        s = client(sh.address())
        for n in (1, 100, 5000, 70000):
            data = os.urandom(n)
            s.sendall(data)
            assert recv_exactly(s, n) == data
        s.close()


def test_echo_views_are_kernel_buffers_on_io_uring(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            def fn(view):
                q.put((type(view.obj).__name__, view.readonly, bytes(view)))
                conn.send_nowait(view)
                return len(view)
            while await conn.with_data(fn):
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"ping")
        assert recv_exactly(s, 4) == b"ping"
        kind, readonly, data = get(q)
        assert data == b"ping"
        if backend == "io_uring":
            assert (kind, readonly) == ("KBuf", True)
        else:
            assert kind == "bytearray"        # the poll backend copies
        s.close()


def test_many_connections(backend, loop, run):
    with launched(Echo, backend, workers=2) as (sh, _):
        addr = sh.address()

        async def one(i):
            conn = await ringline.connect(addr, timeout=10)
            async with conn:
                for k in range(3):
                    msg = b"%d:%d;" % (i, k) * 20
                    await conn.send(msg)
                    got = bytearray()

                    def take(view):
                        got.extend(view)
                        return len(view)
                    while len(got) < len(msg):
                        assert await conn.with_data(take) > 0
                    assert got == msg
            return i

        async def main():
            return await asyncio.gather(*(one(i) for i in range(150)))

        assert run(main(), timeout=30) == list(range(150))
        assert ringline.metrics()["total"]["connections_accepted"] >= 150


# ---- framing: partial consume, NEED_MORE, buffer boundaries --------------------------

class LengthPrefixed(ringline.Handler):
    """4-byte length + payload; replies with the payload's crc32 per message."""

    async def on_accept(self, conn):
        def parse(view):
            if len(view) < 4:
                return ringline.NEED_MORE
            n = struct.unpack_from("!I", view)[0]
            if len(view) < 4 + n:
                return ringline.NEED_MORE
            conn.send_nowait(struct.pack("!I", zlib.crc32(view[4:4 + n])))
            return 4 + n
        while await conn.with_data(parse):
            pass


def test_payloads_crossing_buffer_boundaries(backend):
    rnd = random.Random(6)
    msgs = [os.urandom(rnd.choice([0, 1, 3, 1023, 1024, 1025, 4000, 9000])) for _ in range(120)]
    stream = b"".join(struct.pack("!I", len(m)) + m for m in msgs)
    with launched(LengthPrefixed, backend, buffer_size=1024, ring_size=16) as (sh, _):
        s = client(sh.address())
        # Write in random-sized pieces so messages straddle every boundary.
        i = 0
        while i < len(stream):
            k = rnd.randint(1, 3000)
            s.sendall(stream[i:i + k])
            i += k
        replies = recv_exactly(s, 4 * len(msgs))
        s.close()
    crcs = [struct.unpack_from("!I", replies, 4 * j)[0] for j in range(len(msgs))]
    assert crcs == [zlib.crc32(m) for m in msgs]


def test_partial_consume_and_need_more(backend):
    q = queue.Queue()

    class Lines(ringline.Handler):
        async def on_accept(self, conn):
            seen = []

            def line(view):
                seen.append((type(view.obj).__name__, bytes(view)))
                i = bytes(view).find(b"\n")
                if i < 0:
                    return ringline.NEED_MORE
                conn.send_nowait(bytes(view[:i])[::-1] + b"\n")
                return i + 1
            counts = []
            while n := await conn.with_data(line):
                counts.append(n)
            q.put((counts, seen))

    with launched(Lines, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"abc\nde")
        assert recv_exactly(s, 4) == b"cba\n"
        s.sendall(b"f\nxy")
        assert recv_exactly(s, 4) == b"fed\n"
        s.sendall(b"z\n")
        assert recv_exactly(s, 4) == b"zyx\n"
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b""
        s.close()
        counts, seen = get(q)
    assert counts == [4, 4, 4]
    # After a partial consume the rest is kept in the accumulator, and the
    # next bytes are appended behind it.
    assert (b"de" in [d for _, d in seen]) and (b"def\nxy" in [d for _, d in seen])
    kinds = {d: k for k, d in seen}
    assert kinds[b"def\nxy"] == "bytearray"
    if backend == "io_uring":
        assert kinds[b"abc\nde"] == "KBuf"


def test_callback_contract_errors(backend):
    q = queue.Queue()

    class Bad(ringline.Handler):
        async def on_accept(self, conn):
            for fn in (lambda v: "x", lambda v: len(v) + 1, lambda v: -5):
                try:
                    await conn.with_data(fn)
                except Exception as exc:  # noqa: BLE001
                    q.put(type(exc).__name__)
            # The data is still there after the failed callbacks.
            q.put(await conn.with_bytes(lambda b: (q.put(b), len(b))[1]))

    with launched(Bad, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"hello")
        assert [get(q) for _ in range(3)] == ["TypeError", "ValueError", "ValueError"]
        assert get(q) == b"hello"
        assert get(q) == 5
        s.close()


# ---- EOF, peer close ---------------------------------------------------------------------

def test_eof_semantics(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            total = 0
            views = []

            def fn(view):
                views.append(len(view))
                return len(view)
            while (n := await conn.with_data(fn)) > 0:
                total += n
            again = await conn.with_data(fn)        # EOF stays EOF
            assert conn.try_with_data(fn) == 0
            # Half-closed: we can still send.
            await conn.send(b"got %d" % total)
            q.put((total, views[-3:], again))

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"x" * 3000)
        s.shutdown(socket.SHUT_WR)
        assert recv_all(s) == b"got 3000"
        total, tail, again = get(q)
        assert total == 3000 and again == 0
        assert tail[-2:] == [0, 0]               # fn saw an empty view at EOF, twice
        s.close()


def test_eof_with_incomplete_message(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            calls = []

            def need(view):
                calls.append(bytes(view))
                return ringline.NEED_MORE
            q.put((await conn.with_data(need), calls))

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"partial")
        s.shutdown(socket.SHUT_WR)
        n, calls = get(q)
        assert n == 0
        assert calls[0] == b"partial" and calls[-1] == b""
        s.close()


def test_peer_close_and_reset(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            try:
                while await conn.with_data(lambda v: len(v)):
                    pass
                q.put("eof")
            except ConnectionError as exc:
                q.put(type(exc).__name__)

    with launched(H, backend) as (sh, workers):
        s = client(sh.address())
        s.sendall(b"bye")
        s.close()
        assert get(q) == "eof"
        s = client(sh.address())
        s.sendall(b"x")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                # RST
        assert get(q) in ("eof", "ConnectionResetError")
        # The worker goes on serving.
        s = client(sh.address())
        s.close()
        assert get(q) == "eof"
        assert not workers[0].failed


# ---- sending -------------------------------------------------------------------------------

def test_send_pool_exhaustion(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            await conn.with_data(lambda v: len(v))
            try:
                conn.send_nowait(b"a" * 1024)          # one slot
                conn.send_nowait(b"b" * 1024)          # the second
                conn.send_nowait(b"c" * 10)            # no room
            except ringline.SendPoolExhausted as exc:
                q.put(str(exc))
            await conn.send(b"d" * 100)                # send() is not pool-bound
            q.put("sent")

    with launched(H, backend, send_pool_slots=2, send_slot_size=1024) as (sh, _):
        s = client(sh.address())
        s.sendall(b"go")
        msg = get(q)
        assert "send pool exhausted" in msg and "send_pool_slots" in msg
        assert get(q) == "sent"
        assert recv_exactly(s, 2148) == b"a" * 1024 + b"b" * 1024 + b"d" * 100
        s.close()
        assert ringline.metrics()["total"]["send_pool_exhausted"] >= 1


def test_send_large_parts_and_with_bytes(backend):
    q = queue.Queue()
    big = os.urandom(3 << 20)

    class H(ringline.Handler):
        async def on_accept(self, conn):
            kept = []
            await conn.with_bytes(lambda b: (kept.append(b), len(b))[1])
            q.put(type(kept[0]).__name__)
            await conn.send(big)                             # SEND_ZC on io_uring
            await conn.send_parts([b"<", memoryview(b"mid"), bytearray(b">")])
            conn.shutdown_write()
            q.put(conn.send_queued)

    with launched(H, backend, send_zc_threshold=65536) as (sh, _):
        s = client(sh.address())
        s.sendall(b"go")
        assert get(q) == "bytes"
        assert recv_all(s) == big + b"<mid>"
        assert get(q) == 0
        s.close()


def test_forward_recv_buf_holds_the_buffer(backend):
    # A 4-buffer ring: forwarded buffers go back to the ring as the sends
    # complete, or the echo would stall after four.
    with launched(EchoForward, backend, ring_size=4, buffer_size=1024) as (sh, _):
        s = client(sh.address())
        for _ in range(50):
            data = os.urandom(3000)
            s.sendall(data)
            assert recv_exactly(s, len(data)) == data
        s.close()


def test_four_buffer_ring_under_load(backend, loop, run):
    with launched(Echo, backend, ring_size=4, buffer_size=1024) as (sh, _):
        addr = sh.address()
        payload = os.urandom(64 * 1024)

        async def one():
            conn = await ringline.connect(addr, timeout=10)
            async with conn:
                send = asyncio.ensure_future(conn.send(payload))
                got = bytearray()

                def take(view):
                    got.extend(view)
                    return len(view)
                while len(got) < len(payload):
                    assert await conn.with_data(take)
                await send
                assert got == payload

        async def main():
            await asyncio.gather(*(one() for _ in range(24)))

        run(main(), timeout=60)
        m = ringline.metrics()["total"]
        if backend == "io_uring":
            assert m["buffer_ring_empty"] > 0      # the ENOBUFS path was taken


# ---- connect ----------------------------------------------------------------------------------

def test_connect_refused_and_timeout(loop, run):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def refused():
        with pytest.raises(ConnectionRefusedError):
            await ringline.connect(("127.0.0.1", port), timeout=5)

    run(refused())

    # A listener whose accept queue is full drops SYNs: connect hangs.
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(0)
    fillers = []
    try:
        for _ in range(4):
            f = socket.socket()
            f.setblocking(False)
            try:
                f.connect(lsock.getsockname())
            except BlockingIOError:
                pass
            fillers.append(f)

        async def times_out():
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await ringline.connect(lsock.getsockname(), timeout=0.3)
            assert loop.time() - t0 < 5

        run(times_out())
    finally:
        for f in fillers:
            f.close()
        lsock.close()


def test_connect_owned_by_task_and_cancel(backend, loop, run):
    with launched(Echo, backend) as (sh, _):
        async def main():
            conn = await ringline.connect("127.0.0.1:%d" % sh.address()[1])
            assert conn.task is asyncio.current_task()
            assert conn.is_outbound and conn.peer_addr == sh.address()

            async def reader(c):
                await c.with_data(lambda v: len(v))

            c2 = await ringline.connect(sh.address())
            t = asyncio.ensure_future(reader(c2))
            await asyncio.sleep(0.01)
            c2.task = t
            assert c2.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            c2.close()
            conn.send_nowait(b"still fine")
            got = await conn.with_bytes(lambda b: len(b))
            conn.close()
            return got

        assert run(main()) == 10


# ---- Unix sockets, TLS --------------------------------------------------------------------------

def test_unix_sockets(backend, loop, run):
    with short_tmpdir() as d:
        path = os.path.join(d, "echo.sock")
        with launched(Echo, backend, tcp=False, unix=path) as (sh, _):
            assert sh.address("unix") == path

            async def main():
                conn = await ringline.connect_unix(path, timeout=5)
                async with conn:
                    await conn.send(b"over unix")
                    return await conn.with_bytes(lambda b: len(b))
            assert run(main()) == 9
        assert not os.path.exists(path)          # removed at shutdown


def test_unix_large_send(backend, loop, run):
    # await send() of more than Config.send_zc_threshold (64 KiB) on a Unix
    # socket: SEND_ZC is TCP's (the kernel refuses it on AF_UNIX), so it is
    # an ordinary send there, both ways.
    with short_tmpdir() as d:
        path = os.path.join(d, "big.sock")
        with launched(Echo, backend, tcp=False, unix=path) as (sh, _):
            async def main():
                conn = await ringline.connect_unix(path, timeout=5)
                async with conn:
                    data = os.urandom(300000)
                    await conn.send(data)
                    got = bytearray()
                    while len(got) < len(data):
                        await conn.with_data(lambda v: (got.extend(v), len(v))[1])
                    return bytes(got) == data
            assert run(main())


def test_tls_both_ways(backend, loop, run):
    server_ctx, client_ctx = tls_contexts()
    q = queue.Queue()

    class TlsEcho(ringline.Handler):
        async def on_accept(self, conn):
            q.put(conn.tls_info["version"])
            while await conn.with_data(lambda v: (conn.send_nowait(v), len(v))[1]):
                pass

    with launched(TlsEcho, backend, tls=server_ctx) as (sh, _):
        addr = sh.address()

        async def main():
            conn = await ringline.connect(addr, timeout=10, ssl=client_ctx,
                                          server_hostname="localhost")
            async with conn:
                assert conn.tls_info["version"].startswith("TLS")
                data = os.urandom(100000)
                await conn.send(data)
                got = bytearray()
                while len(got) < len(data):
                    await conn.with_data(lambda v: (got.extend(v), len(v))[1])
                assert got == data

        run(main(), timeout=30)
        assert get(q).startswith("TLS")
        # A stdlib TLS client against the ringline server.
        raw = client(addr)
        s = client_ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"std")
        assert recv_exactly(s, 3) == b"std"
        s.close()

    # ringline's TLS client against asyncio's TLS server on the same loop.
    async def against_asyncio():
        async def handle(r, w):
            w.write((await r.readexactly(5)).upper())
            await w.drain()
            w.close()
        srv = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        try:
            conn = await ringline.connect(srv.sockets[0].getsockname(), ssl=client_ctx,
                                          server_hostname="localhost", timeout=10)
            await conn.send(b"hello")
            got = bytearray()
            while await conn.with_data(lambda v: (got.extend(v), len(v))[1]):
                pass
            conn.close()
            return bytes(got)
        finally:
            srv.close()

    assert run(against_asyncio(), timeout=30) == b"HELLO"


# ---- the stream adapter ----------------------------------------------------------------------

def test_stream_adapter(backend, loop, run):
    class Streams(ringline.Handler):
        async def on_accept(self, conn):
            reader, writer = conn.streams()
            assert isinstance(reader, asyncio.StreamReader)
            line = await reader.readline()
            writer.write(line.upper())
            body = await reader.readexactly(5)
            writer.writelines([body, b"!"])
            await writer.drain()
            rest = await reader.read()
            writer.write(b"%d" % len(rest))
            writer.close()
            await writer.wait_closed()

    with launched(Streams, backend) as (sh, _):
        async def main():
            conn = await ringline.connect(sh.address())
            reader, writer = conn.streams()
            writer.write(b"hello\nworld")
            assert await reader.readline() == b"HELLO\n"
            assert await reader.readexactly(6) == b"world!"
            writer.write(b"x" * 70000)
            writer.write_eof()
            await writer.drain()
            assert await reader.read() == b"70000"
            with pytest.raises(asyncio.IncompleteReadError):
                await reader.readexactly(1)
            writer.close()

        run(main())


def test_views_kept_past_the_callback(backend):
    # Each fn call keeps a 3-byte slice of its view past the callback and
    # reports it with its position in the stream; the slices must still
    # show those bytes (however the stream was cut into receives: with
    # incremental buffers a message may straddle two).
    q = queue.Queue()

    class Keeper(ringline.Handler):
        async def on_accept(self, conn):
            kept = []
            pos = 0
            while True:
                def fn(view):
                    nonlocal pos
                    kept.append(view)            # the view itself: released after fn
                    kept.append(view[:3])        # a slice: keeps its buffer out of the ring
                    kept.append(pos)
                    pos += len(view)
                    conn.send_nowait(view)
                    return len(view)
                if not await conn.with_data(fn):
                    break
                whole, part, at = kept[-3:]
                try:
                    len(whole)
                    q.put("whole view still usable")
                except ValueError:
                    pass
                q.put((at, bytes(part)))
                del kept[:]                      # let the slices go: buffers return
            q.put(None)

    # A 4-buffer ring: if slices leaked their buffers the echo would stall.
    stream = b""
    with launched(Keeper, backend, ring_size=4, buffer_size=1024) as (sh, _):
        s = client(sh.address())
        for i in range(40):
            msg = b"%03d" % i + b"x" * 500
            stream += msg
            s.sendall(msg)
            assert recv_exactly(s, len(msg)) == msg
        s.close()
        items = []
        while (item := get(q)) is not None:
            items.append(item)
    assert len(items) >= 40
    for item in items:
        assert isinstance(item, tuple), item
        at, part = item
        assert part == stream[at:at + 3], (at, part)

