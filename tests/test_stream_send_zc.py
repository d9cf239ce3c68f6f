"""SEND_ZC for the asyncio face's large queued writes (transport/zcsend.pxi):
core.set_stream_send_zc(threshold), off by default.  Every test runs with it
on (io_uring with the opcode; on the poll backend the switch has no effect)
and forced off, on both backends: large writes through the protocol and
streams APIs, close and abort with SEND_ZC sends in flight (the written
object stays alive until the kernel's notification: live_counts()
['zc_holds'] returns to zero), a peer's reset mid-send, AF_UNIX (no
SEND_ZC there: the kernel has no zero-copy for it).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import os
import socket
import struct
import tempfile
import time

import pytest

import _loops

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")
from ringline._core import core  # noqa: E402

THRESHOLD = 65536


def _has_zc(backend):
    if backend != "io_uring":
        return False
    loop = _loops.loop_factory(backend)()
    try:
        return bool(loop._driver.zero_copy_send)
    finally:
        loop.close()


@pytest.fixture(params=[True, False], ids=["zc", "nozc"])
def zc(request, backend):
    """Whether SEND_ZC is expected to be used: the switch is on for "zc"
    (skipped on io_uring without the opcode) and 0 for "nozc"."""
    on = request.param
    if on and backend == "io_uring" and not _has_zc(backend):
        pytest.skip("this kernel has no IORING_OP_SEND_ZC")
    old = core.set_stream_send_zc(THRESHOLD if on else 0)
    try:
        yield on and backend == "io_uring"
    finally:
        core.set_stream_send_zc(old)


def _counts():
    gc.collect()
    return ringline.live_counts()


def _settle(before, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        now = ringline.live_counts()
        if now == before or time.monotonic() > deadline:
            return {k: now[k] - before[k] for k in before if now[k] != before[k]}
        time.sleep(0.01)


def _payload(n, seed=0):
    # Not one repeated byte: a misordered or stale page would show.
    block = hashlib.sha256(str(seed).encode()).digest() * 2048    # 64 KiB
    return (block * (n // len(block) + 1))[:n]


async def _read_all(reader):
    h = hashlib.sha256()
    n = 0
    while True:
        b = await reader.read(1 << 20)
        if not b:
            return n, h.hexdigest()
        n += len(b)
        h.update(b)


async def _read_from(server, connect=None):
    """Connect to server (TCP on its port unless connect is given), read
    all it sends, close both: (bytes read, sha256)."""
    if connect is None:
        port = server.sockets[0].getsockname()[1]
        connect = asyncio.open_connection("127.0.0.1", port)
    reader, writer = await connect
    try:
        return await _read_all(reader)
    finally:
        writer.close()
        server.close()
        await server.wait_closed()


class _Sender(asyncio.Protocol):
    """Writes `parts` (write() each, or one writelines()) then closes."""

    def __init__(self, parts, lines=False):
        self.parts = parts
        self.lines = lines
        self.lost = None

    def connection_made(self, t):
        if self.lines:
            t.writelines(self.parts)
        else:
            for p in self.parts:
                t.write(p)
        t.close()

    def connection_lost(self, exc):
        self.lost = exc


@pytest.mark.parametrize("size", [1 << 20, 50 << 20], ids=["1MiB", "50MiB"])
@pytest.mark.parametrize("lines", [False, True], ids=["write", "writelines"])
def test_protocol_large_writes_then_close(loop, zc, size, lines):
    # Large and small chunks mixed, queued at once, then close(): close
    # flushes, SEND_ZC or not; the bytes arrive in order.
    before = _counts()
    started = core.stream_send_zc_count()
    parts = [_payload(size, 1), b"x" * 100, _payload(THRESHOLD, 2), b"y" * 7, _payload(size // 3, 3)]
    want = hashlib.sha256(b"".join(parts)).hexdigest()

    async def main():
        return await _read_from(await loop.create_server(lambda: _Sender(parts, lines), "127.0.0.1", 0))

    n, digest = loop.run_until_complete(asyncio.wait_for(main(), 60))
    assert n == sum(map(len, parts))
    assert digest == want
    assert (core.stream_send_zc_count() > started) == zc
    del parts
    assert not _settle(before)


@pytest.mark.parametrize("size", [1 << 20, 50 << 20], ids=["1MiB", "50MiB"])
def test_streams_large_writes_drain(loop, zc, size):
    before = _counts()
    started = core.stream_send_zc_count()
    data = _payload(size, 4)

    async def handle(reader, writer):
        for i in range(0, size, 3 << 20):
            writer.write(data[i:i + (3 << 20)])
            await writer.drain()
        writer.write(b"end")
        writer.close()
        await writer.wait_closed()

    async def main():
        return await _read_from(await asyncio.start_server(handle, "127.0.0.1", 0))

    n, digest = loop.run_until_complete(asyncio.wait_for(main(), 60))
    assert n == size + 3
    assert digest == hashlib.sha256(data + b"end").hexdigest()
    assert (core.stream_send_zc_count() > started) == zc
    assert not _settle(before)


def test_written_bytearray_is_copied(loop, zc):
    # write() takes a copy of mutable data; SEND_ZC sends from that copy,
    # so changing the caller's buffer at once changes nothing on the wire.
    buf = bytearray(_payload(4 << 20, 5))
    want = hashlib.sha256(bytes(buf)).hexdigest()

    class P(asyncio.Protocol):
        def connection_made(self, t):
            t.write(buf)
            buf[:] = b"\0" * len(buf)
            t.close()

    async def main():
        return await _read_from(await loop.create_server(P, "127.0.0.1", 0))

    n, digest = loop.run_until_complete(asyncio.wait_for(main(), 30))
    assert (n, digest) == (4 << 20, want)


@pytest.mark.parametrize("close_loop_at_once", [False, True], ids=["then-peer-reads", "loop-closed"])
def test_abort_with_sends_in_flight(backend, zc, close_loop_at_once):
    # The peer does not read: SEND_ZC sends are in flight (or waiting for
    # their notification) when the transport is aborted, and -- in the
    # second case -- when the loop is closed.  Nothing is freed under the
    # kernel; what the loop could wait for is given back.
    before = _counts()
    loop = _loops.loop_factory(backend)()
    lsock = socket.create_server(("127.0.0.1", 0))
    peer = socket.create_connection(lsock.getsockname())
    conn, _ = lsock.accept()
    lsock.close()
    conn.setblocking(False)
    lost = []

    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t

        def connection_lost(self, exc):
            lost.append(exc)

    async def main():
        t, p = await loop.create_connection(P, sock=conn)
        for i in range(8):
            t.write(_payload(1 << 20, 10 + i))     # queued: the peer reads nothing
        await asyncio.sleep(0.05)
        assert t.get_write_buffer_size() > 0
        t.abort()
        await asyncio.sleep(0.01)

    try:
        loop.run_until_complete(asyncio.wait_for(main(), 20))
        assert lost == [None]
        if not close_loop_at_once:
            # Drain what reached the peer, then let it go.
            peer.settimeout(0.2)
            try:
                while peer.recv(1 << 20):
                    pass
            except OSError:
                pass
    finally:
        loop.close()
        peer.close()
    diff = _settle(before)
    if close_loop_at_once and zc:
        # The peer read nothing, so the kernel still had the pages of the
        # sends it had taken (queued on the socket, which close() leaves to
        # the kernel to flush) when the loop closed: their ops are leaked,
        # never freed under the kernel, each with its chunk.
        k = diff.get("zc_holds", 0)
        assert diff == ({"ops": k, "ops_leaked": k, "zc_holds": k} if k else {}), diff
    else:
        assert not diff, diff


def test_peer_reset_mid_send(loop, zc):
    before = _counts()
    lost = loop.create_future()

    class P(asyncio.Protocol):
        def connection_made(self, t):
            self.t = t
            for i in range(50):
                t.write(_payload(1 << 20, 30 + i))

        def connection_lost(self, exc):
            if not lost.done():
                lost.set_result(exc)

    async def main():
        server = await loop.create_server(P, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.read(1 << 16)       # the sending has started
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()         # closed with SO_LINGER 0: RST
        exc = await asyncio.wait_for(lost, 20)
        server.close()
        await server.wait_closed()
        return exc

    exc = loop.run_until_complete(main())
    assert isinstance(exc, (ConnectionResetError, BrokenPipeError)), exc
    assert not _settle(before)


def test_unix_socket_never_uses_zc(loop, zc):
    # AF_UNIX sockets have no zero-copy transmit (no SOCK_SUPPORT_ZC: the
    # kernel answers EOPNOTSUPP): the transport does not ask.
    started = core.stream_send_zc_count()
    data = _payload(3 << 20, 6)
    path = os.path.join(tempfile.mkdtemp(), "s")

    async def main():
        server = await loop.create_unix_server(lambda: _Sender([data]), path)
        return await _read_from(server, asyncio.open_unix_connection(path))

    try:
        n, digest = loop.run_until_complete(asyncio.wait_for(main(), 30))
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
    assert (n, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert core.stream_send_zc_count() == started


def test_switch_rejects_bad_values():
    old = core.set_stream_send_zc(0)
    try:
        with pytest.raises(TypeError, match="must be an int"):
            core.set_stream_send_zc("65536")
        with pytest.raises(TypeError, match="must be an int"):
            core.set_stream_send_zc(True)
        with pytest.raises(TypeError, match="must be an int"):
            core.set_stream_send_zc(1.5)
        with pytest.raises(ValueError, match="0 \\(never\\) or a byte count"):
            core.set_stream_send_zc(-1)
        assert core.set_stream_send_zc(1 << 100) == 0       # clamped, not an overflow
        assert core.set_stream_send_zc(0) == 0x7fffffffffffffff
    finally:
        core.set_stream_send_zc(old)
