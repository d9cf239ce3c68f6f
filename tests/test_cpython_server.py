"""CPython's test_server.BaseStartServer on the loop under test.

test_start_unix_server_1 is defined by CPython on SelectorStartServerTests
rather than on the mixin, but is loop-generic, so it is borrowed here.
"""

import unittest

from test.test_asyncio import test_server as cpython

import _conformance

_conformance.bind(
    globals(), "StartServer", cpython.BaseStartServer, unittest.TestCase,
    attrs={"test_start_unix_server_1":
           cpython.SelectorStartServerTests.test_start_unix_server_1})
