"""Datagram transports (UDP, Unix datagram) over the ring.

The per-datagram work (receive completions, peer addresses, sendto, the send
queue, flow control) is in the compiled DgramCore (_core/dgram.pxi); this
class is the public face asyncio code sees.  sendto() is the core's own
method bound on the instance, so sending a datagram costs no Python frame.
"""

from __future__ import annotations

import warnings
from asyncio import futures, transports

from ._core.core import DgramCore
from ._coretransport import CoreTransport

__all__ = ("DatagramTransport",)


class DatagramTransport(CoreTransport, transports._FlowControlMixin, transports.DatagramTransport):

    max_size = 256 * 1024       # asyncio's selector transport has it; unused here

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._init_socket(sock)
        self._address = address
        self._protocol = protocol
        self._protocol_connected = True
        self._server = None
        core = self._core = DgramCore()
        core.setup(loop, self, sock, protocol, address, bool(self._extra["peername"]))
        self.sendto = core.sendto
        loop._transports[self._sock_fd] = self
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run, as in asyncio.
        loop.call_soon(core.start_reading)
        if waiter is not None:
            loop.call_soon(futures._set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._core.closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        if self._sock is not None:
            info.append("read=" + ("polling" if self._core.is_reading() else "idle"))
            info.append(f"write=<bufsize={self._core.wsize}>")
        return "<{}>".format(" ".join(info))

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._sock.close()

    # ---- asyncio.BaseTransport ---------------------------------------------------

    def close(self):
        self._core.close()

    def abort(self):
        self._core.force_close(None)

    # ---- reading -------------------------------------------------------------------

    def is_reading(self):
        return self._core.is_reading()

    def pause_reading(self):
        self._core.pause_reading()

    def resume_reading(self):
        self._core.resume_reading()

    # ---- state asyncio's code reads (flow control: _coretransport) ------

    @property
    def _conn_lost(self):
        core = self.__dict__.get("_core")
        return core.conn_lost if core is not None else 0

    @property
    def _closing(self):
        core = self.__dict__.get("_core")
        return core.closing if core is not None else False
