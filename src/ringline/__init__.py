"""ringline: an asyncio event loop on io_uring, with a portable poll backend.

    import asyncio, ringline
    ringline.run(main())                                  # like asyncio.run
    asyncio.Runner(loop_factory=ringline.new_event_loop)  # any asyncio program

Where the compiled core is not available (not built: another OS, no C
compiler, ``RINGLINE_NO_EXTENSION=1``; or it does not import),
``ringline.NATIVE`` is False and the same entry points give asyncio's own
loop; ``python -m ringline info`` says why.
"""

from __future__ import annotations

from ._native import NATIVE

__version__ = "0.1.0"

if NATIVE:
    from ._backend import available_backends, backend, features, live_counts
    from .aio._loop import EventLoop
    from .aio import EventLoopPolicy, install, new_event_loop, run
    from . import fs, nvme, process  # noqa: E402  (ringline.fs, .nvme, .process)

    __all__ = (
        "EventLoop",
        "EventLoopPolicy",
        "NATIVE",
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
    from .runtime import *  # noqa: E402,F401,F403
    from .runtime import __all__ as _api_all  # noqa: E402

    __all__ += _api_all
else:
    from ._fallback import (EventLoopPolicy, available_backends, backend,  # noqa: F401
                            features, install, new_event_loop, run)

    __all__ = (
        "EventLoopPolicy",
        "NATIVE",
        "available_backends",
        "backend",
        "features",
        "install",
        "new_event_loop",
        "run",
    )

    def __getattr__(name: str):
        # The loop class, ringline.fs/.process/.nvme and the runtime API
        # (Builder, ConnCtx, ...) exist only on the compiled core.
        from ._fallback import unavailable_attribute
        raise unavailable_attribute(name)
