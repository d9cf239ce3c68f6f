"""ringline without its compiled core: asyncio's own loop behind ringline's
entry points, so that one program runs where the core is built (Linux) and
where it is not (macOS, Windows, no compiler).  Only public asyncio names;
nothing here imports the core or ringline._compat (which is POSIX-only).

``new_event_loop()`` returns the loop asyncio's default policy would make
(``SelectorEventLoop``; ``ProactorEventLoop`` on Windows), ``run()`` and
``install()`` follow, ``available_backends()`` is empty and ``backend()``
answers ``"asyncio"``.  Asking for a ringline backend by name is an error
that says why there is none.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import Any, Coroutine, TypeVar

from . import _native

_T = TypeVar("_T")

BACKENDS = ("io_uring", "poll")


def _unavailable(what: str) -> RuntimeError:
    return RuntimeError(f"{what} needs ringline's compiled core, which is not available "
                        f"here: {_native.why_not()} (python -m ringline info)")


def new_event_loop(backend: str | None = None) -> asyncio.AbstractEventLoop:
    """asyncio's own default loop: this ringline has no compiled core
    (``ringline.NATIVE`` is False).  ``backend`` must be None: a ringline
    backend asked for by name cannot be given (``RINGLINE_BACKEND`` in the
    environment is ignored here)."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown ringline backend {backend!r}: expected one of "
                             f"{', '.join(BACKENDS)}")
        raise _unavailable(f"the {backend} backend")
    if sys.platform == "win32":
        return asyncio.ProactorEventLoop()
    return asyncio.SelectorEventLoop()


def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None,
        backend: str | None = None) -> _T:
    """Run a coroutine as :func:`asyncio.run` does, on :func:`new_event_loop`."""
    with asyncio.Runner(debug=debug,
                        loop_factory=lambda: new_event_loop(backend)) as runner:
        return runner.run(main)


with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)   # 3.14 deprecates the policy system
    _DefaultPolicy = asyncio.DefaultEventLoopPolicy


class EventLoopPolicy(_DefaultPolicy):  # type: ignore[misc, valid-type]
    """asyncio's default policy (this ringline has no compiled core)."""


def install() -> None:
    """Set :class:`EventLoopPolicy` (asyncio's default loops, here)."""
    if sys.version_info >= (3, 14):
        warnings.warn("ringline.install() sets the event loop policy, deprecated from "
                      "Python 3.14: use ringline.run(main()) or asyncio.run(main(), "
                      "loop_factory=ringline.new_event_loop)", DeprecationWarning,
                      stacklevel=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(EventLoopPolicy())


def available_backends() -> tuple[str, ...]:
    """No ringline backend can run here."""
    return ()


def backend() -> str:
    """What a new loop is here: ``"asyncio"``."""
    return "asyncio"


def features() -> dict[str, bool]:
    return {}


def unavailable_attribute(name: str) -> AttributeError:
    return AttributeError(f"ringline.{name} needs ringline's compiled core, which is not "
                          f"available here: {_native.why_not()} (python -m ringline info)")
