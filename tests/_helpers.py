"""Protocols and helpers shared by the project's transport tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket


@contextlib.contextmanager
def socket_pair():
    """A connected, non-blocking AF_UNIX stream socket pair, closed after."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


async def wait_until(predicate, timeout=5.0, what="condition"):
    """Poll predicate() on the running loop until it is true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.002)


class JitteryEcho(asyncio.Protocol):
    """Echoes, and now and then pauses reading for a moment (or pauses and
    resumes at once) from inside data_received.  rnd=None: a plain echo.
    On EOF it half-closes back (write_eof) where the transport can, and
    `lost` resolves with connection_lost's argument."""

    def __init__(self, rnd=None):
        self.rnd = rnd
        self.lost = asyncio.get_running_loop().create_future()
        self.eof = False

    def connection_made(self, transport):
        self.t = transport

    def data_received(self, data):
        self.t.write(data)
        if self.rnd is None:
            return
        r = self.rnd.random()
        if r < 0.05:
            self.t.pause_reading()
            asyncio.get_running_loop().call_later(self.rnd.random() * 0.003, self._resume)
        elif r < 0.08:
            self.t.pause_reading()
            self.t.resume_reading()

    def _resume(self):
        if not self.t.is_closing():
            self.t.resume_reading()

    def eof_received(self):
        self.eof = True
        if self.t.can_write_eof():
            self.t.write_eof()
            return True
        return None

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def write_random_chunks(writer, rnd, rounds, digest, sleep_p=0.0):
    """Write `rounds` chunks of 1 B .. 100 KiB to a StreamWriter, draining
    half the time (and sleeping up to 2 ms with probability sleep_p);
    every chunk goes into `digest`.  Returns the number of bytes written."""
    n = 0
    for _ in range(rounds):
        chunk = bytes([rnd.randrange(256)]) * rnd.choice([1, 10, 1000, 20000, 100000])
        writer.write(chunk)
        digest.update(chunk)
        n += len(chunk)
        if rnd.random() < 0.5:
            await writer.drain()
        if sleep_p and rnd.random() < sleep_p:
            await asyncio.sleep(rnd.random() * 0.002)
    return n


def recorder(obs, plain=(bool, int, type(None))):
    """attempt(name, fn): call fn and record in obs what it did, as
    ("returns", value or its type's name) or ("raises", exception type name)."""
    def attempt(name, fn):
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001
            obs[name] = ("raises", type(exc).__name__)
        else:
            obs[name] = ("returns", result if isinstance(result, plain)
                         else type(result).__name__)
    return attempt


def child_env(backend: str) -> dict:
    """The environment for a child Python that runs ringline on ``backend``:
    the ringline this test imported first on its path (a source checkout run
    with PYTHONPATH=src, or an installed one)."""
    import os

    import ringline
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(ringline.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (pkg_parent, env.get("PYTHONPATH", "")) if p)
    env["RINGLINE_BACKEND"] = backend
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_zombie(pid):
    """True when pid is no unreaped child of this process (reaped, or never ours)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False
