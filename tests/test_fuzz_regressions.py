"""What the fuzzers in tests/fuzz/ found, kept as plain tests (no atheris),
and their committed corpora replayed.

The C-level checks go through the core's test-only entry points
(src/ringline/_core/fuzzhooks.pxi), which put the input at the end of a
readable page: a read past it faults (in the ASan build, in a malloc block
of its exact size, whose redzone catches the same read).  Those that could crash the
interpreter if the bug came back run in a subprocess, so a regression fails
one test instead of killing the run.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import textwrap

import pytest

from _loops import is_asyncio_mode

pytestmark = [
    pytest.mark.skipif(is_asyncio_mode(), reason="ringline's core only"),
]

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")
TARGETS = ("sockaddr", "recvmsg_out", "nvme", "bufring")


def _in_subprocess(code: str) -> None:
    env = dict(os.environ)
    import ringline
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(ringline.__file__))] + [env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr}"


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays(target):
    """Every input of tests/fuzz/corpus/<target>/ passes its target's checks."""
    corpus = os.path.join(FUZZ, "corpus", target)
    env = dict(os.environ)
    import ringline
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(ringline.__file__))] + [env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, os.path.join(FUZZ, f"fuzz_{target}.py"), "--replay", corpus],
                       env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, f"exit {r.returncode}\n{r.stdout}\n{r.stderr[-4000:]}"


# ---- sockaddr -> Python ------------------------------------------------------

def test_decode_truncated_sockaddr_reads_no_further():
    """A sockaddr shorter than its family's struct (1 byte, an AF_INET of
    2..15, an AF_INET6 of 2..27) was read to the struct's end: past the
    length the kernel reported.  Found by fuzz_sockaddr (guard page)."""
    _in_subprocess("""
        import socket, struct
        from ringline._core import core
        for fam, full in ((socket.AF_INET, 16), (socket.AF_INET6, 28)):
            for n in range(2, full):
                raw = (struct.pack("=H", fam) + bytes(range(1, 40)))[:n]
                assert core._fuzz_decode_sockaddr(raw) is None, (fam, n)
        assert core._fuzz_decode_sockaddr(b"\\x02") is None
        assert core._fuzz_decode_sockaddr(b"") is None
    """)


def test_decode_oversized_and_odd_sockaddrs():
    from ringline._core import core
    # An AF_UNIX name longer than sun_path (a reported length past the
    # struct) stops at sun_path's end.
    raw = struct.pack("=H", socket.AF_UNIX) + b"\0" + b"a" * 125
    assert core._fuzz_decode_sockaddr(raw) == b"\0" + b"a" * 107
    assert core._fuzz_decode_sockaddr(struct.pack("=H", socket.AF_UNIX)) == ""      # unnamed
    assert core._fuzz_decode_sockaddr(struct.pack("=H", socket.AF_UNIX) + b"/x\0junk") == "/x"
    # A family the core does not know, with no socket to ask: (family, rest),
    # not an AttributeError on None.
    assert core._fuzz_decode_sockaddr(struct.pack("=H", 17) + b"ab") == (17, b"ab")
    raw6 = (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", 8080, 0x12345)
            + socket.inet_pton(socket.AF_INET6, "fe80::1") + struct.pack("=I", 3))
    assert core._fuzz_decode_sockaddr(raw6) == ("fe80::1", 8080, 0x12345, 3)


# ---- Python -> sockaddr --------------------------------------------------------

def test_encode_refuses_nul_in_host():
    """('127.0.0.1\\0junk', port) was encoded as 127.0.0.1 (inet_pton stops
    at the NUL) where the socket module raises ValueError.  The core now
    leaves it to the socket module.  Found by fuzz_sockaddr."""
    from ringline._core import core
    assert core._fuzz_encode_sockaddr(socket.AF_INET, ("127.0.0.1\0junk", 80)) is None
    assert core._fuzz_encode_sockaddr(socket.AF_INET6, ("::1\0junk", 80)) is None
    assert core._fuzz_encode_sockaddr(socket.AF_INET, ("127.0.0.1", 80)) is not None


def test_sock_connect_nul_host_raises_as_asyncio(loop, run):
    async def attempt(lp):
        s = socket.socket()
        s.setblocking(False)
        try:
            await lp.sock_connect(s, ("127.0.0.1\0junk", 9))
        except Exception as exc:             # noqa: BLE001
            return type(exc)
        finally:
            s.close()
        return None

    ref_loop = asyncio.new_event_loop()
    try:
        want = ref_loop.run_until_complete(attempt(ref_loop))
    finally:
        ref_loop.close()
    assert want is not None
    assert run(attempt(loop)) is want


def test_encode_ipv6_flowinfo_and_scope_ranges():
    """flowinfo is 20 bits: 2**20 and up was encoded (the socket module
    raises OverflowError); odd types are the socket module's to judge."""
    from ringline._core import core
    assert core._fuzz_encode_sockaddr(socket.AF_INET6, ("::1", 80, 0xFFFFF, 0)) is not None
    for bad in ((0x100000, 0), (-1, 0), (0, -1), (0, 1 << 32), (1.5, 0), (0, "1")):
        assert core._fuzz_encode_sockaddr(socket.AF_INET6, ("::1", 80) + bad) is None, bad


def test_encode_unix_as_the_socket_module():
    """'' is autobind (length 2), not the abstract name '\\0'; a path
    needs room for its NUL (107 bytes at most), an abstract name does not."""
    from ringline._core import core
    fam = struct.pack("=H", socket.AF_UNIX)
    assert core._fuzz_encode_sockaddr(socket.AF_UNIX, "") == fam
    assert core._fuzz_encode_sockaddr(socket.AF_UNIX, "/tmp/x") == fam + b"/tmp/x"
    assert core._fuzz_encode_sockaddr(socket.AF_UNIX, "a" * 107) == fam + b"a" * 107
    with pytest.raises(OSError):
        core._fuzz_encode_sockaddr(socket.AF_UNIX, "a" * 108)
    assert core._fuzz_encode_sockaddr(socket.AF_UNIX, b"\0" + b"a" * 107) == fam + b"\0" + b"a" * 107
    with pytest.raises(OSError):
        core._fuzz_encode_sockaddr(socket.AF_UNIX, b"\0" + b"a" * 108)


# ---- multishot RECVMSG buffers -----------------------------------------------

def _recvmsg_buf(namelen, payloadlen, name=b"", payload=b"", flags=0, name_space=128):
    return (struct.pack("=IIII", namelen, 0, payloadlen, flags)
            + name[:name_space].ljust(name_space, b"\0") + payload)


def test_recvmsg_out_trusts_res_not_payloadlen():
    """payloadlen (the datagram's real length) was trusted over the bytes
    the CQE says were written: a buffer shorter than payloadlen was read
    past its end.  And a result shorter than header + name space is
    refused.  Found by fuzz_recvmsg_out (guard page)."""
    _in_subprocess("""
        import socket, struct
        from ringline._core import core
        name = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 80) + bytes([1, 2, 3, 4]) + bytes(8)
        buf = struct.pack("=IIII", 16, 0, 1000, 0) + name.ljust(128, b"\\0") + b"x" * 10
        data, addr, flags = core._fuzz_recvmsg_out(buf, 1144)
        assert data == b"x" * 10 and addr == ("1.2.3.4", 80), (data, addr)
        data, addr, flags = core._fuzz_recvmsg_out(buf, 16 + 128 + 4)
        assert data == b"xxxx"
        for short in (b"", b"\\0" * 15, struct.pack("=IIII", 16, 0, 5, 0) + b"\\x02\\x00"):
            try:
                core._fuzz_recvmsg_out(short, 1144)
            except ValueError:
                pass
            else:
                raise AssertionError("a truncated buffer was parsed")
    """)


def test_recvmsg_out_clamps_namelen():
    """A truncated peer name reports its whole length: at most the name
    space is read."""
    from ringline._core import core
    name = struct.pack("=H", socket.AF_UNIX) + b"/p"
    buf = _recvmsg_buf(500, 3, name, b"abc", name_space=16)
    data, addr, _ = core._fuzz_recvmsg_out(buf, len(buf), 16, 0)
    assert data == b"abc" and addr == "/p"


def test_peer_cache_same_tuple_and_sockaddr():
    from ringline._core import core
    peers = core._FzPeers()
    name = struct.pack("=H", socket.AF_INET) + struct.pack("!H", 5353) + bytes([10, 0, 0, 1]) + bytes(8)
    buf = _recvmsg_buf(16, 2, name, b"hi")
    _, a1, _ = core._fuzz_recvmsg_out(buf, len(buf), peers=peers)
    _, a2, _ = core._fuzz_recvmsg_out(buf, len(buf), peers=peers)
    assert a1 == ("10.0.0.1", 5353) and a1 is a2
    assert peers.known(a1) == name
    assert peers.known(("10.0.0.1", 5353)) is None       # an equal tuple it did not hand out


# ---- NVMe command encoding -------------------------------------------------------

def test_nvme_encoder_refuses_out_of_range_fields():
    """The C encoder cut opcode 0x102 to 0x02 (a READ) and took 1.5 as 1,
    where the Python one (struct) refuses both.  Found by fuzz_nvme."""
    import struct as st
    from ringline import nvme
    from ringline._core import core
    for kw in ({"opcode": 0x102}, {"opcode": -1}, {"flags": 256}, {"opcode": 1.5},
               {"nsid": 1 << 32}, {"addr": -1}, {"cdw10": "1"}):
        args = {"opcode": 1, "nsid": 1, "addr": 0, "data_len": 0, **kw}
        with pytest.raises((OverflowError, TypeError)):
            core.nvme_encode_cmd_c(**args)
        with pytest.raises((st.error, OverflowError, TypeError)):
            nvme.encode_cmd(**args)
    assert core.nvme_encode_cmd_c(2, 1, 0, 0) == nvme.encode_cmd(2, 1, 0, 0)


def test_bigring_refuses_a_command_longer_than_the_sqe():
    from ringline._core import core
    try:
        ring = core.BigRing(4)
    except OSError as exc:
        pytest.skip(f"no SQE128 ring here: {exc}")
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError):
            ring.submit(r, 0, bytes(81), 1)
        ring.submit(r, 0, bytes(80), 2)        # a pipe: an error completion, not a crash
        got = []
        for _ in range(1000):
            got += ring.reap()
            if got:
                break
        assert got and got[0][0] == 2 and got[0][1] < 0
    finally:
        ring.close()
        os.close(r)
        os.close(w)


# ---- buffers -------------------------------------------------------------------

def test_bufpool_random_sequences():
    from ringline._core import core
    import random
    rnd = random.Random(14)
    for _ in range(200):
        core._fuzz_bufpool(rnd.randbytes(rnd.randint(0, 300)), rnd.choice((1, 64)),
                           rnd.randint(1, 8), rnd.randint(0, 4))
