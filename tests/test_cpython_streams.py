"""CPython's test_streams.StreamTests on the loop under test.

StreamTests.setUp makes its loop with asyncio.new_event_loop(); the
binding's event loop policy makes that the loop under test (and the binding
checks that it is).
"""

from test.test_asyncio import test_streams as cpython

import _conformance

_conformance.bind(globals(), "Streams", cpython.StreamTests)
