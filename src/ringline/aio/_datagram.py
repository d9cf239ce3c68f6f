"""Datagram transports (UDP, Unix datagram) over the ring.

The per-datagram work (receive completions, peer addresses, sendto, the send
queue, flow control) is in the compiled DgramCore (_core/transport/dgram.pxi); this
class is the public face asyncio code sees.  sendto() is the core's own
method bound on the instance, so sending a datagram costs no Python frame.
"""

from __future__ import annotations

from asyncio import DatagramTransport as _DatagramTransport

from .. import _compat
from .._core.core import DgramCore
from ._coretransport import CoreTransport

__all__ = ("DatagramTransport",)


class DatagramTransport(CoreTransport, _compat.FlowControlMixin, _DatagramTransport):

    max_size = 256 * 1024       # asyncio's selector transport has it; unused here

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        super().__init__(extra, loop)
        self._init_socket(sock)
        self._address = address
        self._protocol = protocol
        self._server = None
        core = self._core = DgramCore()
        core.setup(loop, self, sock, protocol, address, bool(self._extra["peername"]))
        self.sendto = core.sendto
        loop._transports[self._sock_fd] = self
        loop.call_soon(protocol.connection_made, self)
        # Reading starts once connection_made() has run, as in asyncio.
        loop.call_soon(core.start_reading)
        if waiter is not None:
            loop.call_soon(_compat.set_result_unless_cancelled, waiter, None)
