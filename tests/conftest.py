"""pytest configuration shared by ringline's tests.

Loop selection (see tests/_loops.py):

* ``RINGLINE_TEST_LOOP=ringline`` (default): tests run on
  ``ringline.new_event_loop(backend=...)``, once per backend in
  ``ringline.available_backends()`` (or ``_loops.DEFAULT_BACKENDS``);
  ``RINGLINE_TEST_BACKENDS=io_uring`` restricts the list.
* ``RINGLINE_TEST_LOOP=asyncio``: the same tests on stock asyncio, to compare.

Fixtures for the project's own tests:

``loop``            a fresh loop of the backend under test, closed afterwards
                    (tests using it are parametrized over the backends)
``backend``         the backend name (``"asyncio"`` in asyncio mode)
``loop_factory``    zero-argument callable making more loops of that backend
``run``             ``run(coro, timeout=10)`` runs a coroutine on ``loop``
``socketpair``      a connected non-blocking AF_UNIX socket pair, closed after

Markers: ``conformance`` (added to CPython's bound tests, tests/test_cpython_*.py;
``-m "not conformance"`` runs only the project's own tests) and
``ringline_only`` (skipped in asyncio mode).

Per-test timeout (pytest-timeout, SIGALRM method, so a hang fails one test,
not the run): ``--timeout``/PYTEST_TIMEOUT win; else ``RINGLINE_TEST_TIMEOUT``
(seconds) if set; else the ini ``timeout`` (pyproject.toml); else 60 s.
Backstop: a test still running 30 s after its timeout (SIGALRM not
processed, e.g. a loop blocked in C that retries EINTR) gets every thread's
stack dumped and the process ends with status 86, instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # make tests/_*.py importable in any import mode
    sys.path.insert(0, _HERE)

import _loops  # noqa: E402

DEFAULT_TIMEOUT = 60.0
TIMEOUT_ENV = "RINGLINE_TEST_TIMEOUT"
WATCHDOG_GRACE = 30.0      # seconds past a test's timeout before the hard stop
WATCHDOG_EXIT_CODE = 86

try:
    import pytest_timeout  # noqa: F401
    HAVE_PYTEST_TIMEOUT = True
except ImportError:  # pragma: no cover
    HAVE_PYTEST_TIMEOUT = False


# ---------------------------------------------------------------------------
# hooks
# ---------------------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "conformance: CPython asyncio conformance test bound to the loop under test")
    config.addinivalue_line(
        "markers", "ringline_only: test of ringline-specific API, skipped when "
        "RINGLINE_TEST_LOOP=asyncio")
    if not HAVE_PYTEST_TIMEOUT:
        # Keep `pytest.mark.timeout` known so that --strict-markers works.
        config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout)")


def pytest_report_header(config):
    import _conformance_skips
    lines = [f"ringline tests: {_loops.describe()}"]
    if not _loops.is_asyncio_mode():
        enabled = sorted(_conformance_skips.enabled_tags(False))
        lines.append("conformance features enabled: "
                     + (", ".join(enabled) if enabled else "(baseline only)"))
        if _conformance_skips.skips_disabled():
            lines.append(f"{_conformance_skips.NO_SKIPS_ENV} set: skip table not applied")
    if not HAVE_PYTEST_TIMEOUT:
        lines.append("WARNING: pytest-timeout is not installed: a hanging test "
                     "hangs the whole run (pip install pytest-timeout)")
    return lines


def _default_timeout() -> float:
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    return float(value) if value else DEFAULT_TIMEOUT


def _marker_timeout(config):
    """Timeout to put on unmarked tests, or None to leave pytest-timeout's
    own setting alone.  Precedence: --timeout / PYTEST_TIMEOUT, then
    RINGLINE_TEST_TIMEOUT, then the ini ``timeout``, then DEFAULT_TIMEOUT."""
    if not HAVE_PYTEST_TIMEOUT:
        return None
    if getattr(config.option, "timeout", None) is not None or os.environ.get("PYTEST_TIMEOUT"):
        return None
    if os.environ.get(TIMEOUT_ENV, "").strip():
        return _default_timeout()
    if getattr(config, "_env_timeout", None):  # ini option
        return None
    return _default_timeout()


def pytest_collection_modifyitems(config, items):
    timeout = _marker_timeout(config)
    for item in items:
        if os.path.basename(str(item.path)).startswith("test_cpython_"):
            item.add_marker(pytest.mark.conformance)
        if timeout and timeout > 0 and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(timeout))
        if _loops.is_asyncio_mode() and item.get_closest_marker("ringline_only"):
            item.add_marker(pytest.mark.skip(reason="ringline-specific (RINGLINE_TEST_LOOP=asyncio)"))


def _item_timeout(item):
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = getattr(item.config, "_env_timeout", None)
    try:
        return float(value) if value else None
    except (TypeError, ValueError):
        return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Backstop for pytest-timeout's SIGALRM method.

    SIGALRM only fails a test if the main thread gets to run the Python
    signal handler; a loop blocked in a C-level wait that retries EINTR
    without PyErr_CheckSignals() never does, and the whole run would hang.
    So, WATCHDOG_GRACE seconds after the test's timeout, dump every thread's
    stack and end the process (like pytest-timeout's thread method): the run
    fails instead of hanging; tests/count_conformance.py then resumes after
    the hung test.
    """
    timeout = _item_timeout(item) if HAVE_PYTEST_TIMEOUT else None
    timer = None
    if timeout and timeout > 0:
        def fire():
            import faulthandler
            capman = item.config.pluginmanager.getplugin("capturemanager")
            if capman is not None:  # write to the real stderr, not pytest's capture
                try:
                    capman.suspend_global_capture(in_=True)
                except Exception:  # noqa: BLE001 - best effort from a thread
                    pass
            sys.stderr.write(
                f"\n+++ {item.nodeid} still running {timeout + WATCHDOG_GRACE:.0f}s after "
                f"it started: the SIGALRM timeout was not processed (an event loop "
                f"waiting in C without PyErr_CheckSignals()?). Stacks:\n")
            sys.stderr.flush()
            faulthandler.dump_traceback(all_threads=True)
            os._exit(WATCHDOG_EXIT_CODE)
        timer = threading.Timer(timeout + WATCHDOG_GRACE, fire)
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()


def pytest_generate_tests(metafunc):
    # Parametrize lazily so that ringline is imported only when a test needs it.
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", _loops.backends(), scope="function")


# ---------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------

@pytest.fixture
def loop_factory(backend):
    """Zero-argument callable returning a new loop of the backend under test."""
    return _loops.loop_factory(backend)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel leftover tasks, shut down async generators and the executor,
    close the loop (what asyncio.Runner does on exit)."""
    if loop.is_closed():
        return
    try:
        if not loop.is_running():
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(
                    asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()


@pytest.fixture
def loop(loop_factory):
    """A fresh loop of the backend under test; closed after the test.

    It is not set as the current loop: tests should use it explicitly (or
    ``run``), like CPython's tests do.
    """
    lp = loop_factory()
    asyncio.set_event_loop(None)
    try:
        yield lp
    finally:
        close_loop(lp)
        asyncio.set_event_loop(None)


@pytest.fixture
def run(loop):
    """``run(coro, timeout=10.0)``: run ``coro`` to completion on ``loop``."""
    def _run(coro, timeout: float = 10.0):
        return loop.run_until_complete(asyncio.wait_for(coro, timeout))
    return _run


@pytest.fixture
def socketpair():
    """A connected, non-blocking AF_UNIX stream socket pair (closed after)."""
    import _helpers
    with _helpers.socket_pair() as pair:
        yield pair


# ---------------------------------------------------------------------------
# helpers importable by tests (``from conftest import ...`` is discouraged;
# use ``tests/_loops.py`` for loop selection)
# ---------------------------------------------------------------------------

def run_briefly(loop: asyncio.AbstractEventLoop) -> None:
    """Run the loop for one iteration or so (CPython's test_utils.run_briefly)."""
    async def once():
        pass
    task = loop.create_task(once())
    loop.run_until_complete(task)


def run_until(loop: asyncio.AbstractEventLoop, predicate, timeout: float = 10.0) -> None:
    """Run the loop until ``predicate()`` is true (CPython's test_utils.run_until)."""
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"run_until: {predicate!r} still false after {timeout}s")
        loop.run_until_complete(asyncio.sleep(0.001))
