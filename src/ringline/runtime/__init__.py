"""The runtime face: Builder, workers, Handler, ConnCtx (re-exported by ringline).

Owns the worker model and a connection that bypasses asyncio's transports:
ConnCtx (_conn.py; compiled half _core/runtime/conn.pxi) talks to the
driver through ConnCore, never through an asyncio transport or protocol.
Workers run on the asyncio face's loop (ringline.aio); the asyncio face
never imports this package.  Private CPython names: ringline._compat only.
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
