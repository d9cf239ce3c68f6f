"""Which event loop the test suite runs against.

Environment variables
---------------------
RINGLINE_TEST_LOOP
    ``ringline`` (default) runs every loop-using test on ringline's loop;
    ``asyncio`` runs them on stock asyncio (``asyncio.SelectorEventLoop``, i.e.
    what ``asyncio.new_event_loop()`` returns on Linux), to compare counts.
RINGLINE_TEST_BACKENDS
    Optional comma-separated subset of ringline's backends to test
    (e.g. ``io_uring``).  Ignored in ``asyncio`` mode.

The backend list is ``ringline.available_backends()`` when ringline has it,
otherwise ``DEFAULT_BACKENDS`` below: adding the ``poll`` backend is a
one-line change there (or nothing at all once ``available_backends()``
exists).

This module must not import ringline at import time: ``asyncio`` mode has to
work on a machine where ringline is not built.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Callable, List

LOOP_ENV = "RINGLINE_TEST_LOOP"
BACKENDS_ENV = "RINGLINE_TEST_BACKENDS"

#: Backends tested when ``ringline.available_backends()`` does not exist.
DEFAULT_BACKENDS: List[str] = ["io_uring"]

#: Label used as the "backend" in asyncio mode (shows up in test ids).
ASYNCIO_LABEL = "asyncio"

_MODES = ("ringline", "asyncio")


def mode() -> str:
    """``"ringline"`` or ``"asyncio"``."""
    value = os.environ.get(LOOP_ENV, "ringline").strip().lower() or "ringline"
    if value not in _MODES:
        raise ValueError(
            f"{LOOP_ENV}={value!r}: expected one of {', '.join(_MODES)}")
    return value


def is_asyncio_mode() -> bool:
    return mode() == "asyncio"


def import_ringline():
    """Import ringline, with a helpful message when it is not built."""
    try:
        import ringline
    except ImportError as exc:  # pragma: no cover - depends on the build
        raise ImportError(
            f"ringline is not importable ({exc}); build it "
            f"(pip install -e .) or set {LOOP_ENV}=asyncio to run the suite "
            f"against stock asyncio") from exc
    return ringline


def backends() -> List[str]:
    """Backends to run loop tests on (``["asyncio"]`` in asyncio mode)."""
    if is_asyncio_mode():
        return [ASYNCIO_LABEL]
    ringline = import_ringline()
    available = getattr(ringline, "available_backends", None)
    names = list(available()) if callable(available) else list(DEFAULT_BACKENDS)
    wanted = os.environ.get(BACKENDS_ENV, "").strip()
    if wanted:
        subset = [b.strip() for b in wanted.split(",") if b.strip()]
        unknown = [b for b in subset if b not in names]
        if unknown:
            raise ValueError(
                f"{BACKENDS_ENV}: unknown/unavailable backend(s) {unknown}; "
                f"available: {names}")
        names = subset
    return names


def _asyncio_loop() -> asyncio.AbstractEventLoop:
    # Not asyncio.new_event_loop(): the conformance bindings install a policy
    # whose new_event_loop() calls this factory, which would recurse.  Under
    # the default policy asyncio.new_event_loop() returns exactly this.
    return asyncio.SelectorEventLoop()


def loop_factory(backend: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A zero-argument callable returning a new loop for ``backend``."""
    if is_asyncio_mode():
        if backend != ASYNCIO_LABEL:
            raise ValueError(f"backend {backend!r} requested in asyncio mode")
        return _asyncio_loop
    ringline = import_ringline()
    factory = functools.partial(ringline.new_event_loop, backend=backend)
    functools.update_wrapper(factory, ringline.new_event_loop)
    return factory


def new_loop(backend: str) -> asyncio.AbstractEventLoop:
    return loop_factory(backend)()


def describe() -> str:
    """One line for the pytest header."""
    if is_asyncio_mode():
        return f"{LOOP_ENV}=asyncio (stock asyncio.SelectorEventLoop)"
    try:
        names = backends()
    except Exception as exc:  # noqa: BLE001 - only used for display
        return f"{LOOP_ENV}=ringline (not importable: {exc})"
    return f"{LOOP_ENV}=ringline, backends: {', '.join(names)}"
