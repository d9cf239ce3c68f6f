"""Entry points: new_event_loop, run, and the thin policy shim."""

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
