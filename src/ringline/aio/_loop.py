"""ringline.EventLoop: the compiled LoopCore plus asyncio's BaseEventLoop.

LoopCore (compiled) owns the hot path: callbacks, timers, the iteration and
socket operations in the ring.  BaseEventLoop (asyncio's own Python code)
supplies the rest -- tasks, the exception handler, executors, async
generator hooks, create_connection/create_server on top of our primitives --
so those behave exactly as asyncio's do.
"""

from __future__ import annotations

import errno
import fcntl
import io
import os
import selectors
import socket
import sys
import threading
import weakref
from asyncio import BaseEventLoop, SendfileNotAvailableError, TimerHandle

from .. import _compat
from . import _sslproto, _subprocess
from ._datagram import DatagramTransport
from .._core import core as _core
from .._core.core import LoopCore, _serve_accept
from ._transports import SocketTransport

__all__ = ("EventLoop",)

_POLLIN = 0x001
_POLLOUT = 0x004


class EventLoop(LoopCore, _compat.SelectorLoopMethods, BaseEventLoop):
    """An asyncio event loop whose I/O goes through io_uring."""

    def __init__(self, backend: str | None = None) -> None:
        try:
            self._core_init(backend)
        except BaseException:
            self._closed = True     # nothing to close: __del__ must not try
            raise
        _compat.init_loop_state(self, _compat.is_debug_mode())
        # fd -> transport, so add_reader() on a transport's fd is refused
        # as asyncio's selector loop refuses it.
        self._transports = weakref.WeakValueDictionary()
        # listening fd -> multishot accept op (or its retry timer)
        self._serving = {}
        self._make_self_pipe()

    def __repr__(self) -> str:
        return (f"<{self.__class__.__name__} backend={self._backend} "
                f"running={self.is_running()} closed={self.is_closed()} "
                f"debug={self.get_debug()}>")

    @property
    def backend(self) -> str:
        """The backend this loop runs on: ``"io_uring"`` or ``"poll"``."""
        return self._backend

    def stats(self) -> dict:
        """Counters of the driver (SQEs, CQEs, io_uring_enter calls, ...)."""
        return self._driver_stats()

    # ---- running -----------------------------------------------------------

    def run_forever(self) -> None:
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._thread_id = threading.get_ident()
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            _compat.set_running_loop(self)
            self._run_forever_inner()
        finally:
            self._stopping = False
            self._thread_id = None
            _compat.set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def close(self) -> None:
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            _compat.logger.debug("Close %r", self)
        self._closed = True
        self._close_self_pipe()
        if self._signal_handlers:
            if not sys.is_finalizing():
                for sig in list(self._signal_handlers):
                    self.remove_signal_handler(sig)
            else:
                self._signal_handlers.clear()
        self._core_close()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)

    # ---- transports and servers (asyncio's create_connection/create_server
    # and streams call these) -----------------------------------------------------

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        return SocketTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(
            self, rawsock, protocol, sslcontext, waiter=None,
            *, server_side=False, server_hostname=None,
            extra=None, server=None,
            ssl_handshake_timeout=_compat.SSL_HANDSHAKE_TIMEOUT,
            ssl_shutdown_timeout=_compat.SSL_SHUTDOWN_TIMEOUT):
        # TLS is asyncio's own SSLProtocol, its per-record path compiled
        # (_sslproto.py), over a ring transport.
        ssl_protocol = _sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        SocketTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    async def start_tls(self, transport, protocol, sslcontext, *,
                        server_side=False, server_hostname=None,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        # BaseEventLoop.start_tls (3.11), with _sslproto's SSLProtocol.
        try:
            import ssl
        except ImportError:  # pragma: no cover - Python built without ssl
            raise RuntimeError('Python ssl module is not available') from None
        if not isinstance(sslcontext, ssl.SSLContext):
            raise TypeError(
                f'sslcontext is expected to be an instance of ssl.SSLContext, '
                f'got {sslcontext!r}')
        if not getattr(transport, '_start_tls_compatible', False):
            raise TypeError(
                f'transport {transport!r} is not supported by start_tls()')
        waiter = self.create_future()
        ssl_protocol = _sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False)
        # Paused first, so that the SSL protocol gets no data before
        # connection_made (asyncio's order).
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport

    def _start_serving(self, protocol_factory, sock,
                       sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=_compat.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=_compat.SSL_SHUTDOWN_TIMEOUT):
        key = sock.fileno()
        if key in self._serving:
            return
        args = (protocol_factory, sock, sslcontext, server, backlog,
                ssl_handshake_timeout, ssl_shutdown_timeout)

        def on_accept(fd):
            conn = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
            conn.setblocking(False)   # the fd is O_NONBLOCK; tell the socket object
            try:
                extra = {"peername": conn.getpeername()}
            except OSError:
                extra = {"peername": None}
            if self._debug:
                _compat.logger.debug("%r got a new connection from %r: %r",
                                         server, extra["peername"], conn)
            self.create_task(self._accept_connection2(
                protocol_factory, conn, extra, sslcontext, server,
                ssl_handshake_timeout, ssl_shutdown_timeout))

        def on_error(exc):
            self._serving.pop(key, None)
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of fds or memory: say so, and try again in a while
                # (asyncio's ACCEPT_RETRY_DELAY), as asyncio does.
                self.call_exception_handler({
                    "message": "socket.accept() out of system resource",
                    "exception": exc,
                    "socket": _compat.TransportSocket(sock),
                })
                self._serving[key] = self.call_later(
                    _compat.ACCEPT_RETRY_DELAY, self._retry_serving, key, args)
            else:
                self.call_exception_handler({
                    "message": "accept() failed on a listening socket",
                    "exception": exc,
                    "socket": _compat.TransportSocket(sock),
                })

        # on_accept runs in a copy of this context (the create_server
        # caller's, as asyncio's accept reader): the task it makes copies
        # that, so the protocol factory and the transport see its values.
        self._serving[key] = _serve_accept(self, sock, on_accept, on_error)

    def _retry_serving(self, key, args):
        self._serving.pop(key, None)
        if args[1].fileno() == key:
            self._start_serving(*args)

    def _stop_serving(self, sock):
        entry = self._serving.pop(sock.fileno(), None)
        if entry is not None:
            if isinstance(entry, TimerHandle) or hasattr(entry, "when"):
                entry.cancel()
            else:
                entry.stop()
                self._flush()
        path = _compat.unix_server_cleanup_begin(self, sock)
        sock.close()
        if path is not None:
            _compat.unix_server_cleanup_end(self, sock, path)

    # sendfile: transports hand their socket over while the file goes out
    # (asyncio's _sendfile_native, _compat.SelectorLoopMethods); the socket
    # path is below.

    async def _sock_sendfile_native(self, sock, file, offset, count):
        # With file ops in the ring (io_uring): zero-copy there, SPLICE
        # file -> pipe -> socket.  Otherwise (the poll backend): os.sendfile()
        # as asyncio does it.
        if not self._driver.file_ops_in_ring:
            return await self._sock_sendfile_readiness(sock, file, offset, count)
        if not _compat.os_sendfile_available():
            raise SendfileNotAvailableError("os.sendfile() is not available")
        return await _sendfile_splice(self, sock, file, offset, count)

    # ---- signals ---------------------------------------------------------------
    # The C-level signal handler writes the signal number to _csock
    # (signal.set_wakeup_fd); _ssock is polled in the ring for the loop's
    # whole life, so a signal that arrives while the loop is not running is
    # handled as soon as it runs.

    def _make_self_pipe(self):
        self._ssock, self._csock = socket.socketpair()
        self._ssock.setblocking(False)
        self._csock.setblocking(False)
        self._internal_fds += 1
        self._ssock_fd = self._ssock.fileno()
        self._add_reader(self._ssock_fd, self._read_from_self)

    def _close_self_pipe(self):
        # getattr: __init__ may have failed before the pipe existed.
        if getattr(self, "_ssock", None) is None:
            return
        # By fd number: when the GC finalizes an unclosed loop, the socket
        # object may already be closed.
        self._remove_reader(self._ssock_fd)
        self._ssock.close()
        self._ssock = None
        self._csock.close()
        self._csock = None
        self._internal_fds -= 1

    def _add_callback(self, handle):
        # Handles built by asyncio code (events.Handle) run through
        # call_soon, which keeps the ready queue homogeneous.
        if not handle._cancelled:
            self._call_soon(handle._run, (), None)

    # add_signal_handler & co: asyncio's unix loop's (_compat.SelectorLoopMethods).

    # ---- pipes and datagrams ---------------------------------------------------
    # Pipes: asyncio's own pipe transports (_compat.SelectorLoopMethods),
    # driven by readiness polls in the ring (add_reader/add_writer are
    # POLL_ADD ops).  Datagrams: _datagram.py.

    def _make_datagram_transport(self, sock, protocol, address=None, waiter=None, extra=None):
        return DatagramTransport(self, sock, protocol, address, waiter, extra)

    @property
    def _selector(self):
        # Read-only view for the repr() of asyncio's transports; None once
        # closed, as asyncio's selector loop has it.
        return None if self._closed else _SelectorView(self)

    # ---- subprocesses ------------------------------------------------------------

    async def _make_subprocess_transport(self, protocol, args, shell,
                                         stdin, stdout, stderr, bufsize,
                                         extra=None, **kwargs):
        watcher = _compat.installed_child_watcher()
        if watcher is not None:
            # The program installed an asyncio child watcher (3.11-3.13):
            # it reaps the child, as on asyncio's unix loop.
            return await _subprocess.spawn_watched(
                self, watcher, protocol, args, shell, stdin, stdout, stderr, bufsize,
                extra, kwargs)
        proc, pidfd = await _subprocess.spawn(
            self, args, shell, stdin, stdout, stderr, bufsize, kwargs)
        return await _subprocess.start_transport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, proc,
            lambda transp: _subprocess.watch_exit(self, transp, proc, pidfd))

    def _child_watcher_callback(self, pid, returncode, transp):
        # An asyncio child watcher's callback (spawn_watched), as
        # _UnixSelectorEventLoop's: may be called from any thread.
        self.call_soon_threadsafe(transp._process_exited, returncode)

    # ---- sockets -------------------------------------------------------------

    async def sock_connect(self, sock, address):
        _compat.check_ssl_socket(sock)
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        if sock.family == socket.AF_INET or (
                _compat.HAS_IPv6 and sock.family == socket.AF_INET6):
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto,
                loop=self)
            _, _, _, _, address = resolved[0]
        fut = self._sock_connect_ring(sock, address)
        if fut is None:
            return await self._sock_connect_poll(sock, address)
        try:
            return await fut
        except OSError as exc:
            if exc.errno:
                # asyncio's message, and the errno's OSError subclass.
                raise OSError(exc.errno, f"Connect call failed {address}") from None
            raise

    async def _sock_connect_poll(self, sock, address):
        # Families and address forms the ring op does not encode: the
        # socket module connects, the ring waits for writability.
        try:
            sock.connect(address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        while True:
            await self._poll_once(sock, _POLLOUT)
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                return
            if err not in (11, 115, 114, 4):  # EAGAIN, EINPROGRESS, EALREADY, EINTR
                raise OSError(err, f"Connect call failed {address}")

    async def sock_sendto(self, sock, data, address):
        # A socket.socket proper goes through the ring; anything else (a
        # subclass or wrapper with its own sendto) keeps its own method.
        fut = (self._sock_sendmsg(sock, data, address)
               if type(sock) is socket.socket else None)
        if fut is not None:
            return await fut
        # Address needs the socket module (a host name, an exotic family).
        while True:
            try:
                return sock.sendto(data, address)
            except (BlockingIOError, InterruptedError):
                await self._poll_once(sock, _POLLOUT)

    # ---- name resolution ---------------------------------------------------

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        # Numeric hosts need no resolver: answer on the loop thread.
        if _is_numeric_host(host) and (port is None or isinstance(port, int)
                                       or (isinstance(port, (str, bytes)) and port.isdigit())):
            try:
                return socket.getaddrinfo(host, port, family, type, proto,
                                          flags | socket.AI_NUMERICHOST)
            except socket.gaierror:
                pass
        return await _compat.base_getaddrinfo(
            self, host, port, family=family, type=type, proto=proto, flags=flags)


_SPLICE_CHUNK = 1 << 20


async def _sendfile_splice(loop, sock, file, offset, count):
    """loop.sock_sendfile's native path on io_uring: the file's pages go to
    a pipe and from the pipe to the socket by SPLICE ops, never through
    user memory.  Raises SendfileNotAvailableError (asyncio falls back to
    reads and sends when allowed) for what splice cannot take."""
    try:
        fileno = file.fileno()
    except (AttributeError, io.UnsupportedOperation) as err:
        raise SendfileNotAvailableError("not a regular file") from err
    try:
        fsize = os.fstat(fileno).st_size
    except OSError:
        raise SendfileNotAvailableError("not a regular file")
    blocksize = count if count else fsize
    if not blocksize:
        return 0
    r, w = os.pipe2(os.O_CLOEXEC)
    total = 0
    try:
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, _SPLICE_CHUNK)
        except OSError:
            pass
        while total < blocksize:
            want = min(blocksize - total, _SPLICE_CHUNK)
            try:
                moved = await _core.fs_splice(loop, fileno, offset + total, w, -1, want)
            except OSError as exc:
                if total == 0 and exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise SendfileNotAvailableError(
                        f"splice() cannot read this file: {exc}") from exc
                raise
            if moved == 0:
                break          # end of file
            left = moved
            while left:
                # total counts what reached the socket, so file.tell() is
                # right even when the peer goes away mid-file.
                sent = await _core.fs_splice(loop, r, -1, sock.fileno(), -1, left)
                left -= sent
                total += sent
    finally:
        os.close(r)
        os.close(w)
        if total > 0:
            file.seek(offset + total)
    return total


class _SelectorView:
    """get_key() over the loop's readers and writers, for asyncio reprs."""

    def __init__(self, loop):
        self._loop = loop

    def get_key(self, fileobj):
        fd = fileobj if isinstance(fileobj, int) else fileobj.fileno()
        mask = self._loop._poller_events(fd)
        if not mask:
            raise KeyError(fileobj)
        return selectors.SelectorKey(fileobj, fd, mask, None)


def _is_numeric_host(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        try:
            host = host.decode("idna")
        except UnicodeError:
            return False
    if not isinstance(host, str):
        return False
    h = host.partition("%")[0]
    for fam in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(fam, h)
            return True
        except (OSError, ValueError):
            pass
    return False
