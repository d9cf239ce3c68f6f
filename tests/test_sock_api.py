"""loop.sock_* over TCP, Unix and UDP sockets; cancellation of a pending
sock_recv; add_reader/add_writer semantics; sock_sendfile of a real file.

Run on every ringline backend and, with RINGLINE_TEST_LOOP=asyncio, on stock
asyncio (the reference).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import socket
import tempfile

import pytest

import _loops
from conftest import run_briefly, run_until

HAS_IPV6 = socket.has_ipv6
try:
    _s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    _s.bind(("::1", 0))
    _s.close()
except OSError:
    HAS_IPV6 = False


def _nonblocking(sock):
    sock.setblocking(False)
    return sock


@pytest.fixture
def short_tmpdir():
    """A short directory for AF_UNIX paths (sun_path is 108 bytes)."""
    d = tempfile.mkdtemp(prefix="rl-", dir="/tmp")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _listener(family, backlog=16):
    if family == socket.AF_INET:
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
    else:
        lsock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        lsock.bind(("::1", 0))
    lsock.listen(backlog)
    return _nonblocking(lsock)


async def _connected_pair(loop, lsock, family, address=None):
    client = _nonblocking(socket.socket(family, socket.SOCK_STREAM))
    accept = loop.create_task(loop.sock_accept(lsock))
    await loop.sock_connect(client, address or lsock.getsockname())
    conn, addr = await asyncio.wait_for(accept, 5)
    return client, conn, addr


async def _recv_exactly(loop, sock, n):
    chunks = []
    got = 0
    while got < n:
        data = await loop.sock_recv(sock, min(65536, n - got))
        if not data:
            raise EOFError(f"EOF after {got} of {n} bytes")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


async def _recv_until_eof(loop, sock, bufsize=65536):
    chunks = []
    while True:
        data = await loop.sock_recv(sock, bufsize)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


# ---------------------------------------------------------------------------
# TCP
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", [
    socket.AF_INET,
    pytest.param(socket.AF_INET6, marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")),
], ids=["ipv4", "ipv6"])
def test_tcp_connect_accept_send_recv(loop, run, family):
    lsock = _listener(family)

    async def main():
        client, conn, addr = await _connected_pair(loop, lsock, family)
        with client, conn:
            assert conn.gettimeout() == 0  # accepted sockets are non-blocking
            assert addr[:2] == client.getsockname()[:2]
            assert conn.family == family and conn.type == socket.SOCK_STREAM
            await loop.sock_sendall(client, b"hello")
            assert await _recv_exactly(loop, conn, 5) == b"hello"
            await loop.sock_sendall(conn, memoryview(b"world"))
            buf = bytearray(10)
            n = await loop.sock_recv_into(client, buf)
            assert bytes(buf[:n]) == b"world"[:n]
            if n < 5:
                assert await _recv_exactly(loop, client, 5 - n) == b"world"[n:]
            # EOF: b"" from sock_recv, 0 from sock_recv_into.
            client.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv(conn, 100) == b""
            conn.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv_into(client, bytearray(10)) == 0

    try:
        run(main())
    finally:
        lsock.close()


def test_tcp_large_sendall_and_recv_into(loop, run):
    lsock = _listener(socket.AF_INET)
    payload = random.Random(7).randbytes(8 * 1024 * 1024 + 123)

    async def main():
        client, conn, _ = await _connected_pair(loop, lsock, socket.AF_INET)
        with client, conn:
            async def reader():
                h = hashlib.sha256()
                total = 0
                buf = bytearray(100_000)
                view = memoryview(buf)
                while True:
                    n = await loop.sock_recv_into(conn, view)
                    if n == 0:
                        return total, h.hexdigest()
                    h.update(view[:n])
                    total += n

            rtask = loop.create_task(reader())
            await loop.sock_sendall(client, payload)
            client.shutdown(socket.SHUT_WR)
            return await asyncio.wait_for(rtask, 20)

    total, digest = run(main(), timeout=30)
    lsock.close()
    assert total == len(payload)
    assert digest == hashlib.sha256(payload).hexdigest()


def test_tcp_recv_into_memoryview_slice(loop, run, socketpair):
    a, b = socketpair

    async def main():
        buf = bytearray(b"." * 16)
        b.send(b"abcd")
        n = await loop.sock_recv_into(a, memoryview(buf)[4:8])
        return n, bytes(buf)

    n, buf = run(main())
    assert n == 4
    assert buf == b"....abcd........"


def test_sock_recv_zero_bytes_and_negative(loop, run, socketpair):
    a, b = socketpair
    assert run(loop.sock_recv(a, 0)) == b""
    with pytest.raises(ValueError):
        run(loop.sock_recv(a, -1))


def test_sock_sendall_empty(loop, run, socketpair):
    a, b = socketpair
    assert run(loop.sock_sendall(a, b"")) is None


def test_sock_accept_many(loop, run):
    lsock = _listener(socket.AF_INET, backlog=64)

    async def main():
        clients = []
        try:
            for _ in range(20):
                c = _nonblocking(socket.socket())
                await loop.sock_connect(c, lsock.getsockname())
                clients.append(c)
            accepted = []
            for _ in range(20):
                conn, addr = await asyncio.wait_for(loop.sock_accept(lsock), 5)
                accepted.append((conn, addr))
            assert sorted(a for _, a in accepted) == sorted(c.getsockname() for c in clients)
            for conn, _ in accepted:
                conn.close()
        finally:
            for c in clients:
                c.close()

    try:
        run(main())
    finally:
        lsock.close()


def test_sock_connect_to_listening_socket_resolves_numeric(loop, run):
    lsock = _listener(socket.AF_INET)
    port = lsock.getsockname()[1]

    async def main():
        client, conn, _ = await _connected_pair(loop, lsock, socket.AF_INET,
                                                ("127.0.0.1", port))
        client.close()
        conn.close()

    try:
        run(main())
    finally:
        lsock.close()


def test_sock_recv_connection_reset(loop, run):
    lsock = _listener(socket.AF_INET)

    async def main():
        client, conn, _ = await _connected_pair(loop, lsock, socket.AF_INET)
        with conn:
            pending = loop.create_task(loop.sock_recv(conn, 100))
            await asyncio.sleep(0.01)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                              b"\x01\x00\x00\x00\x00\x00\x00\x00")
            client.close()
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(pending, 5)

    try:
        run(main())
    finally:
        lsock.close()


# ---------------------------------------------------------------------------
# Unix stream sockets
# ---------------------------------------------------------------------------

def test_unix_stream_socketpair(loop, run, socketpair):
    a, b = socketpair

    async def main():
        await loop.sock_sendall(a, b"x" * 100_000)
        data = await _recv_exactly(loop, b, 100_000)
        assert data == b"x" * 100_000
        await loop.sock_sendall(b, b"back")
        buf = bytearray(4)
        n = await loop.sock_recv_into(a, buf)
        assert bytes(buf[:n]) == b"back"[:n]

    run(main())


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_unix_stream_listener(loop, run, short_tmpdir, abstract):
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if abstract:
        address = b"\0ringline-test-" + os.urandom(6).hex().encode()
    else:
        address = os.path.join(short_tmpdir, "s.sock")
    lsock.bind(address)
    lsock.listen(8)
    lsock.setblocking(False)

    async def main():
        client = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        accept = loop.create_task(loop.sock_accept(lsock))
        await loop.sock_connect(client, address)
        conn, addr = await asyncio.wait_for(accept, 5)
        with client, conn:
            assert addr in ("", b"", None)  # unbound client: no name
            assert conn.gettimeout() == 0
            await loop.sock_sendall(client, b"over unix")
            assert await _recv_exactly(loop, conn, 9) == b"over unix"
            client.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv(conn, 10) == b""

    try:
        run(main())
    finally:
        lsock.close()


def test_unix_connect_missing_path(loop, run, short_tmpdir):
    client = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    try:
        with pytest.raises(FileNotFoundError):
            run(loop.sock_connect(client, os.path.join(short_tmpdir, "missing.sock")))
    finally:
        client.close()


# ---------------------------------------------------------------------------
# datagrams
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("family,host", [
    (socket.AF_INET, "127.0.0.1"),
    pytest.param(socket.AF_INET6, "::1",
                 marks=pytest.mark.skipif(not HAS_IPV6, reason="no IPv6")),
], ids=["ipv4", "ipv6"])
def test_udp_sendto_recvfrom(loop, run, family, host):
    a = _nonblocking(socket.socket(family, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(family, socket.SOCK_DGRAM))
    a.bind((host, 0))
    b.bind((host, 0))

    async def main():
        n = await loop.sock_sendto(a, b"datagram-1", b.getsockname())
        assert n == len(b"datagram-1")
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5)
        assert data == b"datagram-1"
        assert addr[:2] == a.getsockname()[:2]
        # recvfrom_into, whole buffer and with nbytes.
        await loop.sock_sendto(b, b"reply-datagram", a.getsockname())
        buf = bytearray(64)
        n, addr = await asyncio.wait_for(loop.sock_recvfrom_into(a, buf), 5)
        assert bytes(buf[:n]) == b"reply-datagram"
        assert addr[:2] == b.getsockname()[:2]
        await loop.sock_sendto(b, b"0123456789", a.getsockname())
        buf = bytearray(64)
        n, _ = await asyncio.wait_for(loop.sock_recvfrom_into(a, buf, 4), 5)
        assert n == 4 and bytes(buf[:4]) == b"0123"  # the rest is truncated
        # A datagram larger than bufsize is truncated to bufsize.
        await loop.sock_sendto(a, b"x" * 1000, b.getsockname())
        data, _ = await asyncio.wait_for(loop.sock_recvfrom(b, 10), 5)
        assert data == b"x" * 10
        # Boundaries are kept, order too.
        for i in range(20):
            await loop.sock_sendto(a, b"msg%d" % i, b.getsockname())
        got = [(await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5))[0]
               for _ in range(20)]
        assert got == [b"msg%d" % i for i in range(20)]
        # Empty datagram.
        await loop.sock_sendto(a, b"", b.getsockname())
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5)
        assert data == b""

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_udp_connected_socket_send_recv(loop, run):
    a = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))

    async def main():
        await loop.sock_connect(a, b.getsockname())
        await loop.sock_sendall(a, b"connected-udp")
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5)
        assert data == b"connected-udp" and addr == a.getsockname()
        await loop.sock_sendto(b, b"answer", a.getsockname())
        assert await asyncio.wait_for(loop.sock_recv(a, 100), 5) == b"answer"

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_unix_datagram_sendto_recvfrom(loop, run, short_tmpdir):
    pa = os.path.join(short_tmpdir, "a.dgram")
    pb = os.path.join(short_tmpdir, "b.dgram")
    a = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    a.bind(pa)
    b.bind(pb)

    async def main():
        n = await loop.sock_sendto(a, b"unix-dgram", pb)
        assert n == 10
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5)
        assert data == b"unix-dgram" and addr == pa
        await loop.sock_sendto(b, b"back", pa)
        buf = bytearray(16)
        n, addr = await asyncio.wait_for(loop.sock_recvfrom_into(a, buf), 5)
        assert bytes(buf[:n]) == b"back" and addr == pb

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_unix_datagram_unbound_sender(loop, run, short_tmpdir):
    pb = os.path.join(short_tmpdir, "b.dgram")
    a = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    b.bind(pb)

    async def main():
        await loop.sock_sendto(a, b"anon", pb)
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(b, 100), 5)
        # What the socket module reports for an unbound sender.
        assert data == b"anon"
        return addr

    try:
        addr = run(main())
    finally:
        a.close()
        b.close()
    a2, b2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM), \
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        b2.bind(pb + "2")
        a2.sendto(b"anon", pb + "2")
        _, expected = b2.recvfrom(100)
    finally:
        a2.close()
        b2.close()
    assert addr == expected


def test_sock_sendto_unresolved_refused(loop, run):
    # A datagram to a closed loopback port; the ICMP error shows up on the
    # next operation of a connected socket as ConnectionRefusedError.
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", 0))
    addr = holder.getsockname()
    holder.close()
    a = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    async def main():
        await loop.sock_connect(a, addr)
        await loop.sock_sendall(a, b"nobody")
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 5)

    try:
        run(main())
    finally:
        a.close()


# ---------------------------------------------------------------------------
# cancelling a pending sock_recv loses no bytes
# ---------------------------------------------------------------------------

async def _cancel(task):
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_cancel_pending_recv_then_send(loop, run, socketpair, method):
    a, b = socketpair

    async def main():
        if method == "sock_recv":
            pending = loop.create_task(loop.sock_recv(a, 100))
        else:
            pending = loop.create_task(loop.sock_recv_into(a, bytearray(100)))
        await asyncio.sleep(0.02)  # in flight
        assert not pending.done()
        await _cancel(pending)
        b.send(b"first;")
        b.send(b"second;")
        got = await asyncio.wait_for(_recv_exactly(loop, a, 13), 5)
        assert got == b"first;second;"

    run(main())


def test_cancel_pending_recv_racing_data(loop, run, socketpair):
    """The peer sends while the cancel is on its way: the bytes are either
    still in the socket or kept by the loop; the next recvs get them, in
    order, followed by what comes later."""
    a, b = socketpair

    async def main():
        expected = b""
        received = b""
        for i in range(50):
            pending = loop.create_task(loop.sock_recv(a, 4))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            chunk = b"<%03d>" % i
            b.send(chunk)      # may complete the in-flight recv in the kernel
            expected += chunk
            pending.cancel()   # cancelled before the task saw any result
            try:
                received += await pending
            except asyncio.CancelledError:
                pass
            later = b"[%03d]" % i
            b.send(later)
            expected += later
            while len(received) < len(expected):
                received += await asyncio.wait_for(loop.sock_recv(a, 3), 5)
            assert received == expected, i

    run(main())


@pytest.mark.parametrize("method", ["sock_recvfrom", "sock_recvfrom_into"])
def test_cancel_pending_recvfrom_then_send(loop, run, method):
    a = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))

    async def main():
        if method == "sock_recvfrom":
            pending = loop.create_task(loop.sock_recvfrom(a, 100))
        else:
            pending = loop.create_task(loop.sock_recvfrom_into(a, bytearray(100)))
        await asyncio.sleep(0.02)
        await _cancel(pending)
        b.sendto(b"after-cancel", a.getsockname())
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(a, 100), 5)
        assert data == b"after-cancel"
        assert addr == b.getsockname()

    try:
        run(main())
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("method", ["sock_recvfrom", "sock_recvfrom_into"])
def test_cancel_pending_recvfrom_racing_datagram(loop, run, method):
    """The datagram arrives while the cancel is on its way: asyncio leaves
    it in the socket, so the next sock_recvfrom gets it."""
    a = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = _nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))

    async def main():
        received = []
        for i in range(10):
            if method == "sock_recvfrom":
                pending = loop.create_task(loop.sock_recvfrom(a, 100))
            else:
                pending = loop.create_task(loop.sock_recvfrom_into(a, bytearray(100)))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            b.sendto(b"dgram-%d" % i, a.getsockname())
            pending.cancel()  # before the task saw any result
            try:
                result = await pending
            except asyncio.CancelledError:
                try:
                    data, _ = await asyncio.wait_for(loop.sock_recvfrom(a, 100), 0.2)
                except asyncio.TimeoutError:
                    data = None
            else:
                data = result[0] if method == "sock_recvfrom" else b"dgram-%d" % i
            received.append(data)
            assert received == [b"dgram-%d" % k for k in range(i + 1)]

    try:
        run(main())
    finally:
        a.close()
        b.close()


def _socketpair_on_fd(fd):
    """A connected AF_UNIX pair whose first socket has file descriptor
    ``fd`` (a number just freed by closing another socket)."""
    c, d = socket.socketpair()
    if d.fileno() == fd:
        c, d = d, c
    if c.fileno() != fd:
        os.dup2(c.fileno(), fd)
        c.close()
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=fd)
    c.setblocking(False)
    d.setblocking(False)
    return c, d


@pytest.mark.parametrize("kind", ["recv", "accept"])
def test_kept_data_never_reaches_a_new_socket_on_the_same_fd(loop, run, kind):
    async def recv_case():
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        pending = loop.create_task(loop.sock_recv(a, 100))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        b.send(b"old socket's data")
        pending.cancel()
        try:
            await pending
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.01)
        fd = a.fileno()
        a.close()
        b.close()
        c, d = _socketpair_on_fd(fd)
        with c, d:
            assert c.fileno() == fd
            try:
                data = await asyncio.wait_for(loop.sock_recv(c, 100), 0.2)
            except asyncio.TimeoutError:
                data = None  # correct: nothing was sent on the new socket
            assert data is None, f"new socket got {data!r}"

    async def accept_case():
        l1 = _listener(socket.AF_INET)
        pending = loop.create_task(loop.sock_accept(l1))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        client = socket.create_connection(l1.getsockname())
        pending.cancel()
        try:
            conn, _ = await pending
            conn.close()
        except asyncio.CancelledError:
            pass
        await asyncio.sleep(0.01)
        fd = l1.fileno()
        l1.close()
        l2 = socket.socket()
        if l2.fileno() != fd:
            os.dup2(l2.fileno(), fd)
            l2.close()
            l2 = socket.socket(fileno=fd)
        l2.bind(("127.0.0.1", 0))
        l2.listen()
        l2.setblocking(False)
        with client, l2:
            try:
                conn, addr = await asyncio.wait_for(loop.sock_accept(l2), 0.2)
            except asyncio.TimeoutError:
                return  # correct: nobody connected to the new listener
            conn.close()
            pytest.fail(f"the new listener accepted the old listener's connection from {addr}")

    run(recv_case() if kind == "recv" else accept_case())


def test_cancel_pending_recv_tcp_then_more_data(loop, run):
    lsock = _listener(socket.AF_INET)

    async def main():
        client, conn, _ = await _connected_pair(loop, lsock, socket.AF_INET)
        with client, conn:
            for i in range(5):
                pending = loop.create_task(loop.sock_recv(conn, 1024))
                await asyncio.sleep(0.005)
                await _cancel(pending)
            payload = bytes(range(256)) * 64
            await loop.sock_sendall(client, payload)
            client.shutdown(socket.SHUT_WR)
            assert await asyncio.wait_for(_recv_until_eof(loop, conn, 1000), 5) == payload

    try:
        run(main())
    finally:
        lsock.close()


def test_cancel_pending_accept_keeps_connection(loop, run):
    lsock = _listener(socket.AF_INET)

    async def main():
        pending = loop.create_task(loop.sock_accept(lsock))
        await asyncio.sleep(0.01)
        await _cancel(pending)
        client = _nonblocking(socket.socket())
        with client:
            await loop.sock_connect(client, lsock.getsockname())
            conn, addr = await asyncio.wait_for(loop.sock_accept(lsock), 5)
            with conn:
                assert addr == client.getsockname()

    try:
        run(main())
    finally:
        lsock.close()


def test_recv_timeout_via_wait_for_then_recv(loop, run, socketpair):
    a, b = socketpair

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recv(a, 10), 0.02)
        b.send(b"late data")
        return await asyncio.wait_for(_recv_exactly(loop, a, 9), 5)

    assert run(main()) == b"late data"


# ---------------------------------------------------------------------------
# add_reader / add_writer
# ---------------------------------------------------------------------------

def test_remove_reader_writer_return_values(loop, socketpair):
    a, b = socketpair
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is False
    loop.add_reader(a, lambda: None)
    loop.add_writer(a.fileno(), lambda: None)
    assert loop.remove_reader(a.fileno()) is True
    assert loop.remove_reader(a) is False
    assert loop.remove_writer(a) is True
    assert loop.remove_writer(a.fileno()) is False
    run_briefly(loop)


def test_reader_is_level_triggered(loop, socketpair):
    """A reader that consumes 1 byte per call is called again while data
    remains (a selector's level-triggered readiness)."""
    a, b = socketpair
    got = []

    def on_readable():
        got.append(a.recv(1))
        if len(got) == 10:
            assert loop.remove_reader(a) is True

    loop.add_reader(a, on_readable)
    b.send(b"0123456789")
    run_until(loop, lambda: len(got) >= 10, timeout=5)
    for _ in range(5):
        run_briefly(loop)
    assert b"".join(got) == b"0123456789"
    assert len(got) == 10


def test_reader_not_called_without_data_and_called_again_later(loop, socketpair):
    a, b = socketpair
    got = []

    def on_readable():
        got.append(a.recv(100))

    loop.add_reader(a, on_readable)
    for _ in range(5):
        run_briefly(loop)
    assert got == []
    b.send(b"one")
    run_until(loop, lambda: got, timeout=5)
    b.send(b"two")
    run_until(loop, lambda: len(got) == 2, timeout=5)
    assert got == [b"one", b"two"]
    assert loop.remove_reader(a)


def test_writer_is_level_triggered(loop, socketpair):
    a, b = socketpair
    calls = []

    def on_writable():
        calls.append(1)
        if len(calls) == 5:
            assert loop.remove_writer(a) is True

    loop.add_writer(a, on_writable)
    run_until(loop, lambda: len(calls) >= 5, timeout=5)
    for _ in range(5):
        run_briefly(loop)
    assert len(calls) == 5


def test_writer_waits_until_writable(loop, socketpair):
    a, b = socketpair
    # Fill a's send buffer.
    with contextlib.suppress(BlockingIOError):
        while True:
            a.send(b"x" * 65536)
    calls = []
    loop.add_writer(a, lambda: calls.append(1))
    for _ in range(5):
        run_briefly(loop)
    assert calls == []
    # Drain the peer: a becomes writable.
    with contextlib.suppress(BlockingIOError):
        while True:
            if not b.recv(1 << 20):
                break
    run_until(loop, lambda: calls, timeout=5)
    assert loop.remove_writer(a)


def test_add_reader_replaces_callback(loop, socketpair):
    a, b = socketpair
    got = []
    loop.add_reader(a, lambda: got.append(("old", a.recv(100))))
    loop.add_reader(a, lambda: got.append(("new", a.recv(100))))
    b.send(b"data")
    run_until(loop, lambda: got, timeout=5)
    assert got == [("new", b"data")]
    assert loop.remove_reader(a) is True


def test_reader_with_args_and_remove_inside_callback(loop, socketpair):
    a, b = socketpair
    got = []

    def on_readable(tag, sock):
        got.append((tag, sock.recv(100)))
        loop.remove_reader(sock)

    loop.add_reader(a, on_readable, "tag", a)
    b.send(b"abc")
    run_until(loop, lambda: got, timeout=5)
    b.send(b"def")
    for _ in range(5):
        run_briefly(loop)
    assert got == [("tag", b"abc")]
    assert a.recv(100) == b"def"


def test_reader_and_writer_on_same_fd(loop, socketpair):
    a, b = socketpair
    events = []

    def on_writable():
        events.append("w")
        loop.remove_writer(a)

    def on_readable():
        events.append(("r", a.recv(100)))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    loop.add_writer(a, on_writable)
    run_until(loop, lambda: "w" in events, timeout=5)
    b.send(b"both")
    run_until(loop, lambda: len(events) == 2, timeout=5)
    assert sorted(map(str, events)) == sorted(map(str, ["w", ("r", b"both")]))


def test_reader_sees_eof(loop, socketpair):
    a, b = socketpair
    got = []

    def on_readable():
        got.append(a.recv(100))
        loop.remove_reader(a)

    loop.add_reader(a, on_readable)
    b.close()
    run_until(loop, lambda: got, timeout=5)
    assert got == [b""]


def test_add_reader_invalid_fd(loop):
    with pytest.raises(ValueError):
        loop.add_reader(-1, lambda: None)
    with pytest.raises(ValueError):
        loop.add_reader(object(), lambda: None)
    with pytest.raises(ValueError):
        loop.remove_reader("not a file")


def test_add_reader_on_transport_fd_refused(loop, run):
    async def main():
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        tr, _ = await loop.create_connection(asyncio.Protocol,
                                             *server.sockets[0].getsockname())
        try:
            fd = tr.get_extra_info("socket").fileno()
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_reader(fd, lambda: None)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.add_writer(fd, lambda: None)
            with pytest.raises(RuntimeError, match="is used by transport"):
                loop.remove_reader(fd)
        finally:
            tr.close()
            server.close()
            await server.wait_closed()

    run(main())


# ---------------------------------------------------------------------------
# sock_sendfile
# ---------------------------------------------------------------------------

@pytest.fixture
def data_file(tmp_path):
    data = random.Random(99).randbytes(3 * 1024 * 1024 + 17)
    path = tmp_path / "payload.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("offset,count", [(0, None), (1000, None), (12345, 1_000_000)],
                         ids=["whole", "offset", "offset-count"])
def test_sock_sendfile_real_file(loop, run, data_file, offset, count):
    path, data = data_file
    lsock = _listener(socket.AF_INET)
    expected = data[offset:offset + count if count is not None else None]

    async def main():
        client, conn, _ = await _connected_pair(loop, lsock, socket.AF_INET)
        with client, conn:
            reader = loop.create_task(_recv_until_eof(loop, conn))
            with open(path, "rb") as f:
                sent = await loop.sock_sendfile(client, f, offset, count)
                # The file position ends after what was sent.
                assert f.tell() == offset + len(expected)
            client.shutdown(socket.SHUT_WR)
            received = await asyncio.wait_for(reader, 20)
            return sent, received

    try:
        sent, received = run(main(), timeout=30)
    finally:
        lsock.close()
    assert sent == len(expected)
    assert hashlib.sha256(received).digest() == hashlib.sha256(expected).digest()


def test_sock_sendfile_unix_socket_no_fallback(loop, run, data_file, socketpair):
    path, data = data_file
    a, b = socketpair

    async def main():
        reader = loop.create_task(_recv_until_eof(loop, b))
        with open(path, "rb") as f:
            sent = await loop.sock_sendfile(a, f)
        a.shutdown(socket.SHUT_WR)
        return sent, await asyncio.wait_for(reader, 20)

    sent, received = run(main(), timeout=30)
    assert sent == len(data)
    assert received == data


def test_sock_sendfile_empty_file(loop, run, tmp_path, socketpair):
    a, b = socketpair
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert run(loop.sock_sendfile(a, f)) == 0


def test_recv_after_cancelled_recv_keeps_order(loop, run):
    """A recv cancelled around the moment its bytes arrive, followed at once
    by a new recv and more data: whatever the race's outcome, the bytes come
    out in order and none is lost."""
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        with a, b:
            for _ in range(20):
                t = asyncio.ensure_future(loop.sock_recv(a, 100))
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                b.send(b"A")
                if _ % 2:
                    await asyncio.sleep(0.002)  # the recv may complete first
                t.cancel()
                t2 = asyncio.ensure_future(loop.sock_recv(a, 100))
                b.send(b"B")
                got = b""
                try:
                    got = await t
                except asyncio.CancelledError:
                    pass
                while len(got) < 2:
                    got += await (t2 if t2 is not None else loop.sock_recv(a, 100))
                    t2 = None
                assert got == b"AB", got
    run(main())
