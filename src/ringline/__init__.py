"""ringline: an asyncio event loop on io_uring, with a portable poll backend.

    import asyncio, ringline
    ringline.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=ringline.new_event_loop)  # any asyncio program
"""

from __future__ import annotations

from ._backend import available_backends, backend, features
from ._loop import EventLoop
from ._run import EventLoopPolicy, install, new_event_loop, run

__all__ = (
    "EventLoop",
    "EventLoopPolicy",
    "available_backends",
    "backend",
    "features",
    "install",
    "new_event_loop",
    "run",
)

__version__ = "0.1.0"
