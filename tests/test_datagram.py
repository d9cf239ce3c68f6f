"""Datagram transports: the compiled fast path keeps asyncio's semantics.

sendto() goes straight to the socket when nothing is queued and queues
(in order) only when the socket would block; peer addresses are decoded
once per peer and sendto() back to such a tuple reuses its sockaddr; the
poll backend reads several datagrams per readiness.  These tests pin what
must not change: ordering, write-buffer accounting and pause/resume_writing,
pause_reading between datagrams, the right peer for every datagram, and
error_received.  They also run on stock asyncio (RINGLINE_TEST_LOOP=asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile

import pytest

from _helpers import wait_until


class _Proto(asyncio.DatagramProtocol):
    def __init__(self):
        self.transport = None
        self.got = []
        self.errors = []
        self.events = []
        self.lost = None
        self.lost_called = False

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.got.append((data, addr))

    def error_received(self, exc):
        self.errors.append(exc)

    def pause_writing(self):
        self.events.append(("pause", self.transport.get_write_buffer_size()))

    def resume_writing(self):
        self.events.append(("resume", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc):
        self.lost = exc
        self.lost_called = True


@contextlib.contextmanager
def _unix_dgram_pair():
    # Named and connected both ways, so the endpoint has a peername (send()
    # semantics) on every loop.  `a` goes to a transport, which closes it.
    with tempfile.TemporaryDirectory() as tmp:
        a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with b:
            pa, pb = os.path.join(tmp, "a"), os.path.join(tmp, "b")
            a.bind(pa)
            b.bind(pb)
            a.connect(pb)
            b.connect(pa)
            a.setblocking(False)
            b.setblocking(False)
            yield a, b


def test_backpressure_order_and_flow_control(loop, run):
    # A Unix datagram socket blocks when the peer's queue is full: sendto()
    # must queue from there on, keep the order, count the bytes, pause the
    # protocol above the high-water mark and resume it when drained.
    async def main():
        with _unix_dgram_pair() as (a, b):
            tr, proto = await loop.create_datagram_endpoint(_Proto, sock=a)
            tr.set_write_buffer_limits(high=4096, low=1024)
            buf = bytearray(512)
            n = 2000
            for i in range(n):
                buf[:8] = i.to_bytes(8, "big")
                tr.sendto(buf)      # mutated after: the queue keeps a copy
                buf[:8] = b"XXXXXXXX"
            queued = tr.get_write_buffer_size()
            assert queued > 4096 and queued % 512 == 0
            assert proto.events and proto.events[0][0] == "pause"
            assert proto.events[0][1] > 4096
            seen = []
            while len(seen) < n:
                try:
                    seen.append(int.from_bytes(b.recv(1024)[:8], "big"))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert seen == list(range(n))
            await wait_until(lambda: tr.get_write_buffer_size() == 0)
            assert proto.events[-1][0] == "resume"
            assert proto.events[-1][1] <= 1024
            assert [e for e, _ in proto.events] == ["pause", "resume"] * (len(proto.events) // 2)
            assert proto.errors == []
            tr.close()
            await wait_until(lambda: proto.lost_called)
            assert proto.lost is None
    run(main())


def test_close_with_queue_sends_everything_first(loop, run):
    async def main():
        with _unix_dgram_pair() as (a, b):
            tr, proto = await loop.create_datagram_endpoint(_Proto, sock=a)
            n = 1000
            for i in range(n):
                tr.sendto(i.to_bytes(4, "big"))
            assert tr.get_write_buffer_size() > 0
            tr.close()
            assert tr.is_closing()
            await asyncio.sleep(0.01)
            assert not proto.lost_called     # not before the queue is sent
            seen = []
            while len(seen) < n:
                try:
                    seen.append(int.from_bytes(b.recv(16), "big"))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            assert seen == list(range(n))
            await wait_until(lambda: proto.lost_called)
            assert proto.lost is None and tr.get_write_buffer_size() == 0
            assert proto.errors == []
    run(main())


def test_abort_drops_queue(loop, run, backend):
    async def main():
        with _unix_dgram_pair() as (a, b):
            tr, proto = await loop.create_datagram_endpoint(_Proto, sock=a)
            for i in range(1000):
                tr.sendto(b"x" * 100)
            assert tr.get_write_buffer_size() > 0
            tr.abort()
            if backend != "asyncio":    # 3.11's abort leaves _buffer_size as it was
                assert tr.get_write_buffer_size() == 0
            await wait_until(lambda: proto.lost_called)
            assert proto.errors == []
            if backend != "asyncio":    # (3.11: AttributeError, no _sock)
                tr.sendto(b"late")          # dropped silently
                assert tr.get_write_buffer_size() == 0
    run(main())


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_echo_to_many_peers(loop, run, family, host):
    # Peers whose ports differ by multiples of 256 (and the same port on
    # two sockets in turn): every datagram names its own sender, and a
    # reply to that address reaches that sender only.
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")

    class Echo(_Proto):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            self.transport.sendto(data + b"!", addr)

    async def main():
        try:
            tr, proto = await loop.create_datagram_endpoint(Echo, local_addr=(host, 0), family=family)
        except OSError as exc:
            pytest.skip(f"{host}: {exc}")
        server = tr.get_extra_info("sockname")
        clients = []
        try:
            base = None
            for _ in range(50):
                probe = socket.socket(family, socket.SOCK_DGRAM)
                probe.bind((host, 0))
                base = probe.getsockname()[1]
                probe.close()
                if base + 3 * 256 < 65536:
                    break
            for k in range(4):
                c = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    c.bind((host, base + 256 * k))
                except OSError:
                    c.close()
                    continue
                c.setblocking(False)
                clients.append(c)
            assert len(clients) >= 2
            for rnd in range(5):
                for i, c in enumerate(clients):
                    c.sendto(b"%d-%d" % (rnd, i), server[:2])
                for i, c in enumerate(clients):
                    data = await asyncio.wait_for(loop.sock_recv(c, 100), 5)
                    assert data == b"%d-%d!" % (rnd, i)
            addrs = {}
            for data, addr in proto.got:
                rnd, i = data.split(b"-")
                assert addr[:2] == clients[int(i)].getsockname()[:2]
                addrs.setdefault(int(i), set()).add(addr)
            assert all(len(v) == 1 for v in addrs.values())
            # An equal tuple that is not the one handed out works as well.
            c = clients[0]
            tr.sendto(b"copy", tuple(list(c.getsockname())))
            assert await asyncio.wait_for(loop.sock_recv(c, 100), 5) == b"copy"
            assert proto.errors == []
        finally:
            for c in clients:
                c.close()
            tr.close()
    run(main())


def test_pause_reading_between_datagrams(loop, run):
    # pause_reading() in datagram_received: no more datagrams until resumed,
    # even those already read from the socket in the same batch.
    class Pausing(_Proto):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if len(self.got) == 3:
                self.transport.pause_reading()

    async def main():
        tr, proto = await loop.create_datagram_endpoint(Pausing, local_addr=("127.0.0.1", 0))
        server = tr.get_extra_info("sockname")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            for i in range(10):
                c.sendto(b"%d" % i, server)
            await wait_until(lambda: len(proto.got) >= 3)
            await asyncio.sleep(0.05)
            assert [d for d, _ in proto.got] == [b"0", b"1", b"2"]
            assert not tr.is_reading()
            tr.resume_reading()
            await wait_until(lambda: len(proto.got) == 10)
            assert [d for d, _ in proto.got] == [b"%d" % i for i in range(10)]
        tr.close()
    run(main())


def test_many_datagrams_in_order(loop, run):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", 0))
        server = tr.get_extra_info("sockname")
        tr.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
            c.bind(("127.0.0.1", 0))
            for i in range(200):
                c.sendto(i.to_bytes(4, "big") + b"y" * 1000, server)
            await wait_until(lambda: len(proto.got) == 200)
            assert [int.from_bytes(d[:4], "big") for d, _ in proto.got] == list(range(200))
            assert {a for _, a in proto.got} == {c.getsockname()}
        tr.close()
    run(main())


def test_connected_refused_goes_to_error_received(loop, run):
    # ICMP port unreachable on a connected endpoint: error_received gets
    # ConnectionRefusedError (from the next send or receive), the transport
    # stays open and sends again.
    async def main():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            dead = s.getsockname()
        tr, proto = await loop.create_datagram_endpoint(_Proto, remote_addr=dead)
        try:
            for _ in range(50):
                tr.sendto(b"anyone?")
                await asyncio.sleep(0.005)
                if proto.errors:
                    break
            assert proto.errors
            assert all(isinstance(e, ConnectionRefusedError) for e in proto.errors)
            assert not tr.is_closing()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r:
                r.bind(("127.0.0.1", 0))
                r.setblocking(False)
                tr2, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=r.getsockname())
                tr2.sendto(memoryview(b"still works"))
                assert (await asyncio.wait_for(loop.sock_recvfrom(r, 100), 5))[0] == b"still works"
                tr2.close()
        finally:
            tr.close()
    run(main())


def test_sendto_data_kinds(loop, run, backend):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(_Proto, local_addr=("127.0.0.1", 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r:
            r.bind(("127.0.0.1", 0))
            r.setblocking(False)
            dest = r.getsockname()
            tr.sendto(b"bytes", dest)
            tr.sendto(bytearray(b"bytearray"), dest)
            tr.sendto(memoryview(b"xxmemoryview")[2:], dest)
            tr.sendto(b"", dest)                 # nothing is sent
            expect = [b"bytes", b"bytearray", b"memoryview"]
            if backend != "asyncio":
                # (asyncio's sock.sendto refuses it: a fatal error there)
                tr.sendto(memoryview(b"abcdef")[::2], dest)    # not contiguous
                expect.append(b"ace")
            got = [(await asyncio.wait_for(loop.sock_recvfrom(r, 100), 5))[0] for _ in expect]
            assert got == expect
            with pytest.raises(TypeError, match="bytes-like object"):
                tr.sendto("str", dest)
            assert tr.get_write_buffer_size() == 0
        tr.close()
    run(main())
