"""Fuzz target: parsing one multishot-RECVMSG buffer (dgram.pxi
_recvmsg_out_parse, then the peer address through DgramCore._peer's cache).

The kernel writes struct io_uring_recvmsg_out {namelen, controllen,
payloadlen, flags}, then msg_namelen bytes of name space, msg_controllen of
control space, then the payload; the CQE's res is the bytes it wrote.
namelen and payloadlen are the real lengths, which may exceed what fitted
(a truncated name or datagram).  Here every field, the buffer's size and res
are arbitrary; the buffer ends at an unreadable page.  The parser must read
only inside the buffer and res, return the payload bytes that are there, and
raise ValueError (never crash) for a layout no kernel writes.  A consistent
layout must give exactly the datagram and its sender back, and the peer
cache must give the same tuple object for the same peer and remember its
sockaddr for sendto() back.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Input, main  # noqa: E402
from fuzz_sockaddr import expected_decode  # noqa: E402

from ringline._core import core  # noqa: E402

HDR = 16
STORAGE = 128       # sizeof(struct sockaddr_storage): the name space DgramRecvOp asks for
DGRAM_MAX = 65536


def sockaddr(inp: Input) -> bytes:
    kind = inp.int_in(0, 4)
    if kind == 0:
        return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", inp.uint(2))
                + inp.bytes(4).ljust(4, b"\0") + bytes(8))
    if kind == 1:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", inp.uint(2), inp.uint(4))
                + inp.bytes(16).ljust(16, b"\0") + struct.pack("=I", inp.uint(4)))
    if kind == 2:
        path = inp.sized_bytes(108)
        return struct.pack("=H", socket.AF_UNIX) + path
    if kind == 3:
        return b""
    return inp.sized_bytes(STORAGE + 8)


_peers = None


def one_input(data: bytes) -> None:
    global _peers
    inp = Input(data)
    name = sockaddr(inp)
    payload = inp.sized_bytes(inp.choice((16, 300, 2000)))
    name_space = inp.choice((STORAGE, STORAGE, 0, 16, 28, 110, inp.int_in(0, 300)))
    ctrl_space = inp.choice((0, 0, 0, 16, inp.int_in(0, 300)))
    consistent = inp.int_in(0, 2) != 0
    if consistent:
        namelen = len(name)
        payloadlen = len(payload)
        flags = 0
    else:
        namelen = inp.choice((len(name), inp.uint(4), inp.int_in(0, 300)))
        payloadlen = inp.choice((len(payload), inp.uint(4), inp.int_in(0, 70000)))
        flags = inp.uint(4)
    controllen = 0 if consistent else inp.choice((0, inp.uint(4)))
    namebuf = name[:name_space].ljust(name_space, b"\0")
    body = (struct.pack("=IIII", namelen, controllen, payloadlen, flags)
            + namebuf + bytes(ctrl_space) + payload)
    res = len(body)
    if not consistent:
        res = inp.choice((res, inp.int_in(-200, 70000), res + inp.int_in(-50, 50)))
        cut = inp.int_in(0, 3)
        if cut == 1:                    # a buffer shorter than what was written
            body = body[:inp.int_in(0, len(body))]
        elif cut == 2:                  # a larger buffer, the rest garbage
            body = body + inp.sized_bytes(64)
    use_cache = inp.bool()
    if use_cache and (_peers is None or inp.int_in(0, 50) == 0):
        _peers = core._FzPeers()
    try:
        got, addr, got_flags = core._fuzz_recvmsg_out(
            body, res, name_space, ctrl_space, _peers if use_cache else None)
    except ValueError:
        assert not consistent, "a consistent buffer was refused"
        return
    start = HDR + name_space + ctrl_space
    avail = max(0, min(res, len(body)) - start)
    # Only bytes that are there, never more than the datagram.
    assert len(got) <= avail and len(got) <= DGRAM_MAX, (len(got), avail)
    assert len(got) <= payloadlen
    assert got == body[start:start + len(got)]
    assert got_flags == flags
    if consistent:
        assert got == payload, (got, payload)
        if namelen <= name_space:
            want = expected_decode(name, None)
            assert addr == want, (name, addr, want)
    if use_cache and isinstance(addr, tuple) and len(name) in (16, 28) and namelen == len(name) \
            and namelen <= name_space and len(body) >= HDR + namelen:
        # Same peer again: the very same tuple; its sockaddr remembered.
        _, again, _ = core._fuzz_recvmsg_out(body, res, name_space, ctrl_space, _peers)
        # (Only AF_INET of 16 bytes and AF_INET6 of 28 are cached.)
        if (name[:2], len(name)) in ((struct.pack("=H", socket.AF_INET), 16),
                                     (struct.pack("=H", socket.AF_INET6), 28)):
            assert again is addr
            assert _peers.known(addr) == name, (_peers.known(addr), name)


if __name__ == "__main__":
    main(one_input, "recvmsg_out")
