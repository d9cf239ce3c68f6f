"""Fuzz target: receive-buffer bookkeeping.

1. BufPool (bufpool.pxi) driven by random sequences of take / give / trim
   at an advancing clock, checked after every step by the core
   (_fuzz_bufpool): no buffer handed out twice, held buffers untouched,
   free list within bounds, everything freed by release().
2. The provided-buffer ring as streams use it: loops whose ring is tiny
   (1..4 buffers of 1..4096 bytes, so ENOBUFS and the single-shot fallback
   happen all the time) and a poll-backend loop (BufPool path), with 1..4
   Unix stream connections fed by random sends, pause_reading /
   resume_reading at random moments, half-closes.  Every byte must arrive
   once and in order, and once all is read every ring buffer must be back
   in the kernel's hands (IORING_REGISTER_PBUF_STATUS: none lost, none
   given twice).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Input, main  # noqa: E402

import ringline  # noqa: E402
from ringline._core import core  # noqa: E402

RINGS = ((1, 1), (1, 4096), (2, 7), (4, 64), (4, 4096), (2, 1024))
SIZES = (1, 3, 100, 1000, 5000, 70000)
_loops = {}


def get_loop(which: int):
    if which not in _loops:
        if which < len(RINGS) and "io_uring" in ringline.available_backends():
            old = core.set_recv_buffers(*RINGS[which])
            try:
                _loops[which] = ringline.new_event_loop("io_uring")
            finally:
                core.set_recv_buffers(*old)
        else:
            _loops[which] = ringline.new_event_loop("poll")
    return _loops[which]


_PATTERN = bytes(range(251)) * (40 * 70000 // 251 + 1)   # period 251: a slip shows


def pattern(start: int, n: int) -> bytes:
    """Bytes start..start+n of the stream every connection sends."""
    assert start + n <= len(_PATTERN)
    return _PATTERN[start:start + n]


class Sink(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.eof = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        if not self.eof.done():
            self.eof.set_result(None)
        return True

    def connection_lost(self, exc):
        if not self.eof.done():
            self.eof.set_exception(exc or ConnectionError("lost before EOF"))


async def streams(inp: Input, loop) -> None:
    n = inp.int_in(1, 4)
    conns = []
    try:
        for _ in range(n):
            a, b = socket.socketpair()
            b.setblocking(False)
            _, proto = await loop.create_connection(Sink, sock=a)
            conns.append([b, proto, 0, False])        # peer, sink, bytes sent, shut
        for _ in range(inp.int_in(1, 40)):
            c = inp.choice(conns)
            b, proto, sent, shut = c
            op = inp.int_in(0, 6)
            if op <= 2 and not shut:
                k = inp.choice(SIZES)
                if proto.transport.is_reading():
                    await loop.sock_sendall(b, pattern(sent, k))
                else:
                    # Nobody reads: what the socket takes now, never waiting.
                    try:
                        k = b.send(pattern(sent, k))
                    except BlockingIOError:
                        k = 0
                c[2] += k
            elif op == 3:
                proto.transport.pause_reading()
            elif op == 4:
                proto.transport.resume_reading()
            elif op == 5:
                await asyncio.sleep(0)
            elif not shut and inp.int_in(0, 3) == 0:
                b.shutdown(socket.SHUT_WR)
                c[3] = True
        for c in conns:
            b, proto, sent, shut = c
            if proto.transport.is_reading() is False:
                proto.transport.resume_reading()
            if not shut:
                b.shutdown(socket.SHUT_WR)
        for b, proto, sent, _ in conns:
            await asyncio.wait_for(proto.eof, 10)
            assert len(proto.data) == sent, (len(proto.data), sent)
            assert proto.data == pattern(0, sent), "bytes lost, doubled or reordered"
        st = core._fuzz_pbuf_status(loop)
        if st is not None:
            assert st["lent"] == 0 and st["in_kernel"] == st["entries"], (
                "ring buffers not all back in the ring once everything was read", st)
    finally:
        for b, proto, _, _ in conns:
            if proto.transport is not None:
                proto.transport.abort()
            b.close()
        await asyncio.sleep(0)


def one_input(data: bytes) -> None:
    inp = Input(data)
    if inp.int_in(0, 2) == 0:
        ops = inp.sized_bytes(400)
        core._fuzz_bufpool(ops, inp.choice((1, 8, 4096)), inp.int_in(1, 8), inp.int_in(0, 4))
        return
    loop = get_loop(inp.int_in(0, len(RINGS)))
    loop.run_until_complete(asyncio.wait_for(streams(inp, loop), 30))


if __name__ == "__main__":
    main(one_input, "bufring")
