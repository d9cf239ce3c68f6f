"""ConnCtx: one connection of the runtime API, and outbound connect().

The receive and send paths are compiled (_core/runtime/conn.pxi, ConnCore);
this class adds what is not per-message: addresses, TLS description, the
owning task, the stream adapter, ``async with``.

    async def on_accept(self, conn):                 # a worker's handler
        def echo(view):
            conn.send_nowait(view)
            return len(view)
        while await conn.with_data(echo):
            pass

    conn = await ringline.connect(("127.0.0.1", 8080), timeout=5)
    async with conn:
        await conn.send(b"ping")
"""

from __future__ import annotations

import asyncio
import socket
import ssl as ssl_mod

from . import _tls
from .._core.core import NEED_MORE, ConnCore, SendPoolExhausted
from ._state import current_runtime

__all__ = ("ConnCtx", "NEED_MORE", "SendPoolExhausted", "connect", "connect_unix")


class ConnCtx(ConnCore):
    """A TCP or Unix stream connection of the runtime API.

    Receiving: ``await with_data(fn)`` / ``with_bytes(fn)`` /
    ``try_with_data(fn)``.  Sending: ``send_nowait(data)`` (copy into the send
    pool), ``await send(data)`` (no copy; resolves when the kernel took it),
    ``await send_parts(parts)``, ``forward_recv_buf(view)``.  Ending:
    ``shutdown_write()``, ``close()`` (flushes), ``abort()``; ``cancel()``
    cancels the task that owns the connection.

    The functions given to with_data() and friends run in the task that
    awaits them, never in a completion, so in that task's context (an
    on_accept task's is described in ringline.runtime._handler).
    """

    __slots__ = ("_peer", "_local", "_sslobj", "__weakref__")

    def __init__(self):
        self._peer = None
        self._local = None
        self._sslobj = None

    # ---- description ----------------------------------------------------------

    @property
    def peer_addr(self):
        """The peer's address (as socket.getpeername() gives it)."""
        if self._peer is None:
            self._names()
        return self._peer

    @property
    def local_addr(self):
        if self._local is None:
            self._names()
        return self._local

    def _names(self):
        # Both addresses, from the socket, or for a direct connection
        # (Config.fixed_files: no socket object) through a real fd made for
        # a moment; left None where they cannot be read.
        if self.sock is not None:
            for attr, get in (("_peer", self.sock.getpeername), ("_local", self.sock.getsockname)):
                if getattr(self, attr) is None:
                    try:
                        setattr(self, attr, get())
                    except OSError:
                        pass    # (a peer gone: its address is, too)
        elif self.direct:
            names = self._direct_names()
            if names is not None:
                self._peer, self._local = names

    @property
    def tls_info(self) -> dict | None:
        """None for a plain connection; else version, cipher, ALPN protocol,
        server_hostname, server_side, peercert."""
        return _tls.info(self._sslobj)

    def cancel(self, msg=None) -> bool:
        """Cancel the task that owns this connection (the on_accept task, or
        the task that called connect()); asyncio's Task.cancel()."""
        task = self.task
        if task is None or task.done():
            return False
        return task.cancel(msg)

    def streams(self, limit: int = 2 ** 16):
        """``(reader, writer)``: asyncio.StreamReader/StreamWriter over this
        connection."""
        from ._streams import open_streams
        return open_streams(self, limit)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else "closing" if self.closing else "open"
        kind = "outbound" if self.is_outbound else "inbound"
        tls = " tls" if self._sslobj is not None else ""
        where = f"slot={self.fd}" if self.direct else f"fd={self.fd}"
        return f"<ConnCtx {where} {kind}{tls} {state} peer={self.peer_addr!r}>"


def _make_conn(loop, rt, sock, outbound: bool) -> ConnCtx:
    conn = ConnCtx()
    conn._setup(loop, sock, rt.env, outbound)
    return conn


def _set_nodelay(sock) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


def _numeric(host: str) -> int | None:
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, host.partition("%")[0])
            return fam
        except (OSError, ValueError):
            pass
    return None


def split_addr(addr):
    """(host, port) from a tuple or "host:port" / "[v6]:port"."""
    if isinstance(addr, str):
        host, sep, port = addr.rpartition(":")
        if not sep:
            raise ValueError(f"address {addr!r}: expected 'host:port'")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        return host or "0.0.0.0", int(port)
    if isinstance(addr, tuple) and len(addr) >= 2:
        return addr[0], int(addr[1])
    raise TypeError(f"address must be (host, port) or 'host:port', not {addr!r}")


def _client_context(rt, ssl):
    if ssl is True:
        return rt.config.tls_client or ssl_mod.create_default_context()
    if isinstance(ssl, ssl_mod.SSLContext):
        return ssl
    raise TypeError(f"ssl must be None, True or an ssl.SSLContext, not {type(ssl).__name__}")


async def _finish(loop, rt, sock, ssl, server_hostname, default_host):
    conn = _make_conn(loop, rt, sock, outbound=True)
    try:
        conn._start()
        if ssl is not None and ssl is not False:
            ctx = _client_context(rt, ssl)
            if server_hostname is None and ctx.check_hostname:
                server_hostname = default_host
            await _tls.handshake(conn, ctx, server_side=False, server_hostname=server_hostname)
    except BaseException:
        conn.abort()
        raise
    conn.task = asyncio.current_task()
    return conn


async def connect(addr, timeout: float | None = None, ssl=None,
                  server_hostname: str | None = None) -> ConnCtx:
    """Open a TCP connection; the ConnCtx belongs to the calling task.

    ``addr`` is ``(host, port)`` or ``"host:port"``; a host name is resolved
    on the resolver pool.  ``ssl``: None, True (Config.tls_client or the
    default context) or an SSLContext.  ConnectionRefusedError when refused,
    TimeoutError when ``timeout`` (connect and TLS handshake) runs out.
    """
    loop = asyncio.get_running_loop()
    rt = current_runtime(loop)
    host, port = split_addr(addr)
    async with asyncio.timeout(timeout):
        fam = _numeric(host)
        if fam is not None:
            targets = [(fam, (host, port))]
        else:
            targets = await rt.resolve(host, port)
        last = None
        for fam, sa in targets:
            sock = socket.socket(fam, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                if rt.config.tcp_nodelay:
                    _set_nodelay(sock)
                await loop.sock_connect(sock, sa)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            return await _finish(loop, rt, sock, ssl, server_hostname, host)
        if last is None:
            raise OSError(f"could not resolve {host!r}")
        raise last


async def connect_unix(path, timeout: float | None = None, ssl=None,
                       server_hostname: str | None = None) -> ConnCtx:
    """Open a Unix stream connection (see connect())."""
    loop = asyncio.get_running_loop()
    rt = current_runtime(loop)
    async with asyncio.timeout(timeout):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return await _finish(loop, rt, sock, ssl, server_hostname, None)
