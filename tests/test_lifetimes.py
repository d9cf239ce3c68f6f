"""What the compiled core lends out comes back (issue 14, point 2).

``ringline.live_counts()`` counts ops (alive, in flight, leaked), read
buffers lent to reads, kernel buffers held by ConnCtx and the memoryviews
over them, send-pool slots and held send buffers.  Each test takes the
counts, does something that ends in a close, an abort, a peer's reset, a
cancel racing a completion or a loop closed with ops still in flight, and
checks that every count is back where it was once the objects are
collected.  The last tests open and close many connections and files and
check that RSS and the fd count come back too.  Every test runs on every
backend.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import socket
import struct
import sys
import time

import pytest

from _runtime_helpers import client, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")


def settle(before: dict, timeout: float = 5.0) -> dict:
    """Collect until the counts are back to `before` (worker threads may
    still be letting go); returns the last counts."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = ringline.live_counts()
        if now == before or time.monotonic() > deadline:
            return now
        time.sleep(0.01)


def _holders() -> list[str]:
    # What keeps the ops still alive, for the failure message.
    from ringline._core import core
    out = []
    for op in [o for o in gc.get_objects() if isinstance(o, core.Op)][:5]:
        refs = [type(r).__name__ for r in gc.get_referrers(op)]
        out.append(f"{op!r} <- {refs}")
    return out


def assert_back(before: dict) -> None:
    after = settle(before)
    diff = {k: after[k] - before[k] for k in before if after[k] != before[k]}
    assert not diff, f"not given back: {diff}; {_holders() if 'ops' in diff else ''}"


@pytest.fixture
def counts():
    gc.collect()
    return ringline.live_counts()


class Echo(asyncio.Protocol):
    def connection_made(self, t):
        self.t = t

    def data_received(self, data):
        self.t.write(data)


# ---- the asyncio face --------------------------------------------------------------

def test_stream_close_abort_and_reset(loop_factory, counts):
    loop = loop_factory()

    async def main():
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        # 1. a clean close after an echo
        r, w = await asyncio.open_connection(*addr)
        w.write(b"x" * 1000)
        assert await r.readexactly(1000) == b"x" * 1000
        w.close()
        await w.wait_closed()
        # 2. an abort with a large write still queued
        r, w = await asyncio.open_connection(*addr)
        w.write(os.urandom(8 << 20))
        w.transport.abort()
        # 3. the peer resets while the server has writes queued (the client
        #    never reads what it asked to have echoed)
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, addr)
        await loop.sock_sendall(s, os.urandom(4 << 20))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        # 4. a half-close: EOF from the client, the server closes on it
        r, w = await asyncio.open_connection(*addr)
        w.write_eof()
        assert await r.read() == b""
        w.close()
        await w.wait_closed()
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()

    loop.run_until_complete(main())
    loop.close()
    assert_back(counts)


def test_cancel_racing_completions(loop_factory, counts):
    """sock_recv/sock_sendall/sock_accept cancelled at random moments while
    the peer sends at random moments: nothing stays lent or in flight."""
    loop = loop_factory()
    rnd = random.Random(14)

    async def main():
        a, b = socket.socketpair()
        for s in (a, b):
            s.setblocking(False)
        lst = socket.create_server(("127.0.0.1", 0))
        lst.setblocking(False)
        for i in range(300):
            t = loop.create_task(loop.sock_recv(a, 4096))
            t2 = loop.create_task(loop.sock_accept(lst))
            if rnd.random() < 0.5:
                try:
                    b.send(b"y" * rnd.randrange(1, 200))
                except BlockingIOError:
                    pass            # a's buffer is full: nothing read it lately
            if rnd.random() < 0.3:
                socket.create_connection(lst.getsockname()).close()
            await asyncio.sleep(0 if rnd.random() < 0.7 else 0.001)
            t.cancel()
            t2.cancel()
            for task in (t, t2):
                try:
                    res = await task
                except asyncio.CancelledError:
                    continue
                if isinstance(res, tuple):
                    res[0].close()
            if rnd.random() < 0.2:
                big = loop.create_task(loop.sock_sendall(b, b"z" * 300000))
                await asyncio.sleep(0)
                big.cancel()
                try:
                    await big
                except asyncio.CancelledError:
                    pass
        for s in (a, b, lst):
            s.close()

    loop.run_until_complete(main())
    loop.close()
    assert_back(counts)


def test_loop_closed_with_ops_in_flight(loop_factory, counts):
    """A loop closed while reads, an accept, a reader callback, a transport
    and a timer still wait: the ring (or poller) gives every op back."""
    loop = loop_factory()
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
    lst = socket.create_server(("127.0.0.1", 0))
    lst.setblocking(False)
    c, d = socket.socketpair()

    async def main():
        loop.create_task(loop.sock_recv(a, 100))
        loop.create_task(loop.sock_accept(lst))
        loop.add_reader(b.fileno(), lambda: None)
        await loop.connect_accepted_socket(Echo, c)
        loop.call_later(3600, lambda: None)
        await asyncio.sleep(0.01)
        assert ringline.live_counts()["ops_inflight"] > counts["ops_inflight"]

    loop.run_until_complete(main())
    loop.remove_reader(b.fileno())
    # Closed as it is: the two tasks still wait on their ops.
    loop.close()
    for s in (a, b, lst, c, d):
        s.close()
    # Their coroutines are closed by the GC: as on asyncio, with nothing
    # raised out of the finalizer (ringline raised "Event loop is closed").
    unraisable = []
    old_hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        assert_back(counts)
    finally:
        sys.unraisablehook = old_hook
    assert not unraisable, [str(u.exc_value) for u in unraisable]


def test_datagram_and_pipe_transports(loop_factory, counts):
    loop = loop_factory()

    async def main():
        got = loop.create_future()

        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                if not got.done():
                    got.set_result(data)

        t1, _ = await loop.create_datagram_endpoint(P, local_addr=("127.0.0.1", 0))
        t2, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, remote_addr=t1.get_extra_info("sockname"))
        t2.sendto(b"hello")
        assert await got == b"hello"
        t1.close()
        t2.abort()
        proc = await asyncio.create_subprocess_exec(
            "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate(b"data" * 1000)
        assert out == b"data" * 1000
        await asyncio.sleep(0.01)

    loop.run_until_complete(main())
    loop.close()
    assert_back(counts)


# ---- the runtime API -----------------------------------------------------------------

def test_with_data_view_kept_past_the_handler(backend, counts):
    """A handler that keeps its with_data view and a slice of it: the view
    itself is ended when fn returns, the slice keeps the kernel buffer out of
    the ring (io_uring) until it is released, then everything comes back."""
    kept = []

    class Keep(ringline.Handler):
        async def on_accept(self, conn):
            def fn(view):
                kept.append(view)           # ended when fn returns
                kept.append(view[:])        # a slice: valid until released
                conn.send_nowait(bytes(view))
                return len(view)
            while await conn.with_data(fn):
                pass

    with launched(Keep, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"abc")
        assert recv_exactly(s, 3) == b"abc"
        with pytest.raises(ValueError):
            bytes(kept[0])
        assert bytes(kept[1]) == b"abc"
        live = ringline.live_counts()
        if backend == "io_uring":       # a kernel buffer (the poll backend copies)
            assert type(kept[1].obj).__name__ == "KBuf"
            assert live["kbuf_views"] > counts["kbuf_views"]
            assert live["pbufs_out"] > counts["pbufs_out"]
        s.close()
        time.sleep(0.1)
        assert bytes(kept[1]) == b"abc"     # still lent after the close
    kept[1].release()
    kept.clear()
    assert_back(counts)


def test_runtime_close_with_sends_queued_and_peer_reset(backend, counts):
    """send_nowait() data queued when the peer resets, and connections that
    end every way: slots, buffers and ops all come back."""

    class Flood(ringline.Handler):
        async def on_accept(self, conn):
            def fn(view):
                for _ in range(64):
                    try:
                        conn.send_nowait(b"q" * 16384)
                    except Exception:
                        break
                return len(view)
            try:
                while await conn.with_data(fn):
                    pass
            except (ConnectionError, OSError):
                pass

    with launched(Flood, backend) as (sh, _):
        for i in range(20):
            s = client(sh.address())
            s.sendall(b"go")
            s.recv(1000)
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        time.sleep(0.2)
    assert_back(counts)


# ---- endurance: many connections and files ------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


#: Under tests/sanitize.py ASan keeps freed memory in quarantine and maps
#: shadow for it, so RSS says nothing about ringline there: the fd count and
#: the live counts are still checked, over fewer cycles.
UNDER_SANITIZER = bool(os.environ.get("RINGLINE_SANITIZE_PRELOAD"))
CYCLES = int(os.environ.get("RINGLINE_LIFETIME_CONNECTIONS",
                            "10000" if UNDER_SANITIZER else "100000"))
FILES = int(os.environ.get("RINGLINE_LIFETIME_FILES", "2000" if UNDER_SANITIZER else "10000"))
#: RSS may end this much above where it started (after a warm-up that
#: brings the pools, free lists and pymalloc arenas to their working size).
RSS_SLACK = 0.05


@pytest.mark.timeout(600)
def test_many_connections_and_files(loop_factory, counts, tmp_path):
    """100,000 connections opened, echoed once and closed (64 at a time),
    and 10,000 files opened, read and closed through ringline.fs: RSS
    within 5 % and the fd count exactly where they were after a warm-up."""
    loop = loop_factory()
    path = tmp_path / "f"
    path.write_bytes(b"r" * 4096)

    async def connections(srv_addr, n):
        async def one():
            s = socket.socket()
            s.setblocking(False)
            try:
                await loop.sock_connect(s, srv_addr)
                await loop.sock_sendall(s, b"ping")
                got = b""
                while len(got) < 4:
                    chunk = await loop.sock_recv(s, 4 - len(got))
                    if not chunk:
                        break
                    got += chunk
                assert got == b"ping"
            finally:
                s.close()
        left = n
        while left:
            k = min(64, left)
            await asyncio.gather(*(one() for _ in range(k)))
            left -= k

    async def files(n):
        for _ in range(n):
            f = await ringline.fs.open(str(path), "rb")
            try:
                assert len(await f.read(4096)) == 4096
            finally:
                await f.close()

    async def main():
        srv = await loop.create_server(Echo, "127.0.0.1", 0)
        addr = srv.sockets[0].getsockname()
        await connections(addr, 5000)          # warm-up
        await files(500)
        gc.collect()
        rss0, fds0 = _rss(), _nfds()
        await connections(addr, CYCLES)
        await files(FILES)
        await asyncio.sleep(0.05)
        gc.collect()
        rss1, fds1 = _rss(), _nfds()
        srv.close()
        await srv.wait_closed()
        return rss0, fds0, rss1, fds1

    rss0, fds0, rss1, fds1 = loop.run_until_complete(main())
    loop.close()
    assert fds1 == fds0, f"fds: {fds0} -> {fds1}"
    if not UNDER_SANITIZER:
        assert rss1 <= rss0 * (1 + RSS_SLACK), f"RSS: {rss0 >> 10} KiB -> {rss1 >> 10} KiB"
    assert_back(counts)
