"""Direct descriptors for the runtime API's accepted connections
(Config.fixed_files; io_uring only, issue 18 item 2).

Each test runs on every backend: on io_uring with the table the accepted
connections live in a ring slot (conn.direct, no process fd); on poll, or
with the feature switched off (core.set_direct_descriptors(False), what a
kernel without FIXED_FD_INSTALL gets), they keep real fds and behave the
same.  Workers are threads (the switch is process-global); the fd-count
target runs the server in a child process.
"""

from __future__ import annotations

import os
import queue
import resource
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from _runtime_helpers import client, get, launched, recv_all, recv_exactly, tls_contexts

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")
from ringline._core import core  # noqa: E402
from ringline.runtime._echo import EchoWithData as Echo  # noqa: E402


@pytest.fixture(params=[True, False], ids=["direct", "forced-off"])
def direct(request):
    old = core.set_direct_descriptors(request.param)
    try:
        yield request.param
    finally:
        core.set_direct_descriptors(old)


def _expect_direct(backend, direct):
    return direct and backend == "io_uring"


def _nfds(pid="self"):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- echo, addresses ----------------------------------------------------------------

def test_echo_and_addresses(backend, direct):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            q.put((conn.direct, conn.sock is None, conn.peer_addr, conn.local_addr, repr(conn)))
            while await conn.with_data(lambda v: (conn.send_nowait(v), len(v))[1]):
                pass

    with launched(H, backend, fixed_files=64) as (sh, _):
        for _ in range(3):      # slots are freed and reused
            s = client(sh.address())
            is_direct, nosock, peer, local, r = get(q)
            assert is_direct == nosock == _expect_direct(backend, direct)
            assert peer == s.getsockname() and local == s.getpeername()
            assert ("slot=" in r) == is_direct
            for n in (1, 5000, 70000):
                data = os.urandom(n)
                s.sendall(data)
                assert recv_exactly(s, n) == data
            s.close()


def test_listener_nodelay_reaches_direct_connections(backend, direct):
    # A slot takes no setsockopt: the worker sets TCP_NODELAY on the
    # listener and the kernel copies it into every accepted socket.  What
    # that rests on, on a plain socket:
    ls = socket.socket()
    ls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen()
    c = socket.create_connection(ls.getsockname())
    a, _ = ls.accept()
    assert a.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    for x in (a, c, ls):
        x.close()
    with launched(Echo, backend, fixed_files=8) as (sh, _):
        s = client(sh.address())
        for _ in range(50):     # small request/response: no Nagle stall
            s.sendall(b"x")
            assert recv_exactly(s, 1) == b"x"
        s.close()


# ---- sending, closing ---------------------------------------------------------------

def test_send_variants_zc_and_shutdown(backend, direct):
    q = queue.Queue()
    big = os.urandom(1 << 20)

    class H(ringline.Handler):
        async def on_accept(self, conn):
            await conn.with_data(lambda v: len(v))
            conn.send_nowait(b"now;")
            await conn.send(big)                      # SEND_ZC on io_uring
            await conn.send_parts([b"<", memoryview(b"mid"), bytearray(b">")])
            conn.forward_recv_buf(b"copied")          # not a view: copied
            conn.shutdown_write()                     # SHUTDOWN on the slot
            q.put(conn.direct)
            await conn.with_data(lambda v: len(v))    # the peer's EOF

    with launched(H, backend, fixed_files=8, send_zc_threshold=65536) as (sh, _):
        s = client(sh.address())
        s.sendall(b"go")
        assert get(q) == _expect_direct(backend, direct)
        assert recv_all(s) == b"now;" + big + b"<mid>copied"
        s.close()


def test_close_abort_and_peer_reset(backend, direct):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            first = bytes(await _read(conn))
            if first == b"close":
                conn.send_nowait(b"bye")
                conn.close()                          # flushes, then CLOSE on the slot
            elif first == b"abort":
                conn.send_nowait(b"x" * 100)
                conn.abort()
            else:
                try:
                    while await conn.with_data(lambda v: len(v)):
                        pass
                    q.put("eof")
                except ConnectionError as exc:
                    q.put(type(exc).__name__)
                return
            q.put(first.decode())

    with launched(H, backend, fixed_files=8) as (sh, workers):
        s = client(sh.address())
        s.sendall(b"close")
        assert get(q) == "close"
        assert recv_all(s) == b"bye"
        s.close()
        s = client(sh.address())
        s.sendall(b"abort")
        assert get(q) == "abort"
        try:
            recv_all(s)
        except ConnectionResetError:
            pass
        s.close()
        s = client(sh.address())
        s.sendall(b"reset")
        time.sleep(0.05)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()                                     # RST
        assert get(q) in ("eof", "ConnectionResetError")
        s = client(sh.address())                      # still serving
        s.sendall(b"close")
        assert get(q) == "close"
        s.close()
        assert not workers[0].failed


async def _read(conn):
    got = bytearray()
    await conn.with_data(lambda v: (got.extend(v), len(v))[1])
    return got


def test_tls_over_a_direct_connection(backend, direct):
    server_ctx, client_ctx = tls_contexts()
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            q.put((conn.direct, conn.tls_info["version"]))
            while await conn.with_data(lambda v: (conn.send_nowait(v), len(v))[1]):
                pass

    with launched(H, backend, tls=server_ctx, fixed_files=8) as (sh, _):
        s = client_ctx.wrap_socket(client(sh.address()), server_hostname="localhost")
        data = os.urandom(100000)
        s.sendall(data)
        assert recv_exactly(s, len(data)) == data
        is_direct, version = get(q)
        assert is_direct == _expect_direct(backend, direct) and version.startswith("TLS")
        s.close()


# ---- limits -------------------------------------------------------------------------

def test_max_connections(backend, direct):
    m0 = ringline.metrics()["total"]
    with launched(Echo, backend, fixed_files=16, max_connections=2) as (sh, _):
        a, b = _two_echoing(sh)
        c = client(sh.address())
        assert _refused(c)
        m = ringline.metrics()["total"]
        assert m["connections_rejected"] > m0["connections_rejected"]
        assert m["direct_table_full"] == m0["direct_table_full"]
        a.close()
        _wait_closed(m0["connections_closed"] + 1)
        d = client(sh.address())
        d.sendall(b"ok")
        assert recv_exactly(d, 2) == b"ok"
        for s in (b, c, d):
            s.close()


def _refused(s):
    # Closed by the server at accept: EOF, or a reset if data was in flight.
    s.settimeout(5)
    try:
        s.sendall(b"?")
        return s.recv(10) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def _wait_metric(name, n, timeout=10.0):
    """Wait until the runtime's total of metric `name` reaches n; return the totals."""
    deadline = time.monotonic() + timeout
    while (m := ringline.metrics()["total"])[name] < n:
        assert time.monotonic() < deadline, f"{name} did not reach {n} in time"
        time.sleep(0.01)
    return m


def _wait_closed(n):
    _wait_metric("connections_closed", n, timeout=5.0)


def _two_echoing(sh):
    """Two connections that have each echoed once."""
    a, b = client(sh.address()), client(sh.address())
    for s in (a, b):
        s.sendall(b"hi")
        assert recv_exactly(s, 2) == b"hi"
    return a, b


def test_full_table(backend, direct, caplog):
    # Two slots, max_connections larger: the third connection finds the
    # table full.  The kernel has accepted and closed it (ENFILE ends the
    # multishot ACCEPT); the worker counts it, logs once, and re-arms.
    m0 = ringline.metrics()["total"]
    with launched(Echo, backend, fixed_files=2, max_connections=100) as (sh, workers):
        a, b = _two_echoing(sh)
        extra = [client(sh.address()) for _ in range(3)]
        if _expect_direct(backend, direct):
            assert all(_refused(s) for s in extra)
            # The kernel closed them itself; the worker counts each when
            # it reaps the ACCEPT's ENFILE, which may come a moment later.
            m = _wait_metric("direct_table_full", m0["direct_table_full"] + 3)
            assert m["direct_table_full"] - m0["direct_table_full"] == 3
            assert m["connections_rejected"] - m0["connections_rejected"] == 3
            logs = [r for r in caplog.records if "direct-descriptor table is full" in r.getMessage()]
            assert len(logs) == 1
            a.close()
            _wait_closed(m0["connections_closed"] + 1)
            c = client(sh.address())                 # a slot is free again
            c.sendall(b"ok")
            assert recv_exactly(c, 2) == b"ok"
            extra.append(c)
        else:
            # Real fds: the table's size means nothing.
            for s in extra:
                s.sendall(b"ok")
                assert recv_exactly(s, 2) == b"ok"
            m = ringline.metrics()["total"]
            assert m["direct_table_full"] == m0["direct_table_full"]
        for s in [a, b] + extra:
            s.close()
        assert not workers[0].failed


def test_process_fds_stay_flat(backend, direct):
    # Thread worker, clients in this process: each open connection costs this
    # process one fd (the client's) with direct descriptors, two without.
    n = 200
    with launched(Echo, backend, fixed_files=n + 8) as (sh, _):
        base = _nfds()
        conns = [client(sh.address()) for _ in range(n)]
        for s in conns:
            s.sendall(b"p")
            assert recv_exactly(s, 1) == b"p"
        grew = _nfds() - base
        # (A margin for fds other tests' threads close or open meanwhile.)
        if _expect_direct(backend, direct):
            assert grew <= n + 20
        else:
            assert grew >= 2 * n - 20
        for s in conns:
            s.close()


# ---- Config ---------------------------------------------------------------------------

@pytest.mark.parametrize("value, words", [
    (-1, "must be 0 (off) or a slot count up to 1048576"),
    ((1 << 20) + 1, "IORING_MAX_FIXED_FILES"),
    ("8", "must be an int"),
    (True, "must be an int"),
    (2.0, "must be an int"),
])
def test_bad_config(value, words):
    with pytest.raises(ValueError, match="Config.fixed_files") as ei:
        ringline.Config(fixed_files=value).validate()
    assert words in str(ei.value)


def test_config_over_rlimit_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= 1 << 20:
        pytest.skip("RLIMIT_NOFILE is above the kernel's table limit here")
    with pytest.raises(ValueError, match=r"Config.fixed_files must be at most RLIMIT_NOFILE"):
        ringline.Config(fixed_files=soft + 1).validate()
    assert ringline.Config(fixed_files=soft).validate().fixed_files == soft


def test_switch_and_driver_stats(backend):
    loop = ringline.new_event_loop(backend)
    try:
        old = core.set_direct_descriptors(False)
        try:
            assert core._direct_table(loop, 16) != 0         # off: refused, fds kept
        finally:
            core.set_direct_descriptors(old)
        err = core._direct_table(loop, 16)
        if backend == "io_uring":
            assert err == 0
            assert loop._driver.stats()["fixed_files"] == 16
            assert core._direct_table(loop, 16) != 0         # one table per ring
        else:
            assert err != 0
    finally:
        loop.close()


# ---- the fd-count target: 10,000 connections ------------------------------------------

_SERVER = textwrap.dedent("""
    import resource, sys, time
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    import ringline
    from ringline.runtime._echo import EchoWithData
    cfg = ringline.Config(workers=1, worker_mode="thread", pin_to_core=False,
                          backend="io_uring", fixed_files=int(sys.argv[1]),
                          max_connections=int(sys.argv[1]), shutdown_timeout=1.0)
    sh, ws = ringline.Builder(cfg).bind(("127.0.0.1", 0)).launch(EchoWithData)
    print(sh.address()[1], flush=True)
    sys.stdin.read()
    sh.shutdown(timeout=15)
""")


def test_fd_count_flat_with_10000_connections(backend, direct):
    if backend != "io_uring" or not direct:
        pytest.skip("direct descriptors are io_uring's, and this is their target")
    n = 10000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 200
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}: the client cannot hold "
                    f"{n} sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need) if hard == resource.RLIM_INFINITY
                                                else hard, hard))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([p for p in sys.path if p])
    srv = subprocess.Popen([sys.executable, "-c", _SERVER, str(n + 16)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, env=env, text=True)
    conns = []
    try:
        port = int(srv.stdout.readline())
        time.sleep(0.2)
        base = _nfds(srv.pid)
        for _ in range(n):
            conns.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        for s in conns:             # every one accepted and served
            s.sendall(b"!")
        for s in conns:
            assert s.recv(1) == b"!"
        grown = _nfds(srv.pid) - base
        assert grown <= 8, f"the server's fd count grew by {grown} with {n} connections"
    finally:
        for s in conns:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        srv.stdin.close()
        srv.wait(30)
