"""CPython's test_sock_lowlevel.BaseSockTestsMixin on the loop under test
(sock_recv/sock_sendall/sock_connect/sock_accept/sock_recvfrom...)."""

from test.test_asyncio import test_sock_lowlevel as cpython
from test.test_asyncio import utils as test_utils

import _conformance

_conformance.bind(globals(), "SockLowlevel", cpython.BaseSockTestsMixin,
                  test_utils.TestCase)
