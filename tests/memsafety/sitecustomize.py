"""Imported at start-up by every Python process of a sanitizer run
(tests/sanitize.py and tests/valgrind.py put this directory first on PYTHONPATH).

The ASan runtime must be the first library loaded into a process that loads
the sanitized core, so the run starts Python with LD_PRELOAD=libasan.so.  Left
in the environment, that preload would reach every child process too, and
programs that are not ringline misbehave under it (a test's ``pgrep`` hung).
So: take LD_PRELOAD out of this process's environment (os.environ unsets it in
the C environ as well, which subprocess, os.posix_spawn and ringline's own
spawner pass on), and point sys.executable at a wrapper that puts it back, so
child Python interpreters -- the ones that import ringline -- still get it.
"""

import os
import sys

_preload = os.environ.get("RINGLINE_SANITIZE_PRELOAD")
if _preload and os.environ.get("LD_PRELOAD") == _preload:
    del os.environ["LD_PRELOAD"]
    _wrapper = os.environ.get("RINGLINE_SANITIZE_PYTHON")
    if _wrapper:
        sys.executable = _wrapper
