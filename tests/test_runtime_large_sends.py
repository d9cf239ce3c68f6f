"""Large sends on the runtime API: send_nowait() of buffers of 32 KiB to
300 KiB, a reader that reads nothing until 4 MiB are queued, a send pool too
small for one send (send_nowait() is all or nothing), and forward_recv_buf()
of large received pieces with and without direct descriptors.

The bytes must arrive whole and in order however the kernel splits them,
and the accounting that send()/drain() wait on must count every byte.
Every test runs on every backend.
"""

from __future__ import annotations

import queue
import threading

import pytest

from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")

SIZES = [32768, 40000, 100 * 1024, 1, 65536, 300 * 1024, 5000, 131072]


def _payload(i, n):
    return bytes([(i * 7 + j) % 251 for j in range(251)]) * (n // 251) + b"z" * (n % 251)


@pytest.mark.parametrize("kind", ["bytes", "memoryview"])
def test_large_sends_arrive_whole_and_in_order(backend, kind):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            for i, n in enumerate(SIZES * 3):
                data = _payload(i, n)
                conn.send_nowait(data if kind == "bytes" else memoryview(bytearray(data)))
            await conn.send(b"!")                # resolves once all of it was taken
            q.put(conn.qbytes)

    expect = b"".join(_payload(i, n) for i, n in enumerate(SIZES * 3)) + b"!"
    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        assert recv_exactly(s, len(expect)) == expect
        qbytes = get(q)
        s.close()
    assert qbytes == 0


def test_slow_reader_gets_everything_in_order(backend):
    # The client reads nothing until the handler has queued 4 MiB: the
    # socket buffers fill, the rest waits in the pool.
    q = queue.Queue()
    chunks = [_payload(i, 256 * 1024) for i in range(16)]

    class H(ringline.Handler):
        async def on_accept(self, conn):
            for c in chunks:
                conn.send_nowait(c)
            q.put(conn.qbytes)
            await conn.drain(0)
            q.put(conn.qbytes)

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        queued = get(q)
        got = recv_exactly(s, 16 * 256 * 1024)
        drained = get(q)
        s.close()
    assert got == b"".join(chunks)
    assert queued > 0 and drained == 0


def test_all_or_nothing_when_the_pool_is_small(backend):
    # A send the pool cannot hold whole is refused, and no byte of it goes
    # out; one that fits goes.
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            try:
                conn.send_nowait(b"a" * (200 * 1024))    # 13 slots of 16 KiB: more than 8
            except ringline.SendPoolExhausted:
                q.put("refused")
            conn.send_nowait(b"b" * (100 * 1024))        # 7 slots: fits
            await conn.drain(0)
            q.put("sent")

    with launched(H, backend, send_pool_slots=8, send_slot_size=16384) as (sh, _):
        s = client(sh.address())
        assert get(q) == "refused"
        assert recv_exactly(s, 100 * 1024) == b"b" * (100 * 1024)
        assert get(q) == "sent"
        s.close()


@pytest.mark.parametrize("fixed", [0, 64], ids=["fds", "fixed_files"])
def test_forward_large_messages(backend, fixed):
    # forward_recv_buf() of large received pieces, each held until the
    # kernel took it, on real fds and in the direct-descriptor table.
    from ringline.runtime._echo import EchoForward

    if fixed and backend != "io_uring":
        pytest.skip("direct descriptors are io_uring's")
    data = b"".join(_payload(i, 150 * 1024) for i in range(6))
    with launched(EchoForward, backend, fixed_files=fixed) as (sh, _):
        s = client(sh.address())
        got = bytearray()

        def reader():
            got.extend(recv_exactly(s, len(data)))

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join(30)
        s.close()
    assert bytes(got) == data


def test_large_send_goes_out_at_once(backend):
    # On io_uring a send_nowait() of 32 KiB or more with nothing queued is
    # tried by send() at once (as the stream transport's write() is): the
    # kernel takes it whole into an empty socket buffer, so nothing is left
    # queued; bytes_out counts it either way.
    q = queue.Queue()
    data = _payload(3, 64 * 1024)

    class H(ringline.Handler):
        async def on_accept(self, conn):
            conn.send_nowait(data)
            q.put(conn.qbytes)
            conn.send_nowait(b"tail")            # behind it, in order
            await conn.drain(0)
            q.put("drained")

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        left = get(q)
        assert recv_exactly(s, len(data) + 4) == data + b"tail"
        assert get(q) == "drained"
        s.close()
        out = sh.metrics()["total"]["bytes_out"]
    if backend == "io_uring":
        assert left == 0
    assert out == len(data) + 4
