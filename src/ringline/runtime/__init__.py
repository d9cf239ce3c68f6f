"""The runtime face: ringline's server API (Builder, Handler, ConnCtx).

This package owns the worker model and a connection that bypasses asyncio's
transports: Config (_config.py), Builder and its worker processes or threads
(_builder.py, _worker.py), the Handler protocol (_handler.py), ConnCtx
(_conn.py; its compiled half is _core/runtime/connctx.pxi), the send pool and
thread pools a loop's connections share (_state.py), TLS on a ConnCtx
(_tls.py), UDP (_udp.py), asyncio streams over a ConnCtx (_streams.py),
metrics (_metrics.py) and the handler of ``python -m ringline echo``
(_echo.py).  The names below are its public API, re-exported by
ringline/__init__.py.

Workers run on the asyncio face's loop (ringline.aio.new_event_loop); a
connection here talks to the driver through ConnCore and never goes through
an asyncio transport or protocol.  Private CPython names come from
ringline._compat only.
"""

from __future__ import annotations

from ._builder import Builder, ShutdownHandle, WorkerError, WorkerHandle
from ._config import Config
from ._conn import NEED_MORE, ConnCtx, SendPoolExhausted, connect, connect_unix
from ._handler import Handler, HandlerProtocol, WorkerCtx
from ._metrics import metrics, render_prometheus
from ._state import PoolDisabledError, request_shutdown, resolve, spawn_blocking
from ._streams import open_streams
from ._udp import UdpCtx, UdpSendPoolExhausted

__all__ = (
    "Builder",
    "Config",
    "ConnCtx",
    "Handler",
    "HandlerProtocol",
    "NEED_MORE",
    "PoolDisabledError",
    "SendPoolExhausted",
    "ShutdownHandle",
    "UdpCtx",
    "UdpSendPoolExhausted",
    "WorkerCtx",
    "WorkerError",
    "WorkerHandle",
    "connect",
    "connect_unix",
    "metrics",
    "open_streams",
    "render_prometheus",
    "request_shutdown",
    "resolve",
    "spawn_blocking",
)
