"""The asyncio face: ringline's event loop, a drop-in for asyncio's.

This package owns what a program reaches through asyncio's API on a ringline
loop: the loop class (_loop.py: the compiled LoopCore plus
asyncio.BaseEventLoop), its transports (_coretransport.py, their shared Python
half; _transports.py, stream sockets; _datagram.py, UDP), TLS (_sslproto.py:
asyncio's SSLProtocol with its per-record path compiled), subprocesses
(_subprocess.py, spawned by _spawn.py's pool), and the entry points defined
here: new_event_loop, run, and the thin policy shim.

It may not import ringline.runtime: the runtime API is built on this loop,
never the other way round.  The compiled halves are _core/loop/ and
_core/transport/; private CPython names come from ringline._compat only.
"""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine, TypeVar

from .. import _compat
from ._loop import EventLoop

_T = TypeVar("_T")


def new_event_loop(backend: str | None = None) -> EventLoop:
    """Create a ringline event loop.

    ``backend`` is ``None`` (the best the kernel allows, or the
    ``RINGLINE_BACKEND`` environment variable), ``"io_uring"`` or ``"poll"``.
    """
    from .._backend import resolve_backend

    return EventLoop(resolve_backend(backend))


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None,
        backend: str | None = None) -> _T:
    """Run a coroutine on a new ringline loop, as :func:`asyncio.run` does
    (SIGINT handling, async generator and executor shutdown included)."""
    with asyncio.Runner(debug=debug,
                        loop_factory=lambda: new_event_loop(backend)) as runner:
        return runner.run(main)


class EventLoopPolicy(_compat.BasePolicy):
    """Policy whose new loops are ringline's.  The policy system is
    deprecated from Python 3.14: prefer ``asyncio.Runner(loop_factory=...)``,
    ``asyncio.run(main(), loop_factory=ringline.new_event_loop)`` (3.12+)
    or :func:`ringline.run`."""

    def _loop_factory(self) -> EventLoop:  # type: ignore[override]
        return new_event_loop()


def install() -> None:
    """Make ``asyncio.new_event_loop()`` and ``asyncio.run()`` use ringline.

    This sets the event loop policy, which Python 3.14 deprecates (removal in
    3.16); there it warns and points at the loop_factory spelling."""
    if _compat.PY314:
        import warnings
        warnings.warn("ringline.install() sets the event loop policy, deprecated from "
                      "Python 3.14: use ringline.run(main()) or asyncio.run(main(), "
                      "loop_factory=ringline.new_event_loop)", DeprecationWarning,
                      stacklevel=2)
    _compat.set_event_loop_policy(EventLoopPolicy())
