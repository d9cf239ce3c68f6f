"""Stream transports: real asyncio.Transport subclasses over the ring.

The per-message work (receive completions, the send queue, flow control) is
in the compiled StreamCore (_core/transport/stream.pxi); this class is the public face
asyncio code sees (isinstance checks, get_extra_info, set_protocol, repr).
write() and writelines() are the core's own methods bound on the instance,
so a write costs no Python frame.
"""

from __future__ import annotations

import socket
from asyncio import Transport

from .. import _compat
from .._core.core import StreamCore
from ._coretransport import CoreTransport

__all__ = ("SocketTransport",)


class SocketTransport(CoreTransport, _compat.FlowControlMixin, Transport):
    """A TCP or Unix stream connection whose I/O goes through the ring."""

    _start_tls_compatible = True
    # loop.sendfile(): the loop's _sendfile_native serves this transport.
    _sendfile_compatible = _compat.SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        super().__init__(extra, loop)
        self._init_socket(sock)
        core = self._core = StreamCore()
        core.setup(loop, self, sock, protocol)
        self._protocol = protocol
        self.write = core.write
        self.writelines = core.writelines
        self.is_closing = core.is_closing      # StreamWriter.drain() asks every time
        self._server = server
        if server is not None:
            _compat.server_attach(server, self)
        loop._transports[self._sock_fd] = self
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Nagle off: small writes go out without waiting for an ACK.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        loop.call_soon(protocol.connection_made, self)
        loop.call_soon(core.start_reading)
        if waiter is not None:
            loop.call_soon(_compat.set_result_unless_cancelled, waiter, None)

    # ---- writing -------------------------------------------------------------------

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._core.write_eof()

    # ---- used by the loop (sendfile, start_tls) ----------------------------------

    def _make_empty_waiter(self):
        return self._core.make_empty_waiter()

    def _reset_empty_waiter(self):
        self._core.reset_empty_waiter()
