"""examples/http_hello.py for real: the runtime API server (one worker
process) and its asyncio Protocol twin (``--protocol ringline``), each
started as a child process on every backend (``RINGLINE_BACKEND``), talked
to with a plain socket client.

Checked: a GET; two keep-alive GETs on one connection; pipelined requests in
one send answered in order; a request split into one-byte sends; POST bodies
(Content-Length and chunked) skipped; HEAD; Upgrade ignored; HTTP/1.0 (closes) and HTTP/1.0
with keep-alive; ``Connection: close`` (and nothing after it answered); a
malformed request (400, then close), also after a good one in the same
send; an idle keep-alive connection closed after the timeout; SIGINT stops
the server cleanly.  The same checks run against benchmarks/_http_servers.py's
``hello-floor`` (the Protocol with each read through a coroutine, what
benchmarks/http_bench.py measures as the floor of a coroutine per
connection), so that it does the same work as the two it is compared with.

httptools is in the ``test`` extra (tests/all_pythons.py installs it); the
tests skip without it, unless RINGLINE_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import _loops
from _helpers import child_env, free_port

pytestmark = [pytest.mark.ringline_only, pytest.mark.timeout(120)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "http_hello.py")
FLOOR = os.path.join(ROOT, "benchmarks", "_http_servers.py")
BODY = b"Hello, world!"
KEEP_ALIVE_TIMEOUT = 2.0


def _need_httptools():
    try:
        import httptools  # noqa: F401
    except ImportError as exc:
        if os.environ.get("RINGLINE_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"httptools is not installed but RINGLINE_REQUIRE_INTEGRATION=1 "
                        f"(pip install '.[test]'): {exc}")
        pytest.skip("examples/http_hello.py needs httptools (pip install '.[test]')")


class Server:
    def __init__(self, variant: str, backend: str, tmp_path):
        self.port = free_port()
        if variant == "floor":
            argv = [sys.executable, FLOOR, "hello-floor", "ringline:new_event_loop",
                    str(self.port), str(KEEP_ALIVE_TIMEOUT)]
        else:
            argv = [sys.executable, EXAMPLE, "--host", "127.0.0.1", "--port", str(self.port),
                    "--keep-alive-timeout", str(KEEP_ALIVE_TIMEOUT)]
            argv += ["--workers", "1"] if variant == "runtime" else ["--protocol", "ringline"]
        self.log = open(tmp_path / "server.log", "w+b")
        self.proc = subprocess.Popen(argv, env=child_env(backend), stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server not accepting after 30 s:\n{self.output()}")
                time.sleep(0.05)

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(f"server did not stop within 20 s of SIGINT:\n{self.output()}")
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _params():
    if _loops.is_asyncio_mode():
        return []
    return [(v, b) for b in _loops.backends() for v in ("runtime", "protocol", "floor")]


@pytest.fixture(scope="module", params=_params(), ids=lambda p: f"{p[0]}-{p[1]}")
def server(request, tmp_path_factory):
    _need_httptools()
    variant, backend = request.param
    srv = Server(variant, backend, tmp_path_factory.mktemp(f"http-{variant}-{backend}"))
    try:
        banner = srv.output()
        deadline = time.monotonic() + 10
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
            time.sleep(0.05)
            banner = srv.output()
        # It runs where the test asked: the runtime API, or a ringline loop,
        # on the backend under test.
        assert f"{backend} backend" in banner, banner
        assert ("asyncio Protocol" in banner) == (variant != "runtime"), banner
        yield srv
        rc = srv.stop()
        out = srv.output()
        assert rc == 0, f"server exited with {rc}:\n{out}"
        assert "Traceback" not in out, out
    finally:
        srv.close()


class Client:
    """A plain socket and a reader of HTTP/1.1 responses off it."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def response(self, head: bool = False):
        """(status, headers dict lower-cased, body) of the next response."""
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"EOF before a full response; got {self.buf!r}"
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        version, status, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head else int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(), "EOF in a response body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status), headers, body

    def hello(self, head: bool = False, keep_alive: bool = True):
        status, headers, body = self.response(head)
        assert status == 200
        assert headers["content-length"] == str(len(BODY))
        assert headers["content-type"] == "text/plain"
        assert headers["connection"] == ("keep-alive" if keep_alive else "close")
        assert body == (b"" if head else BODY)

    def assert_eof(self, timeout: float = 10.0) -> None:
        self.sock.settimeout(timeout)
        try:
            extra = self.sock.recv(65536)
        except ConnectionResetError:
            extra = b""
        assert self.buf + extra == b"", f"expected EOF, got {self.buf + extra!r}"

    def assert_open(self) -> None:
        """Nothing more to read, and the server has not closed."""
        self.sock.settimeout(0.2)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        finally:
            self.sock.settimeout(10)
        pytest.fail(f"expected the connection to stay open and quiet, got {data!r}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def client(server):
    c = Client(server.port)
    yield c
    c.close()


GET = b"GET / HTTP/1.1\r\nHost: test\r\n\r\n"


def test_get(client):
    client.send(GET)
    client.hello()
    client.assert_open()


def test_two_keep_alive_gets(client):
    for path in (b"/a", b"/b?x=1"):
        client.send(b"GET %s HTTP/1.1\r\nHost: test\r\nUser-Agent: t\r\n\r\n" % path)
        client.hello()
    client.assert_open()


def test_pipelined_in_order(client):
    # GET, HEAD, GET in one send: the HEAD answer (no body) must come second.
    client.send(GET + b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n" + GET)
    client.hello()
    client.hello(head=True)
    client.hello()
    client.assert_open()


def test_many_pipelined(client):
    n = 500
    client.send(GET * n)
    for _ in range(n):
        client.hello()
    client.send(GET)
    client.hello()


def test_request_in_one_byte_sends(client):
    client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(GET)):
        client.send(GET[i:i + 1])
        time.sleep(0.001)
    client.hello()
    client.send(GET)
    client.hello()


def test_post_bodies_are_skipped(client):
    body = b"x" * 100_000
    client.send(b"POST /upload HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body))
    client.hello()
    client.send(b"POST / HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" + GET)
    client.hello()
    client.hello()


def test_upgrade_is_ignored(client):
    # Answered as a plain request; the connection goes on in HTTP/1.1, and a
    # request behind it in the same send is answered too.
    client.send(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\n\r\n" + GET)
    client.hello()
    client.hello()
    client.send(GET)
    client.hello()
    client.assert_open()


def test_http10_closes(client):
    client.send(b"GET / HTTP/1.0\r\n\r\n")
    client.hello(keep_alive=False)
    client.assert_eof()


def test_http10_keep_alive(client):
    req = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    client.send(req)
    client.hello()
    client.send(req)
    client.hello()
    client.assert_open()


def test_connection_close(client):
    # The request after the closing one is not answered.
    client.send(GET + b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n" + GET)
    client.hello()
    client.hello(keep_alive=False)
    client.assert_eof()


@pytest.mark.parametrize("bad", [
    b"BLAH\r\n\r\n",
    b"GET / HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
])
def test_malformed_request(client, bad):
    client.send(bad)
    status, headers, body = client.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert body == b"Bad Request\n"
    client.assert_eof()


def test_malformed_after_good(client):
    client.send(GET + b"\x00\x01garbage\r\n\r\n")
    client.hello()
    status, _, _ = client.response()
    assert status == 400
    client.assert_eof()


def test_idle_connection_closed(client):
    client.send(GET)
    client.hello()
    t0 = time.monotonic()
    client.assert_eof(timeout=4 * KEEP_ALIVE_TIMEOUT + 5)
    waited = time.monotonic() - t0
    assert waited >= KEEP_ALIVE_TIMEOUT * 0.5, waited


def test_incomplete_request_closed(client):
    # A client that never finishes its request does not keep the connection.
    client.send(b"GET / HTTP/1.1\r\nHost: te")
    client.assert_eof(timeout=4 * KEEP_ALIVE_TIMEOUT + 5)


def test_many_connections(server):
    clients = [Client(server.port) for _ in range(50)]
    try:
        for c in clients:
            c.send(GET)
        for c in clients:
            c.hello()
    finally:
        for c in clients:
            c.close()
