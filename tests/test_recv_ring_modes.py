"""How receives use the buffer ring (driver/uring.h explains both):
incremental consumption (IOU_PBUF_RING_INC, Linux 6.12: the kernel fills
one buffer in pieces, several receives in turn) and recv bundles
(IORING_RECVSEND_BUNDLE, 6.10: one CQE for several buffers).  Every test
runs in each mode: incremental on (the default where the kernel has it) or
forced off (core.set_recv_incremental(False), what a kernel before 6.12
gets), each with bundles off (the default) and on
(core.set_recv_bundles(True)).  io_uring only: the buffer ring is the ring's.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import random
import socket

import pytest

import _loops
from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only


def _io_uring_available():
    if _loops.is_asyncio_mode():
        return False
    import ringline
    return "io_uring" in ringline.available_backends()


needs_uring = pytest.mark.skipif(not _io_uring_available(), reason="io_uring unavailable")


def _kernel_has(key, **switch):
    # What the driver found: a loop asks, and the ring says what it got.
    import ringline
    from ringline._core import core
    olds = {name: getattr(core, name)(value) for name, value in switch.items()}
    try:
        loop = ringline.new_event_loop("io_uring")
    finally:
        for name, value in olds.items():
            getattr(core, name)(value)
    try:
        return loop.stats()[key]
    finally:
        loop.close()


@pytest.fixture(params=[(True, False), (False, False), (True, True), (False, True)],
                ids=["inc", "whole", "inc-bundles", "whole-bundles"])
def mode(request):
    inc, bundles = request.param
    if not _io_uring_available():
        pytest.skip("io_uring unavailable")
    if inc and not _kernel_has("recv_incremental", set_recv_incremental=True):
        pytest.skip("this kernel has no incremental buffer consumption (6.12+)")
    if bundles and not _kernel_has("recv_bundles", set_recv_bundles=True):
        pytest.skip("this kernel has no recv bundles (6.10+)")
    return request.param


@contextlib.contextmanager
def _bundles(on):
    from ringline._core import core
    old = core.set_recv_bundles(on)
    try:
        yield
    finally:
        core.set_recv_bundles(old)


def _uring_loop(mode, entries=4, size=4096):
    import ringline
    from ringline._core import core
    inc, bundles = mode
    old_bufs = core.set_recv_buffers(entries, size)
    old_inc = core.set_recv_incremental(inc)
    try:
        with _bundles(bundles):
            loop = ringline.new_event_loop("io_uring")
    finally:
        core.set_recv_buffers(*old_bufs)
        core.set_recv_incremental(old_inc)
    st = loop.stats()
    assert st["recv_buffers"] == (entries, size)
    assert (st["recv_incremental"], st["recv_bundles"]) == (inc, bundles)
    return loop


class _Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


@needs_uring
def test_small_messages_share_a_buffer(mode):
    # 100 round trips of 100 bytes on one connection (client and server both
    # on this loop: 20,000 bytes received).  Whole buffers: the ring's head
    # moves once per receive.  Incremental: once per 4 KiB filled.
    from ringline._core import core
    inc = mode[0]
    loop = _uring_loop(mode)
    try:
        async def main():
            server = await loop.create_server(_Echo, "127.0.0.1", 0)
            r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
            await asyncio.sleep(0)
            head0 = core._fuzz_pbuf_status(loop)["head"]
            for i in range(100):
                msg = bytes([i]) * 100
                w.write(msg)
                assert await r.readexactly(100) == msg
            head1 = core._fuzz_pbuf_status(loop)["head"]
            w.close()
            await w.wait_closed()
            server.close()
            await server.wait_closed()
            return (head1 - head0) & 0xFFFF

        moved = loop.run_until_complete(asyncio.wait_for(main(), 20))
        if inc:
            assert moved <= 8, moved        # 20,000 bytes / 4,096 per buffer
        else:
            assert moved >= 190, moved      # one buffer per receive
        st = core._fuzz_pbuf_status(loop)
        assert st["lent"] == 0 and st["in_kernel"] == st["entries"], st
    finally:
        loop.close()


@needs_uring
@pytest.mark.parametrize("entries,size", [(4, 4096), (64, 131072)])
def test_echo_many_connections_any_sizes(mode, entries, size):
    # Pieces of one buffer go to different connections, in arrival order;
    # every byte must come back where it belongs, and every buffer must end
    # up back in the ring.
    from ringline._core import core
    loop = _uring_loop(mode, entries, size)
    rnd = random.Random(18)
    sizes = [[rnd.choice([1, 100, 4095, 4096, 4097, 10_000, rnd.randint(1, 300_000)])
              for _ in range(6)] for _ in range(32)]
    try:
        async def one(i, addr):
            r, w = await asyncio.open_connection(*addr)
            for j, n in enumerate(sizes[i]):
                payload = random.Random(i * 100 + j).randbytes(n)
                w.write(payload)
                assert await r.readexactly(n) == payload, (i, j, n)
            blob = random.Random(-i).randbytes(sum(sizes[i]))
            w.write(blob)
            assert await r.readexactly(len(blob)) == blob
            w.close()
            await w.wait_closed()

        async def main():
            server = await loop.create_server(_Echo, "127.0.0.1", 0, backlog=64)
            addr = server.sockets[0].getsockname()
            await asyncio.gather(*[one(i, addr) for i in range(32)])
            server.close()
            await server.wait_closed()

        loop.run_until_complete(asyncio.wait_for(main(), 60))
        assert loop.stats()["cq_overflow"] == 0
        st = core._fuzz_pbuf_status(loop)
        assert st["lent"] == 0 and st["in_kernel"] == st["entries"], st
    finally:
        loop.close()


# ---- the runtime API: pieces handed on without a copy -----------------------

def _records(i, n):
    rnd = random.Random(i)
    out = []
    for _ in range(n):
        body = rnd.randbytes(rnd.randint(0, 9000))
        out.append(len(body).to_bytes(4, "big") + body)
    return out


@needs_uring
@pytest.mark.parametrize("send_mode", ["with_data", "forward"])
def test_runtime_views_over_shared_buffers(mode, send_mode):
    # A length-prefixed record protocol: fn returns NEED_MORE until a whole
    # record is in the view, so views span pieces of several buffers; in
    # "forward" mode the record's own kernel buffer is what gets sent, held
    # until the send completes.  A ring of 8 x 4 KiB makes connections share
    # and recycle buffers constantly.
    import ringline
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            send = conn.forward_recv_buf if send_mode == "forward" else conn.send_nowait

            def fn(view):
                if len(view) < 4:
                    return ringline.NEED_MORE
                n = 4 + int.from_bytes(view[:4], "big")
                if len(view) < n:
                    return ringline.NEED_MORE
                send(view[:n])
                return n

            st = asyncio.get_running_loop().stats()
            q.put((st["recv_incremental"], st["recv_bundles"]))
            while await conn.with_data(fn):
                pass

    inc, bundles = mode
    with _bundles(bundles), launched(H, "io_uring", ring_size=8, buffer_size=4096,
                                     recv_incremental=inc) as (sh, _):
        socks = [client(sh.address()) for _ in range(6)]
        recs = [_records(i, 40) for i in range(6)]
        for k in range(40):
            for s, rs in zip(socks, recs):
                s.sendall(rs[k])
            for s, rs in zip(socks, recs):
                assert recv_exactly(s, len(rs[k])) == rs[k]
        for s in socks:
            s.close()
        seen = {get(q) for _ in socks}
    assert seen == {mode}


@needs_uring
def test_runtime_peer_reset_mid_buffer(mode):
    # A connection reset while its data sits in a piece of a shared buffer
    # must not take other connections' pieces with it.
    from ringline.runtime._echo import EchoWithData

    inc, bundles = mode
    with _bundles(bundles), launched(EchoWithData, "io_uring", ring_size=4, buffer_size=4096,
                                     recv_incremental=inc) as (sh, _):
        good = client(sh.address())
        for round_ in range(20):
            bad = client(sh.address())
            bad.sendall(b"x" * 1000)
            bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            bad.close()                                 # RST
            msg = bytes([round_]) * 700
            good.sendall(msg)
            assert recv_exactly(good, len(msg)) == msg
        good.close()


def test_config_rejects_non_bool():
    import ringline
    with pytest.raises(ValueError, match="recv_incremental must be a bool"):
        ringline.Config(recv_incremental=1).validate()
