"""TLS for the asyncio loop: asyncio's SSLProtocol with its per-record path compiled.

The state machine, handshake, shutdown and flow control are asyncio's own
(``asyncio.sslproto.SSLProtocol``); ``_core.SSLCore`` (``_core/sslproto.pxi``)
takes over what runs for every record on a WRAPPED session.  Its methods are
bound as instance attributes, so asyncio's code calling ``self._do_read()``
or the app calling ``transport.write()`` reaches them without a Python frame.
"""

from __future__ import annotations

from asyncio import sslproto

from ._core import core

__all__ = ("SSLProtocol",)

_base = sslproto.SSLProtocol


class SSLProtocol(_base):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        tls = core.SSLCore(self, self._app_transport)
        self._ringline_tls = tls     # StreamCore feeds received records to it
        self._do_read = tls.do_read
        self._process_outgoing = tls.process_outgoing
        self._app_transport.write = tls.write
