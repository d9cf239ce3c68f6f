"""CPython's test_sendfile.SendfileTestsBase (SendfileMixin + SockSendfileMixin)
on the loop under test."""

import os
import shutil
import tempfile

from test.support import os_helper
from test.test_asyncio import test_sendfile as cpython
from test.test_asyncio import utils as test_utils

import _conformance


class _TestFileInTempDir:
    """SendfileBase writes its data file to os_helper.TESTFN, a path relative
    to the current directory (CPython's test runner runs in a scratch dir).
    Point it into a temporary directory instead of the repo."""

    @classmethod
    def setUpClass(cls):
        cls._ringline_tmpdir = tempfile.mkdtemp(prefix="ringline-sendfile-")
        cls._ringline_saved_testfn = os_helper.TESTFN
        os_helper.TESTFN = os.path.join(cls._ringline_tmpdir,
                                        os.path.basename(os_helper.TESTFN))
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            os_helper.TESTFN = cls._ringline_saved_testfn
            shutil.rmtree(cls._ringline_tmpdir, ignore_errors=True)


_conformance.bind(globals(), "Sendfile", cpython.SendfileTestsBase,
                  test_utils.TestCase, before=(_TestFileInTempDir,))
