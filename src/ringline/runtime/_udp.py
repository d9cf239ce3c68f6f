"""UdpCtx: a worker's UDP socket (Builder.bind_udp), over the ring.

Receiving is the loop's datagram transport (one multishot RECVMSG over the
datagram buffer ring, _core/transport/dgram.pxi); datagrams wait in a bounded queue
(Config.udp_ring_size; beyond it new ones are dropped and counted) until
``await udp.recv_from()`` takes them.  ``send_to()`` queues one SENDMSG and
returns at once; at most Config.udp_send_slots may be in flight, beyond
that it raises UdpSendPoolExhausted; ``await udp.send_ready()`` waits for a
free slot.
"""

from __future__ import annotations

import asyncio
import collections

from ._metrics import SLOT

__all__ = ("UdpCtx", "UdpSendPoolExhausted")

_M_UDP_IN = SLOT["udp_datagrams_in"]
_M_UDP_OUT = SLOT["udp_datagrams_out"]
_M_UDP_EXHAUSTED = SLOT["udp_send_exhausted"]


class UdpSendPoolExhausted(RuntimeError):
    """send_to() found every UDP send slot in flight."""


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, udp):
        self.udp = udp

    def datagram_received(self, data, addr):
        self.udp._received(data, addr)

    def error_received(self, exc):
        self.udp._error(exc)

    def connection_lost(self, exc):
        self.udp._lost(exc)


class UdpCtx:
    """One UDP socket of a worker."""

    def __init__(self, loop, config, metrics):
        self._loop = loop
        self._config = config
        self._metrics = metrics
        self._queue = collections.deque()
        self._limit = config.udp_ring_size
        self._slots = config.udp_send_slots
        self._recv_waiter = None
        self._send_waiters = collections.deque()
        self._transport = None
        self._closed = False
        self._exc = None
        self.dropped = 0

    @classmethod
    async def _open(cls, loop, sock, config, metrics):
        self = cls(loop, config, metrics)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self._transport = transport
        core = getattr(transport, "_core", None)
        if core is not None:
            # Every send_to() is a SENDMSG in the ring, counted against the
            # slots (no direct sendto(2)); waiters wake as sends complete.
            core.direct = False
            core.sent_hook = self._slot_freed
        return self

    @property
    def local_addr(self):
        return self._transport.get_extra_info("sockname") if self._transport else None

    # ---- receiving ------------------------------------------------------------

    def _received(self, data, addr):
        self._metrics.add(_M_UDP_IN)
        if len(self._queue) >= self._limit:
            self.dropped += 1
            return
        self._queue.append((data, addr))
        w = self._recv_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _error(self, exc):
        # ICMP errors (e.g. port unreachable) for earlier sends: not fatal.
        self._exc = exc

    def _lost(self, exc):
        self._closed = True
        w = self._recv_waiter
        if w is not None and not w.done():
            w.set_result(None)
        self._slot_freed()

    async def recv_from(self):
        """Wait for a datagram: ``(data, addr)``."""
        while not self._queue:
            if self._closed:
                raise ConnectionAbortedError("the UDP socket is closed")
            self._recv_waiter = self._loop.create_future()
            try:
                await self._recv_waiter
            finally:
                self._recv_waiter = None
        return self._queue.popleft()

    def try_recv_from(self):
        """A queued datagram, or None."""
        return self._queue.popleft() if self._queue else None

    # ---- sending -----------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        t = self._transport
        return t._core.queued if t is not None else 0

    def send_to(self, data, addr) -> None:
        """Queue one datagram; UdpSendPoolExhausted when Config.udp_send_slots
        sends are already in flight."""
        if self._closed:
            raise ConnectionAbortedError("the UDP socket is closed")
        if self.in_flight >= self._slots:
            self._metrics.add(_M_UDP_EXHAUSTED)
            raise UdpSendPoolExhausted(
                f"UDP send slots exhausted: {self._slots} sends in flight "
                f"(Config.udp_send_slots); await udp.send_ready() first")
        self._transport.sendto(data, addr)
        self._metrics.add(_M_UDP_OUT)

    async def send_ready(self) -> None:
        """Wait until send_to() has a free slot."""
        while self.in_flight >= self._slots and not self._closed:
            fut = self._loop.create_future()
            self._send_waiters.append(fut)
            await fut

    def _slot_freed(self):
        while self._send_waiters:
            fut = self._send_waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def close(self) -> None:
        if self._transport is not None and not self._closed:
            self._transport.close()
        self._closed = True

    def __repr__(self):
        return f"<UdpCtx {self.local_addr!r} queued={len(self._queue)} in_flight={self.in_flight}>"
