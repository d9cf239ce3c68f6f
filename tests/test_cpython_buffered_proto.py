"""CPython's test_buffered_proto.BaseTestBufferedProtocol on the loop under test."""

import unittest

from test.test_asyncio import test_buffered_proto as cpython

import _conformance

_conformance.bind(globals(), "BufferedProtocol",
                  cpython.BaseTestBufferedProtocol, unittest.TestCase)
