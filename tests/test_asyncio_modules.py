"""Whole CPython asyncio test modules with ringline as the default loop.

The fast subset of what tests/run_cpython_modules.py runs (issue 5, point 7):
test_ssl, test_streams, test_taskgroups, test_runners and test_timeouts
from ``test.test_asyncio`` -- every test class of each, once per backend,
with the default event loop policy's loop factory replaced by
``ringline.new_event_loop(backend)`` while the test runs, so that every
``asyncio.new_event_loop()``, ``asyncio.run()``, ``asyncio.Runner()`` and
``IsolatedAsyncioTestCase`` loop is ringline's.  test_runners builds its
loops itself (a mocked BaseEventLoop behind its own policy): here its
``new_loop()`` returns a ringline loop instead, with the same
``shutdown_ag_run`` bookkeeping, so that ringline is what those tests run.

test_subprocess is left to tests/test_cpython_subprocess.py (its
SubprocessMixin, bound to each backend) and to run_cpython_modules.py: the
whole module takes ~20 s per backend.

In asyncio mode (RINGLINE_TEST_LOOP=asyncio) the classes run unpatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import unittest
from asyncio import events, unix_events

import pytest

import _loops

if sys.platform != "linux":  # pragma: no cover
    pytest.skip("ringline is Linux-only", allow_module_level=True)

from test.test_asyncio import (test_runners, test_ssl, test_streams,  # noqa: E402
                               test_taskgroups, test_timeouts)

pytestmark = pytest.mark.conformance

MODULES = (test_ssl, test_streams, test_taskgroups, test_runners, test_timeouts)

#: test id (Class.method) -> reason: tests that cannot pass on a loop other
#: than asyncio's own, skipped on ringline.
SKIPS: dict = {}


@contextlib.contextmanager
def ringline_default_loops(backend):
    """While active, the default policy makes ringline loops of ``backend``."""
    import ringline

    policy_cls = unix_events._UnixDefaultEventLoopPolicy
    saved_factory = policy_cls.__dict__["_loop_factory"]
    saved_policy = events._event_loop_policy
    policy_cls._loop_factory = staticmethod(lambda: ringline.new_event_loop(backend))
    asyncio.set_event_loop_policy(None)
    try:
        yield
    finally:
        policy_cls._loop_factory = saved_factory
        events._event_loop_policy = saved_policy


class _OnRingline:
    """First base of the bound classes: runs the test with ringline as the
    default loop (pytest's unittest support calls run())."""

    backend = ""

    def run(self, result=None):
        if _loops.is_asyncio_mode():
            return super().run(result)
        with ringline_default_loops(self.backend):
            return super().run(result)


class _RunnersOnRingline(_OnRingline):
    """test_runners' loop factory, giving ringline loops."""

    def new_loop(self):
        if _loops.is_asyncio_mode():
            return super().new_loop()
        import ringline

        loop = ringline.new_event_loop(self.backend)
        loop.shutdown_ag_run = False
        real = loop.shutdown_asyncgens

        async def shutdown_asyncgens():
            loop.shutdown_ag_run = True
            await real()
        loop.shutdown_asyncgens = shutdown_asyncgens
        return loop


def _test_classes(module):
    for name, obj in sorted(vars(module).items()):
        if (isinstance(obj, type) and issubclass(obj, unittest.TestCase)
                and obj.__module__ == module.__name__
                and unittest.defaultTestLoader.getTestCaseNames(obj)):
            yield name, obj


def _bind():
    for module in MODULES:
        short = module.__name__.rsplit(".", 1)[-1]
        for name, cls in _test_classes(module):
            first = _RunnersOnRingline if module is test_runners else _OnRingline
            for backend in _loops.backends():
                clsname = f"Test_{short}_{name}_{backend}"
                body = {"__module__": __name__, "__qualname__": clsname,
                        "backend": backend,
                        "__doc__": f"{module.__name__}.{name} on {backend}"}
                if not _loops.is_asyncio_mode():
                    for test_id, reason in SKIPS.items():
                        cname, _, meth = test_id.partition(".")
                        if cname == name and hasattr(cls, meth):
                            body[meth] = unittest.skip(reason)(getattr(cls, meth))
                globals()[clsname] = type(clsname, (first, cls), body)


_bind()
