"""CPython's test_events loop-generic mixins, run on the loop under test.

EventLoopTestsMixin and SubprocessTestsMixin, bound as CPython binds them to
its SelectorEventLoop variants (see test_events.EPollEventLoopTests).  We do
not use CPython's UnixEventLoopTestsMixin: it installs a SafeChildWatcher,
which needs add_signal_handler(SIGCHLD) in every setUp; the policy's default
ThreadedChildWatcher (asyncio's default since 3.8) is used instead.
"""

from test import support
from test.test_asyncio import test_events as cpython
from test.test_asyncio import utils as test_utils

import _conformance


class _EventLoopSetup:
    """EventLoopTestsMixin's setUp/tearDown, for SubprocessTestsMixin alone
    (CPython only ever combines the two in one class)."""

    def setUp(self):
        super().setUp()
        self.loop = self.create_event_loop()
        self.set_event_loop(self.loop)

    def tearDown(self):
        if not self.loop.is_closed():
            test_utils.run_briefly(self.loop)
        self.doCleanups()
        support.gc_collect()
        super().tearDown()


_conformance.bind(globals(), "EventLoop", cpython.EventLoopTestsMixin,
                  test_utils.TestCase)

_conformance.bind(globals(), "EventsSubprocess", cpython.SubprocessTestsMixin,
                  _EventLoopSetup, test_utils.TestCase)
