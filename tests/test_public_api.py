"""ringline's entry points, as a program uses them, with or without the
compiled core.

These run in the ordinary suite (``ringline.NATIVE`` True: ringline's loop)
and in a venv where ringline was installed without its core
(``RINGLINE_NO_EXTENSION=1 pip install .``: ``NATIVE`` False, asyncio's
own loop behind the same names); tests/test_no_extension.py builds that venv
and runs this file in it.  They import nothing of the test suite that needs
the core, and use only the default backend.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

import ringline

pytestmark = pytest.mark.ringline_only


def _expected_loop_type():
    if ringline.NATIVE:
        return ringline.EventLoop
    return asyncio.ProactorEventLoop if sys.platform == "win32" else asyncio.SelectorEventLoop


async def _program():
    """A small asyncio program: a TCP server and client over streams, a
    timer, a worker thread, a subprocess."""
    async def handle(reader, writer):
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(50):
        writer.write(b"line %d\n" % i)
    await writer.drain()
    got = [await reader.readline() for _ in range(50)]
    assert got == [b"LINE %d\n" % i for i in range(50)]
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.01)
    assert await asyncio.to_thread(sum, [1, 2, 3]) == 6
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "print('child')", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert out.strip() == b"child" and proc.returncode == 0
    return asyncio.get_running_loop()


def test_native_flag():
    from ringline import _native
    assert isinstance(ringline.NATIVE, bool)
    assert ringline.NATIVE is _native.NATIVE
    assert (_native.IMPORT_ERROR is None) is ringline.NATIVE
    assert (_native.why_not() is None) is ringline.NATIVE
    assert "NATIVE" in ringline.__all__


def test_new_event_loop_runs_a_program():
    loop = ringline.new_event_loop()
    try:
        assert type(loop) is _expected_loop_type()
        assert loop.run_until_complete(_program()) is loop
    finally:
        loop.close()


def test_run():
    loop = ringline.run(_program())
    assert type(loop) is _expected_loop_type()
    assert loop.is_closed()


def test_runner_loop_factory():
    with asyncio.Runner(loop_factory=ringline.new_event_loop) as runner:
        loop = runner.run(_program())
    assert type(loop) is _expected_loop_type()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory():
    loop = asyncio.run(_program(), loop_factory=ringline.new_event_loop)
    assert type(loop) is _expected_loop_type()


def test_policy_and_install():
    old = asyncio.get_event_loop_policy()
    try:
        loop = ringline.EventLoopPolicy().new_event_loop()
        try:
            assert type(loop) is _expected_loop_type()
        finally:
            loop.close()
        ringline.install()
        assert isinstance(asyncio.get_event_loop_policy(), ringline.EventLoopPolicy)
        loop = asyncio.run(_program())
        assert type(loop) is _expected_loop_type()
    finally:
        asyncio.set_event_loop_policy(old)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="unknown ringline backend"):
        ringline.new_event_loop(backend="no-such-backend")


def test_backends():
    names = ringline.available_backends()
    assert isinstance(names, tuple)
    if ringline.NATIVE:
        assert "poll" in names and ringline.backend() in names
    else:
        assert names == () and ringline.backend() == "asyncio"
        assert ringline.features() == {}


@pytest.mark.skipif(ringline.NATIVE, reason="fallback behaviour (no compiled core)")
def test_fallback_refuses_what_needs_the_core():
    for name in ("io_uring", "poll"):
        with pytest.raises(RuntimeError, match="compiled core"):
            ringline.new_event_loop(backend=name)
    with pytest.raises(AttributeError, match="compiled core"):
        ringline.Builder  # noqa: B018
    assert not hasattr(ringline, "EventLoop")
    # RINGLINE_BACKEND (a deployment setting) does not break the fallback.
    env = dict(os.environ, RINGLINE_BACKEND="io_uring")
    out = subprocess.run([sys.executable, "-c", "import ringline; "
                          "l = ringline.new_event_loop(); print(type(l).__name__); l.close()"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "SelectorEventLoop" in out.stdout or "ProactorEventLoop" in out.stdout


def test_info_command():
    out = subprocess.run([sys.executable, "-m", "ringline", "info"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    if ringline.NATIVE:
        assert "core:     compiled" in out.stdout
    else:
        assert "NOT AVAILABLE" in out.stdout and "import error:" in out.stdout
    js = subprocess.run([sys.executable, "-m", "ringline", "info", "--json"],
                        capture_output=True, text=True, timeout=60)
    assert js.returncode == 0, js.stderr
    info = json.loads(js.stdout)
    assert info["native"] is ringline.NATIVE
    if not ringline.NATIVE:
        assert info["native_error"] and info["loop"].endswith("EventLoop")
