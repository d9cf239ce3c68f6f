"""Fuzz target: the core's sockaddr codecs (ops.pxi _decode_sockaddr /
_encode_sockaddr), both directions, every family.

decode: arbitrary bytes as a sockaddr of the length the kernel reported
(AF_INET, AF_INET6, AF_UNIX path/abstract/unnamed, other families,
truncated and oversized), read from a buffer that ends at an unreadable
page; the result is checked against what the socket module's rules give.

encode: arbitrary Python addresses (hosts with NULs, '%', non-ASCII,
surrogates; ports, flowinfo and scope ids out of range or of other types;
tuples of every length; str/bytes/bytearray/memoryview Unix paths).  The
core may decline (None: the socket module then parses the address), raise,
or encode; an address it encodes must be one the socket module accepts,
with the same meaning: the kernel's view of a UDP socket connected through
the socket module is compared with the decoded encoding.
"""

from __future__ import annotations

import os
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import Input, main  # noqa: E402

from ringline._core import core  # noqa: E402

FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_UNSPEC,
            socket.AF_PACKET, socket.AF_NETLINK, 255, 0xFFFF)
SUN_PATH = 108

_socks = {}


def _sock(family, type_):
    key = (family, type_)
    if key not in _socks:
        _socks[key] = socket.socket(family, type_ | socket.SOCK_NONBLOCK)
    return _socks[key]


def expected_decode(raw: bytes, sock):
    """What the core must return for sockaddr raw (len(raw) = the length;
    the core reads no further than a sockaddr_storage)."""
    raw = raw[:128]
    if not raw:
        if sock is not None and sock.family == socket.AF_UNIX:
            return "" if sock.type != socket.SOCK_DGRAM else None
        return None
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET:
        if len(raw) < 16:
            return None
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), struct.unpack_from("!H", raw, 2)[0]
    if family == socket.AF_INET6:
        if len(raw) < 28:
            return None
        port, flow = struct.unpack_from("!HI", raw, 2)
        return (socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow,
                struct.unpack_from("=I", raw, 24)[0])
    if family == socket.AF_UNIX:
        path = raw[2:2 + SUN_PATH]
        if not path:
            return ""
        if path[0] == 0:
            return path
        return os.fsdecode(path.split(b"\0", 1)[0])
    if sock is None:
        return family, raw[2:]
    try:
        return sock.getpeername()
    except OSError:
        return None


def fuzz_decode(inp: Input) -> None:
    kind = inp.int_in(0, 3)
    if kind == 0:                       # anything at all
        raw = inp.sized_bytes(140)
    else:                               # a known family, then anything
        fam = inp.choice(FAMILIES)
        raw = struct.pack("=H", fam) + inp.sized_bytes(138)
        if kind == 2 and fam == socket.AF_UNIX:      # a path: printable, maybe NUL-padded
            body = bytes(0x21 + b % 90 for b in inp.sized_bytes(110))
            raw = raw[:2] + body + b"\0" * inp.int_in(0, 4)
    sock = inp.choice((None, None, _sock(socket.AF_INET, socket.SOCK_DGRAM),
                       _sock(socket.AF_UNIX, socket.SOCK_STREAM),
                       _sock(socket.AF_UNIX, socket.SOCK_DGRAM)))
    got = core._fuzz_decode_sockaddr(raw, sock)
    want = expected_decode(raw, sock)
    assert got == want and type(got) is type(want), (raw, sock, got, want)


HOSTS4 = ("127.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4", "010.1.1.1", "1.2.3",
          "1.2.3.4.5", "256.1.1.1", " 1.2.3.4", "1.2.3.4 ", "localhost", "")
HOSTS6 = ("::1", "::", "fe80::1", "::ffff:1.2.3.4", "2001:db8::1", "fe80::1%lo",
          "fe80::1%1", "1::2::3", ":::", "::1:", "[::1]", "2001:db8:0:0:0:0:0:1:2")


def fuzz_host(inp: Input, family) -> object:
    kind = inp.int_in(0, 6)
    if kind <= 2:
        return inp.choice(HOSTS4 if family == socket.AF_INET else HOSTS6)
    if kind == 3:       # a good host with something glued on
        h = inp.choice(HOSTS4 + HOSTS6)
        extra = inp.text(4)
        return h + extra if inp.bool() else extra + h
    if kind == 4:
        return inp.text(40)
    if kind == 5:
        return inp.choice((None, b"127.0.0.1", 1, bytearray(b"::1")))
    h = inp.choice(HOSTS4 + HOSTS6)
    i = inp.int_in(0, len(h))
    return h[:i] + "\0" + h[i:]


def fuzz_address(inp: Input, family):
    if family == socket.AF_UNIX:
        kind = inp.int_in(0, 5)
        if kind == 0:
            return inp.text(120)
        if kind == 1:
            return inp.sized_bytes(120)
        if kind == 2:
            return b"\0" + inp.sized_bytes(120)
        if kind == 3:
            return bytearray(inp.sized_bytes(120))
        if kind == 4:
            return memoryview(inp.sized_bytes(120))
        return inp.choice((("a", 1), None, 5, "/tmp/" + "x" * inp.int_in(90, 110)))
    n = inp.int_in(0, 6)
    if n == 6:
        return inp.choice(("127.0.0.1", None, 80, ["127.0.0.1", 80], b"\x00" * 16))
    items = [fuzz_host(inp, family)]
    for _ in range(1, n):
        items.append(inp.value() if inp.int_in(0, 3) else inp.int_in(0, 65535))
    return tuple(items[:n])


def socket_module_view(family, address):
    """('ok', kernel's peer address) / ('oserror', None) / ('reject', exc):
    the socket module's (and the kernel's) reading of address, from a UDP
    socket connected to it (a UDP connect sends nothing)."""
    s = _sock(family, socket.SOCK_DGRAM)
    try:
        s.connect(address)
    except (TypeError, ValueError, OverflowError, UnicodeError) as exc:
        return "reject", exc
    except OSError:
        return "oserror", None
    try:
        return "ok", s.getpeername()
    except OSError:         # AF_UNIX "": a connect that connects nothing
        return "oserror", None


def cpython_unix_sockaddr(address):
    """The sockaddr_un CPython's socket module builds (getsockaddrarg), or
    the exception type it raises."""
    if isinstance(address, str):
        try:
            p = os.fsencode(address)
        except UnicodeError:
            return UnicodeError
    elif isinstance(address, (bytes, bytearray, memoryview)):
        p = bytes(address)
    else:
        return TypeError
    if not p or p[0] == 0:              # autobind / abstract namespace
        if len(p) > SUN_PATH:
            return OSError
    elif len(p) >= SUN_PATH:            # room for the terminating NUL
        return OSError
    return struct.pack("=H", socket.AF_UNIX) + p


def fuzz_encode(inp: Input) -> None:
    family = inp.choice((socket.AF_INET, socket.AF_INET6, socket.AF_UNIX, socket.AF_INET,
                         socket.AF_INET6, socket.AF_UNSPEC, socket.AF_PACKET))
    address = fuzz_address(inp, family)
    try:
        raw = core._fuzz_encode_sockaddr(family, address)
    except (TypeError, ValueError, OverflowError, OSError, UnicodeError) as exc:
        # Refused: the socket module must refuse it as well.
        if family == socket.AF_UNIX:
            want = cpython_unix_sockaddr(address)
            assert not isinstance(want, bytes), (address, exc, want)
        elif family in (socket.AF_INET, socket.AF_INET6):
            verdict, _ = socket_module_view(family, address)
            assert verdict != "ok", (family, address, exc)
        return
    if raw is None:
        return                          # left to the socket module
    assert family in (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX), (family, address, raw)
    if family == socket.AF_UNIX:
        want = cpython_unix_sockaddr(address)
        assert raw == want, ("AF_UNIX encoding differs from the socket module's",
                             address, raw, want)
        return
    verdict, peer = socket_module_view(family, address)
    assert verdict != "reject", ("the core encodes an address the socket module rejects",
                                 family, address, raw, peer)
    decoded = core._fuzz_decode_sockaddr(raw, None)
    if verdict == "ok":
        # The kernel's reading of the socket module's sockaddr is ours
        # (a connect to the unspecified address goes to a loopback one
        # of the kernel's choosing: only the port then).
        if decoded[0] in ("0.0.0.0", "::"):
            assert decoded[1] == peer[1], (family, address, decoded, peer)
        else:
            assert decoded[:2] == peer[:2], (family, address, decoded, peer)
        if family == socket.AF_INET6 and decoded[0].lower().startswith("fe80:"):
            # (the kernel keeps a scope id only for a link-local peer)
            assert decoded[3] == peer[3], (address, decoded, peer)
    # The exact bytes, from the address as the socket module reads it.
    host, port = address[0], address[1]
    packed = socket.inet_pton(family, host)
    if family == socket.AF_INET:
        want = struct.pack("=H", family) + struct.pack("!H", port) + packed + bytes(8)
    else:
        flow = address[2] if len(address) > 2 else 0
        scope = address[3] if len(address) > 3 else 0
        want = (struct.pack("=H", family) + struct.pack("!HI", port, flow) + packed
                + struct.pack("=I", scope))
    assert raw == want, (family, address, raw, want)


def one_input(data: bytes) -> None:
    inp = Input(data)
    if inp.bool():
        fuzz_decode(inp)
    else:
        fuzz_encode(inp)


if __name__ == "__main__":
    main(one_input, "sockaddr")
