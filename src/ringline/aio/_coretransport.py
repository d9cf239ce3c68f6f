"""What the socket transports over a compiled core share (stream and datagram).

asyncio's _FlowControlMixin keeps the water marks and the paused flag on the
transport; ringline's cores (StreamCore, DgramCore) keep them, because the
write path that crosses them is compiled.  CoreTransport maps the mixin's API
and the private attributes asyncio's own code reads (the sendfile fallback
reads _protocol_paused) onto ``self._core``, and fills the socket's extra
info as asyncio's _SelectorTransport does.
"""

from __future__ import annotations

import warnings

from .. import _compat


def water_marks(high=None, low=None):
    """(high, low) as asyncio's _FlowControlMixin computes them."""
    if high is None:
        high = 64 * 1024 if low is None else 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
    return high, low


class CoreTransport:

    def _init_socket(self, sock):
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._extra["socket"] = _compat.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None

    def _connection_lost(self, exc):
        # Called by the core once, after close/abort/error, via call_soon.
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._sock.close()
            self._sock = None
            self._protocol = None
            self._loop = None
            server = self._server
            if server is not None:
                _compat.server_detach(server, self)
                self._server = None


    def __repr__(self) -> str:
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
            self._core.disown()
            self._sock.close()

    def close(self) -> None:
        self._core.close()

    def abort(self) -> None:
        self._core.force_close(None)

    def is_reading(self) -> bool:
        return self._core.is_reading()

    def pause_reading(self) -> None:
        self._core.pause_reading()

    def resume_reading(self) -> None:
        self._core.resume_reading()

    # State asyncio's own code reads on a transport.
    @property
    def _conn_lost(self):
        core = self.__dict__.get("_core")
        return core.conn_lost if core is not None else 0

    @property
    def _closing(self):
        core = self.__dict__.get("_core")
        return core.closing if core is not None else False

    def get_protocol(self):
        return self._protocol

    def set_protocol(self, protocol):
        self._protocol = protocol
        self._core.set_protocol(protocol)

    def is_closing(self) -> bool:
        return self._core.closing

    def get_write_buffer_size(self) -> int:
        return self._core.wsize

    def get_write_buffer_limits(self):
        return (self._core.low_water, self._core.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        high, low = water_marks(high, low)
        self._core.high_water = high
        self._core.low_water = low
        self._core.maybe_pause_protocol()
        self._core.maybe_resume_protocol()

    @property
    def _protocol_paused(self):
        core = self.__dict__.get("_core")
        return core.protocol_paused if core is not None else False

    @_protocol_paused.setter
    def _protocol_paused(self, value):
        core = self.__dict__.get("_core")
        if core is not None:
            core.protocol_paused = value

    def _maybe_pause_protocol(self):
        self._core.maybe_pause_protocol()

    def _maybe_resume_protocol(self):
        self._core.maybe_resume_protocol()

    def _force_close(self, exc):
        self._core.force_close(exc)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        self._core.fatal_error(exc, message)
