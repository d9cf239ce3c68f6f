"""Bad input gets the exception asyncio gives, and the loop keeps running
(issue 5, point 8).

Invalid addresses (create_datagram_endpoint, create_connection,
sock_sendto), a closed transport (write/sendto after close), a TLS
handshake failure, a program that does not exist, a signal number out of
range, sending on a closed datagram transport.  Every test ends by proving
the loop still works: a timer, a socket round trip through the ring and
(where it matters) the same kind of operation done right.

Runs on every ringline backend and, with RINGLINE_TEST_LOOP=asyncio, on
stock asyncio: the expectations are asyncio's behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl

import pytest

from test.test_asyncio import utils as test_utils


async def _loop_still_works(loop):
    """A timer fires, a task runs, a socket round trip goes through."""
    fired = loop.create_future()
    loop.call_later(0.001, fired.set_result, "timer")
    assert await fired == "timer"
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        await loop.sock_sendall(a, b"ping")
        assert await loop.sock_recv(b, 10) == b"ping"
    finally:
        a.close()
        b.close()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _udp_sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    return s


class _Collect(asyncio.DatagramProtocol):
    def __init__(self):
        self.errors = []
        self.data = []

    def datagram_received(self, data, addr):
        self.data.append(data)

    def error_received(self, exc):
        self.errors.append(exc)


# ---------------------------------------------------------------------------
# invalid addresses
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, match", [
    ({"local_addr": ("256.1.1.1", 0)}, socket.gaierror, None),
    ({"remote_addr": ("127.0.0.1", 70000)}, OverflowError, "port must be 0-65535"),
    ({"local_addr": 12}, TypeError, "2-tuple is expected"),
    ({"local_addr": ("127.0.0.1", 0), "family": socket.AF_UNIX}, TypeError, "string is expected"),
    ({}, ValueError, "unexpected address family"),
])
def test_create_datagram_endpoint_invalid_address(loop, run, kwargs, exc, match):
    async def main():
        with pytest.raises(exc, match=match):
            await loop.create_datagram_endpoint(asyncio.DatagramProtocol, **kwargs)
        # the same call done right works
        tr, proto = await loop.create_datagram_endpoint(
            _Collect, local_addr=("127.0.0.1", 0))
        tr.close()
        await _loop_still_works(loop)
    run(main())


def test_create_datagram_endpoint_sock_with_address(loop, run):
    async def main():
        with _udp_sock() as s:
            with pytest.raises(ValueError, match="socket modifier keyword arguments"):
                await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, sock=s, local_addr=("127.0.0.1", 0))
        await _loop_still_works(loop)
    run(main())


@pytest.mark.parametrize("host, port, exc, match", [
    ("256.256.256.256", 80, socket.gaierror, None),
    ("127.0.0.1", 70000, OverflowError, "port must be 0-65535"),
    ("127.0.0.1", "notaport", socket.gaierror, None),
    (None, None, ValueError, "host and port was not specified"),
])
def test_create_connection_invalid_address(loop, run, host, port, exc, match):
    async def main():
        with pytest.raises(exc, match=match):
            await loop.create_connection(asyncio.Protocol, host, port)
        await _loop_still_works(loop)
    run(main())


def test_create_connection_refused(loop, run):
    async def main():
        port = _free_port()
        with pytest.raises(ConnectionRefusedError, match="Connect call failed"):
            await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
        # a listener on that port now: connecting works
        srv = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        try:
            tr, _ = await loop.create_connection(
                asyncio.Protocol, "127.0.0.1", srv.sockets[0].getsockname()[1])
            tr.close()
        finally:
            srv.close()
            await srv.wait_closed()
        await _loop_still_works(loop)
    run(main())


def test_create_unix_connection_missing_path(loop, run):
    async def main():
        with pytest.raises(FileNotFoundError):
            await loop.create_unix_connection(asyncio.Protocol, "/nonexistent/ringline.sock")
        await _loop_still_works(loop)
    run(main())


@pytest.mark.parametrize("data, address, exc, match", [
    (b"x", ("256.1.1.1", 9), socket.gaierror, None),
    (b"x", ("127.0.0.1", 70000), OverflowError, "port must be 0-65535"),
    (b"x", "nope", TypeError, "address must be tuple"),
    (b"x", ("::1", 9, 0, 0), TypeError, "AF_INET address must be a pair"),
    ("str", ("127.0.0.1", 9), TypeError, "bytes-like object is required"),
])
def test_sock_sendto_invalid(loop, run, data, address, exc, match):
    async def main():
        with _udp_sock() as s, _udp_sock() as r:
            r.bind(("127.0.0.1", 0))
            with pytest.raises(exc, match=match):
                await loop.sock_sendto(s, data, address)
            # the same socket still sends
            await loop.sock_sendto(s, b"ok", r.getsockname())
            assert (await loop.sock_recvfrom(r, 10))[0] == b"ok"
        await _loop_still_works(loop)
    run(main())


def test_sock_sendto_closed_socket(loop, run):
    async def main():
        s = _udp_sock()
        s.close()
        with pytest.raises(OSError) as info:
            await loop.sock_sendto(s, b"x", ("127.0.0.1", 9))
        assert info.value.errno == 9     # EBADF, as socket.sendto gives
        await _loop_still_works(loop)
    run(main())


# ---------------------------------------------------------------------------
# closed transports
# ---------------------------------------------------------------------------

def test_stream_write_after_close(loop, run, caplog):
    # asyncio drops writes on a closed transport silently, and from the
    # fifth (LOG_THRESHOLD_FOR_CONNLOST_WRITES) logs a warning.  (With data
    # still buffered at close(), both asyncio and ringline go on queueing
    # until the buffer is flushed: close when it is empty.)
    async def main():
        a, b = socket.socketpair()
        with b:
            tr, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            tr.write(b"before")
            for _ in range(500):
                if tr.get_write_buffer_size() == 0:
                    break
                await asyncio.sleep(0.001)
            tr.close()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(6):
                    tr.write(b"x")
                tr.writelines([b"y"])
                tr.write_eof()
            assert any("socket.send() raised exception" in r.getMessage()
                       for r in caplog.records)
            await asyncio.sleep(0.01)
            b.setblocking(False)
            assert await loop.sock_recv(b, 100) == b"before"
            assert await loop.sock_recv(b, 100) == b""         # nothing else
        await _loop_still_works(loop)
    run(main())


def test_stream_write_after_write_eof_and_bad_data(loop, run):
    async def main():
        a, b = socket.socketpair()
        with b:
            tr, _ = await loop.create_connection(asyncio.Protocol, sock=a)
            with pytest.raises(TypeError, match="bytes-like object"):
                tr.write("str")
            tr.write_eof()
            with pytest.raises(RuntimeError, match=r"Cannot call write\(\) after write_eof\(\)"):
                tr.write(b"x")
            tr.close()
        await _loop_still_works(loop)
    run(main())


@pytest.mark.parametrize("how", ["close", "abort"])
def test_datagram_sendto_after_close(loop, run, caplog, how):
    # A connected endpoint: asyncio drops datagrams sent after close()
    # silently and from the fifth logs a warning.
    async def main():
        with _udp_sock() as r:
            r.bind(("127.0.0.1", 0))
            tr, proto = await loop.create_datagram_endpoint(
                _Collect, remote_addr=r.getsockname())
            getattr(tr, how)()
            assert tr.is_closing()
            with caplog.at_level(logging.WARNING, logger="asyncio"):
                for _ in range(6):
                    tr.sendto(b"late")               # dropped, no exception
                await asyncio.sleep(0.02)            # connection_lost has run
                tr.sendto(b"later")
            assert sum("socket.send() raised exception" in rec.getMessage()
                       for rec in caplog.records) == 3
            with pytest.raises(BlockingIOError):
                r.recvfrom(10)                       # nothing was sent
            assert proto.errors == []
            # a new endpoint sends fine
            tr2, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=r.getsockname())
            tr2.sendto(b"new")
            assert (await loop.sock_recvfrom(r, 10))[0] == b"new"
            tr2.close()
        await _loop_still_works(loop)
    run(main())


@pytest.mark.ringline_only
@pytest.mark.parametrize("how", ["close", "abort"])
def test_unconnected_datagram_sendto_after_close(loop, run, how):
    # Unconnected: no exception, no error_received, the loop goes on.
    # (Stock asyncio 3.11 sends until connection_lost has run, and then
    # raises AttributeError from sendto() -- _fatal_error on a transport
    # whose _loop is None -- so this one is not run in asyncio mode.)
    async def main():
        with _udp_sock() as r:
            r.bind(("127.0.0.1", 0))
            tr, proto = await loop.create_datagram_endpoint(
                _Collect, local_addr=("127.0.0.1", 0))
            getattr(tr, how)()
            for _ in range(6):
                tr.sendto(b"late", r.getsockname())
            await asyncio.sleep(0.02)                # connection_lost has run
            tr.sendto(b"later", r.getsockname())
            assert proto.errors == []
        await _loop_still_works(loop)
    run(main())


def test_datagram_sendto_bad_arguments(loop, run):
    async def main():
        tr, proto = await loop.create_datagram_endpoint(
            _Collect, remote_addr=("127.0.0.1", _free_port()))
        try:
            with pytest.raises(ValueError, match="Invalid address: must be None or"):
                tr.sendto(b"x", ("127.0.0.1", 1))
            with pytest.raises(TypeError, match="bytes-like object"):
                tr.sendto("x")
        finally:
            tr.close()
        # an unresolvable destination on an unconnected endpoint goes to
        # error_received, as asyncio's sendto reports OSErrors
        tr, proto = await loop.create_datagram_endpoint(_Collect, local_addr=("127.0.0.1", 0))
        try:
            tr.sendto(b"x", ("256.1.1.1", 9))
            await asyncio.sleep(0.02)
            assert len(proto.errors) == 1 and isinstance(proto.errors[0], socket.gaierror)
        finally:
            tr.close()
        await _loop_still_works(loop)
    run(main())


# ---------------------------------------------------------------------------
# TLS handshake failure
# ---------------------------------------------------------------------------

async def _tls_server(loop, certfile, keyfile=None):
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(certfile, keyfile)

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)
    srv = await loop.create_server(Echo, "127.0.0.1", 0, ssl=sctx)
    return srv, srv.sockets[0].getsockname()[1]


async def _tls_echo_ok(loop, port):
    cctx = ssl.create_default_context(cafile=test_utils.SIGNING_CA)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=cctx, server_hostname="localhost")
    writer.write(b"hello tls")
    assert await reader.readexactly(9) == b"hello tls"
    writer.close()
    await writer.wait_closed()


@pytest.fixture
def quiet_handler(loop):
    """Server-side handshake errors go to the exception handler: keep them."""
    seen = []
    loop.set_exception_handler(lambda lp, ctx: seen.append(ctx))
    return seen


def test_tls_handshake_untrusted_cert(loop, run, quiet_handler):
    async def main():
        srv, port = await _tls_server(loop, test_utils.ONLYCERT, test_utils.ONLYKEY)
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
                await loop.create_connection(
                    asyncio.Protocol, "127.0.0.1", port,
                    ssl=ssl.create_default_context(), server_hostname="localhost")
            with pytest.raises(ssl.SSLCertVerificationError):
                await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ssl.create_default_context(),
                    server_hostname="localhost")
        finally:
            srv.close()
            await srv.wait_closed()
        srv, port = await _tls_server(loop, test_utils.SIGNED_CERTFILE)
        try:
            await _tls_echo_ok(loop, port)
        finally:
            srv.close()
            await srv.wait_closed()
        await _loop_still_works(loop)
    run(main())


def test_tls_handshake_wrong_hostname(loop, run, quiet_handler):
    async def main():
        srv, port = await _tls_server(loop, test_utils.SIGNED_CERTFILE)
        try:
            cctx = ssl.create_default_context(cafile=test_utils.SIGNING_CA)
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                await loop.create_connection(asyncio.Protocol, "127.0.0.1", port,
                                             ssl=cctx, server_hostname="wrong.example")
            await _tls_echo_ok(loop, port)       # the same server, right name
        finally:
            srv.close()
            await srv.wait_closed()
        await _loop_still_works(loop)
    run(main())


def test_tls_server_side_handshake_failure(loop, run, quiet_handler):
    # A plain-text client talking to a TLS server: the server side fails
    # its handshake, reports it, and goes on serving.
    async def main():
        srv, port = await _tls_server(loop, test_utils.SIGNED_CERTFILE)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            assert await reader.read() == b""     # the server hangs up
            writer.close()
            await _tls_echo_ok(loop, port)
        finally:
            srv.close()
            await srv.wait_closed()
        await _loop_still_works(loop)
    run(main())


# ---------------------------------------------------------------------------
# subprocesses
# ---------------------------------------------------------------------------

def test_program_does_not_exist(loop, run):
    async def main():
        with pytest.raises(FileNotFoundError) as info:
            await asyncio.create_subprocess_exec("ringline-no-such-program", "arg")
        assert info.value.filename == "ringline-no-such-program"
        assert "No such file or directory" in str(info.value)
        with pytest.raises(FileNotFoundError):
            await loop.subprocess_exec(asyncio.SubprocessProtocol, "/nonexistent/program")
        # a shell reports a missing program by its exit status, as asyncio's
        p = await asyncio.create_subprocess_shell(
            "ringline-no-such-program 2>/dev/null")
        assert await p.wait() == 127
        p = await asyncio.create_subprocess_exec("true")
        assert await p.wait() == 0
        await _loop_still_works(loop)
    run(main())


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("sig, exc, match", [
    (signal.NSIG + 1, ValueError, "invalid signal number"),
    (0, ValueError, "invalid signal number"),
    (-1, ValueError, "invalid signal number"),
    ("INT", TypeError, "sig must be an int"),
    (signal.SIGKILL, RuntimeError, "cannot be caught"),
    (signal.SIGSTOP, RuntimeError, "cannot be caught"),
])
def test_add_signal_handler_bad_signal(loop, run, sig, exc, match):
    async def main():
        with pytest.raises(exc, match=match):
            loop.add_signal_handler(sig, lambda: None)
        if exc is not RuntimeError:
            with pytest.raises(exc, match=match):
                loop.remove_signal_handler(sig)
        # a valid handler still works
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        try:
            signal.raise_signal(signal.SIGUSR1)
            assert await asyncio.wait_for(got, 5) == "usr1"
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)
        await _loop_still_works(loop)
    run(main())


def test_add_signal_handler_coroutine_function(loop, run):
    async def main():
        async def handler():
            pass
        with pytest.raises(TypeError, match="coroutines cannot be used"):
            loop.add_signal_handler(signal.SIGUSR1, handler)
        assert not loop.remove_signal_handler(signal.SIGUSR1)
        await _loop_still_works(loop)
    run(main())


def test_loop_usable_after_every_failure(loop):
    # run_until_complete again on the same loop after a failing operation
    async def fail():
        await loop.create_connection(asyncio.Protocol, "256.256.256.256", 80)
    with pytest.raises(socket.gaierror):
        loop.run_until_complete(fail())
    loop.run_until_complete(_loop_still_works(loop))
