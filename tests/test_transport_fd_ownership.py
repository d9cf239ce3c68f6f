"""A transport owns its socket's fd for its whole life.

On the poll backend that fd is registered once, edge-triggered (see
driver/epoll.pxi): these tests pin down what that must not break -- an edge
that arrives while nobody waits (paused reading), data and EOF arriving in
one burst, the fd number reused by a new socket once the transport closed
(or was dropped unclosed), and the promise that a steady stream costs no
epoll_ctl per message.  They run on every backend and on stock asyncio.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings

import pytest

from _helpers import socket_pair, wait_until


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = False
        self.lost = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.lost = exc if exc is not None else True


async def _served(loop, sock, peer):
    """A sock_recv on `sock` waits, then gets what `peer` sends."""
    fut = asyncio.ensure_future(loop.sock_recv(sock, 10))
    await asyncio.sleep(0.01)
    peer.send(b"again")
    assert await asyncio.wait_for(fut, 5) == b"again"


def test_edge_while_paused_is_not_lost(loop, run, socketpair):
    a, b = socketpair

    async def main():
        tr, pr = await loop.connect_accepted_socket(Collect, a)
        await asyncio.sleep(0.01)
        tr.pause_reading()
        b.send(b"x" * 100)
        # Several iterations: the readiness arrives while nobody reads.
        for _ in range(5):
            await asyncio.sleep(0.005)
        assert bytes(pr.data) == b""
        tr.resume_reading()
        await wait_until(lambda: len(pr.data) == 100)
        b.send(b"y" * 10)           # and reading goes on after that
        await wait_until(lambda: len(pr.data) == 110)
        tr.close()
        await wait_until(lambda: pr.lost)

    run(main())


@pytest.mark.parametrize("paused", [False, True], ids=["reading", "paused"])
def test_data_and_eof_in_one_burst(loop, run, paused, socketpair):
    a, b = socketpair

    async def main():
        tr, pr = await loop.connect_accepted_socket(Collect, a)
        if paused:
            await asyncio.sleep(0.01)
            tr.pause_reading()
            await asyncio.sleep(0.01)
        b.send(b"z" * 1000)
        b.shutdown(socket.SHUT_WR)
        if paused:
            await asyncio.sleep(0.02)   # both arrive while nobody reads
            tr.resume_reading()
        await wait_until(lambda: pr.eof)
        assert bytes(pr.data) == b"z" * 1000
        tr.close()
        await wait_until(lambda: pr.lost)

    run(main())


@pytest.mark.parametrize("how", ["close", "drop"])
def test_fd_number_reused_after_transport(loop, run, how, socketpair):
    a, b = socketpair
    fd = a.fileno()

    async def main():
        tr, pr = await loop.connect_accepted_socket(Collect, a)
        b.send(b"hello")
        await wait_until(lambda: pr.data == b"hello")
        if how == "close":
            tr.close()
            await wait_until(lambda: pr.lost)
        else:
            # Dropped unclosed: the transport's __del__ closes the socket.
            tr._protocol = None
            pr.transport = None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del tr
                gc.collect()
        b.close()
        # The kernel hands out the lowest free number: the old one.
        with socket_pair() as (c, d):
            if how == "close":
                assert c.fileno() == fd or d.fileno() == fd
            mine = c if c.fileno() == fd else d
            await _served(loop, mine, d if mine is c else c)

    run(main())


@pytest.mark.ringline_only
def test_poll_stream_needs_no_epoll_ctl_per_message():
    import ringline
    if "poll" not in ringline.available_backends():
        pytest.skip("no poll backend")
    loop = ringline.new_event_loop(backend="poll")

    async def main():
        async def echo(r, w):
            while data := await r.read(100):
                w.write(data)
            w.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
        # Registration calls: epoll_ctl, or kevent() changes with kqueue.
        key = "epoll_ctl" if loop.stats()["mechanism"] == "epoll" else "kevent_changes"
        before = loop.stats()[key]
        for _ in range(500):
            w.write(b"m" * 64)
            assert await r.readexactly(64) == b"m" * 64
        used = loop.stats()[key] - before
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()
        return used

    try:
        used = loop.run_until_complete(main())
    finally:
        loop.close()
    # ONESHOT re-arming would cost ~1000 (one per wait on either side).
    assert used < 20, used


@pytest.mark.ringline_only
def test_conn_dropped_unclosed_then_fd_reused(loop, run):
    """A ConnCtx collected with its reference cycle (its socket's finalizer
    closes the fd before the core can give it back): a later socket on the
    same fd number must still be served (review of the edge-triggered mode)."""
    import ringline

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.setblocking(False)
    addr = srv.getsockname()

    async def main():
        conn = await ringline.connect(addr, timeout=5)
        peer, _ = await loop.sock_accept(srv)
        peer.close()                            # EOF for conn
        seen = []

        def take(view):
            seen.append(bytes(view))
            return len(view)
        assert await conn.with_data(take) == 0
        fd = conn._fileno() if hasattr(conn, "_fileno") else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            del conn
            gc.collect()
        with socket_pair() as (c, d):
            if fd is not None:
                assert fd in (c.fileno(), d.fileno())
            await _served(loop, c, d)
            await _served(loop, d, c)

    try:
        run(main())
    finally:
        srv.close()


def test_datagram_pause_resume_inside_datagram_received(loop, run):
    """pause_reading() + resume_reading() from datagram_received must not
    start the receive twice (review: DgramRecvOp.complete)."""
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind(("127.0.0.1", 0))
    a.setblocking(False)

    class P(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = []

        def connection_made(self, tr):
            self.tr = tr

        def datagram_received(self, data, addr):
            self.got.append(data)
            self.tr.pause_reading()
            self.tr.resume_reading()

        def error_received(self, exc):
            self.got.append(exc)

    async def main():
        tr, pr = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        port = tr.get_extra_info("sockname")
        for i in range(50):
            a.sendto(b"d%d" % i, port)
        await wait_until(lambda: len(pr.got) >= 50)
        assert pr.got == [b"d%d" % i for i in range(50)]
        tr.close()

    try:
        run(main())
    finally:
        a.close()
