"""Datagram transports (UDP, Unix datagram) over the ring.

asyncio's own datagram transport class supplies the semantics (address
checks, close/abort, flow control, error_received); reading and sending are
replaced by ring operations (_core/dgram.pxi): a multishot RECVMSG over a
provided-buffer ring, and one SENDMSG at a time from an ordered queue.
"""

from __future__ import annotations

import errno
import os
from asyncio import constants, selector_events
from asyncio.log import logger

from ._core.core import _dgram_receiver, _dgram_sender

__all__ = ("DatagramTransport",)


class DatagramTransport(selector_events._SelectorDatagramTransport):

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        self._recv = _dgram_receiver(loop, self, sock)
        self._send = _dgram_sender(loop, self, sock)
        self._family = sock.family
        super().__init__(loop, sock, protocol, address, waiter, extra)

    def __repr__(self):
        info = [self.__class__.__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        return "<{}>".format(" ".join(info))

    # ---- reading: the ring receiver instead of a readiness callback --------

    def _add_reader(self, fd, callback, *args):
        if self.is_reading():
            self._recv.start()

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        self._recv.stop()

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        self._recv.start()

    def close(self):
        self._recv.stop()
        if self._closing:
            return
        self._closing = True
        if not self._buffer and not self._send.busy:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)

    def _force_close(self, exc):
        self._recv.stop()
        if self._conn_lost:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._closing = True
        self._conn_lost += 1
        self._loop.call_soon(self._call_connection_lost, exc)

    # ---- sending ---------------------------------------------------------------

    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if not data:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = None       # connected: send() semantics
        if self._conn_lost and self._address:
            if self._conn_lost >= constants.LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning("socket.send() raised exception.")
            self._conn_lost += 1
            return
        if self._sock is None:
            return
        self._buffer.append((bytes(data), addr))
        self._buffer_size += len(data)
        if not self._send.busy:
            self._send_next()
        self._maybe_pause_protocol()

    def _send_next(self):
        while self._buffer and not self._send.busy:
            data, addr = self._buffer[0]
            if self._send.send(data, addr, self._family):
                return
            # An address only the socket module understands (a host name
            # or an exotic family): send it there, synchronously.
            self._buffer.popleft()
            self._buffer_size -= len(data)
            try:
                self._sock.sendto(data, addr)
            except OSError as exc:
                self._protocol.error_received(exc)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return

    def _on_sent(self, res):
        if not self._buffer:
            return          # aborted meanwhile
        data, _ = self._buffer.popleft()
        self._buffer_size -= len(data)
        if res < 0 and self._conn_lost == 0:
            err = -res
            if err != errno.ECANCELED:
                exc = OSError(err, os.strerror(err))
                try:
                    self._protocol.error_received(exc)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as e:
                    self._fatal_error(e, "Fatal write error on datagram transport")
                    return
        self._maybe_resume_protocol()
        if self._buffer:
            self._send_next()
        elif self._closing and not self._conn_lost:
            self._conn_lost += 1
            self._loop.call_soon(self._call_connection_lost, None)
