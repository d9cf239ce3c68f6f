"""ringline: an asyncio event loop on io_uring, with a portable poll backend.

    import asyncio, ringline
    ringline.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=ringline.new_event_loop)  # any asyncio program
"""

from __future__ import annotations

from ._backend import available_backends, backend, features, live_counts
from ._loop import EventLoop
from ._run import EventLoopPolicy, install, new_event_loop, run
from . import fs, nvme, process  # noqa: E402  (ringline.fs, .nvme, .process)

__all__ = (
    "EventLoop",
    "EventLoopPolicy",
    "available_backends",
    "backend",
    "features",
    "fs",
    "install",
    "live_counts",
    "new_event_loop",
    "nvme",
    "process",
    "run",
)

# The runtime API (Config, Builder, Handler, ConnCtx, connect, metrics, ...).
from ._api import *  # noqa: E402,F401,F403
from ._api import __all__ as _api_all  # noqa: E402

__all__ += _api_all

__version__ = "0.1.0"
