"""CPython's test_sslproto.BaseStartTLS on the loop under test."""

import unittest

from test.test_asyncio import test_sslproto as cpython

import _conformance

_classes = _conformance.bind(globals(), "StartTLS", cpython.BaseStartTLS,
                             unittest.TestCase)
if cpython.ssl is None:  # as CPython's SelectorStartTLSTests
    for _cls in _classes:
        unittest.skip("No ssl module")(_cls)
