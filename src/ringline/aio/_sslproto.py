"""TLS for the asyncio loop: asyncio's SSLProtocol with its per-record path compiled.

The state machine, handshake, shutdown and flow control are asyncio's own
(``asyncio.sslproto.SSLProtocol``); ``_core.SSLCore`` (``_core/transport/tls.pxi``)
takes over what runs for every record on a WRAPPED session and holds the
attributes that path reads.  Its methods are bound as instance attributes, so
asyncio's code calling ``self._do_read()`` or the app calling
``transport.write()`` reaches them without a Python frame.
"""

from __future__ import annotations

from .. import _compat
from .._core import core

__all__ = ("SSLProtocol",)

# asyncio's names for the attributes SSLCore keeps (see transport/tls.pxi).
_FIELDS = ("_state", "_app_reading_paused", "_ssl_reading_paused",
           "_app_writing_paused", "_ssl_writing_paused", "_app_protocol_is_buffer",
           "_write_buffer_size", "_incoming_high_water", "_incoming_low_water",
           "_outgoing_high_water", "_outgoing_low_water", "_transport", "_app_protocol")


class SSLProtocol(_compat.SSLProtocol):
    def __init__(self, *args, **kwargs):
        # First: asyncio's __init__ already assigns the fields.
        self._ringline_tls = tls = core.SSLCore(self)
        super().__init__(*args, **kwargs)
        tls.attach(self)
        self._do_read = tls.do_read
        self._process_outgoing = tls.process_outgoing
        self._app_transport.write = tls.write

    def connection_lost(self, exc):
        app = self._app_transport
        try:
            super().connection_lost(exc)
        finally:
            # From here on asyncio's own methods (a write() after close gets
            # asyncio's answer), and the session is let go: the app protocol
            # may keep its transport, and asyncio frees the SSLContext anyway.
            if app is not None:
                app.__dict__.pop("write", None)
            self.__dict__.pop("_do_read", None)
            self.__dict__.pop("_process_outgoing", None)
            self._ringline_tls.detach()


for _name in _FIELDS:
    setattr(SSLProtocol, _name, core.TLSField(_name))
del _name

if not _compat.SSL_RECORD_PATH:
    # This interpreter's SSLProtocol is not the shape SSLCore was written
    # against (_compat's shape check): asyncio's own, uncompiled.
    SSLProtocol = _compat.SSLProtocol  # type: ignore[misc]  # noqa: F811
