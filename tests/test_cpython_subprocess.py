"""CPython's test_subprocess.SubprocessMixin on the loop under test.

CPython binds the mixin through SubprocessWatcherMixin on 3.11-3.13 (a child
watcher per test; 3.12 changed its hook from ``Watcher`` to ``_get_watcher``)
and directly on 3.14, where child watchers are gone.  ringline needs no child
watcher (the pidfd is polled in the ring), so the binding is 3.14's on every
version: ``setUp`` makes the loop under test and sets it as the current loop,
as SubprocessWatcherMixin does minus the watcher.  (A watcher the program
installs is used as asyncio uses it: tests/test_child_watcher.py, and
tests/run_cpython_modules.py runs CPython's watcher classes.)
"""

import sys
import unittest

from test.test_asyncio import test_subprocess as cpython
from test.test_asyncio import utils as test_utils

import _conformance

if sys.platform == "win32":  # pragma: no cover - ringline is Linux-only
    raise unittest.SkipTest("ringline is Linux-only")


class _LoopSetUp:
    def setUp(self):
        super().setUp()
        self.loop = self.new_loop()
        self.set_event_loop(self.loop)


_conformance.bind(globals(), "Subprocess", cpython.SubprocessMixin,
                  test_utils.TestCase, before=(_LoopSetUp,),
                  skip_key="SubprocessMixin")
