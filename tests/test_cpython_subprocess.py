"""CPython's test_subprocess.SubprocessMixin on the loop under test.

Bound through CPython's SubprocessWatcherMixin with the ThreadedChildWatcher
(as SubprocessThreadedWatcherTests): its setUp makes the loop with
asyncio.get_event_loop_policy().new_event_loop(), which the binding's policy
turns into the loop under test.
"""

import sys
import unittest

from test.test_asyncio import test_subprocess as cpython
from test.test_asyncio import utils as test_utils

import _conformance

if sys.platform == "win32":  # pragma: no cover - ringline is Linux-only
    raise unittest.SkipTest("ringline is Linux-only")

from asyncio import unix_events  # noqa: E402

_conformance.bind(globals(), "Subprocess", cpython.SubprocessWatcherMixin,
                  test_utils.TestCase, skip_key="SubprocessMixin",
                  attrs={"Watcher": unix_events.ThreadedChildWatcher})
