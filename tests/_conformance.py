"""Bind CPython's loop-generic asyncio test mixins to the loop under test.

CPython runs the same mixins against each of its loops by subclassing them
with a ``create_event_loop()`` (or ``new_loop()``) method, e.g.::

    class EPollEventLoopTests(UnixEventLoopTestsMixin, SubprocessTestsMixin,
                              test_utils.TestCase):
        def create_event_loop(self):
            return asyncio.SelectorEventLoop(selectors.EpollSelector())

``bind()`` does the same for ringline: one ``unittest.TestCase`` subclass
per backend, named ``Test<Name>_<backend>`` so that pytest collects it,
whose loop comes from ``_loops.loop_factory(backend)``.  While a bound test
runs, the asyncio event loop policy is replaced by one whose
``new_event_loop()`` also returns the loop under test, so code inside the
tests that calls ``asyncio.new_event_loop()`` (test_streams, the functional
mixins, ``SubprocessWatcherMixin``...) gets ringline's loop too.

Skips come from ``_conformance_skips.SKIPS`` and are applied to the bound
classes only (CPython's classes are never modified).
"""

from __future__ import annotations

import asyncio
from typing import Callable, Dict, Optional

import _conformance_skips
import _loops

#: Bound classes, by mixin name -> list of classes (one per backend).
BOUND: Dict[str, list] = {}


#: Loops made by the factory during the current test (strong refs; cleared
#: at setUp/tearDown).  Used to check that ``self.loop`` is the loop under test.
_CREATED: list = []


def _tracking(factory: Callable[[], asyncio.AbstractEventLoop]):
    def make_loop():
        loop = factory()
        _CREATED.append(loop)
        return loop
    make_loop.__name__ = getattr(factory, "__name__", "make_loop")
    make_loop.__wrapped__ = factory
    return make_loop


class _FactoryPolicy(asyncio.DefaultEventLoopPolicy):
    """Default policy (child watchers included) whose loops come from a factory."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]):
        super().__init__()
        self._ringline_factory = factory

    def new_event_loop(self):
        return self._ringline_factory()


class LoopBinding:
    """First base of every bound class: supplies the loop under test."""

    #: set by bind()
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    backend: str = ""
    cpython_mixin: str = ""      # e.g. "test_events.EventLoopTestsMixin"
    skip_key: str = ""           # key into _conformance_skips.SKIPS

    # CPython's two spellings of the factory hook.
    def create_event_loop(self):
        return type(self).loop_factory()

    def new_loop(self):
        return type(self).loop_factory()

    def setUp(self):
        _CREATED.clear()
        self._ringline_saved_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_FactoryPolicy(type(self).loop_factory))
        super().setUp()
        # Guard against a binding that silently tests the wrong loop.
        loop = getattr(self, "loop", None)
        if loop is not None and not any(loop is made for made in _CREATED):
            raise AssertionError(
                f"{type(self).__name__}: self.loop ({type(loop).__name__}) was "
                f"not created by the loop factory under test")

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            asyncio.set_event_loop_policy(self._ringline_saved_policy)
            _CREATED.clear()


def bind(namespace: dict, name: str, mixin: type, *bases: type,
         before: tuple = (), skip_key: Optional[str] = None,
         attrs: Optional[dict] = None) -> list:
    """Create ``Test<name>_<backend>`` classes in ``namespace``.

    The bases are ``(LoopBinding, *before, mixin, *bases)``: ``mixin`` is the
    CPython mixin, ``bases`` the remaining bases (usually
    ``test_utils.TestCase`` or ``unittest.TestCase``), ``before`` helpers
    that must come before the mixin in the MRO.  ``skip_key`` is the key in
    ``_conformance_skips.SKIPS`` (default: the mixin's name).  ``attrs`` adds
    or overrides class attributes (borrowed tests, ...).
    """
    skip_key = skip_key or mixin.__name__
    short_module = mixin.__module__.rsplit(".", 1)[-1]
    asyncio_mode = _loops.is_asyncio_mode()
    classes = []
    for backend in _loops.backends():
        clsname = f"Test{name}_{backend}"
        body = {
            "__module__": namespace["__name__"],
            "__qualname__": clsname,
            "__doc__": f"{short_module}.{skip_key} on backend {backend!r}",
            "loop_factory": staticmethod(_tracking(_loops.loop_factory(backend))),
            "backend": backend,
            "cpython_mixin": f"{short_module}.{skip_key}",
            "skip_key": skip_key,
        }
        body.update(attrs or {})
        cls = type(clsname, (LoopBinding, *before, mixin, *bases), body)
        _conformance_skips.apply(cls, skip_key, asyncio_mode)
        namespace[clsname] = cls
        classes.append(cls)
    BOUND.setdefault(skip_key, []).extend(classes)
    return classes
