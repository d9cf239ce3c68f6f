"""An install without the compiled core (issue 17, item 5): build ringline
from this checkout with ``RINGLINE_NO_EXTENSION=1`` into a fresh venv, check
that it imports with ``ringline.NATIVE`` False, that ``python -m ringline
info`` says why, that an asyncio program runs on ``ringline.new_event_loop()``,
and run tests/test_public_api.py there.

It builds a venv and installs with pip (build isolation, from PyPI or pip's
cache): about 30 s.  To keep CI short it runs on one Python version (3.11)
unless ``RINGLINE_TEST_NO_EXTENSION=1`` (every version) or ``=0`` (never).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATE_ENV = "RINGLINE_TEST_NO_EXTENSION"
DEFAULT_VERSION = (3, 11)

pytestmark = [pytest.mark.ringline_only, pytest.mark.timeout(600)]


def _gate():
    value = os.environ.get(GATE_ENV, "").strip()
    if value == "0":
        pytest.skip(f"{GATE_ENV}=0")
    if value != "1" and sys.version_info[:2] != DEFAULT_VERSION:
        pytest.skip(f"the no-extension install is tested on "
                    f"{'.'.join(map(str, DEFAULT_VERSION))} only ({GATE_ENV}=1: every version)")


def _copy_source(dest: str) -> None:
    """The files a build reads, without build products of this checkout."""
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.html", "NO_EXTENSION.txt",
                                    "*.egg-info", "build")
    shutil.copytree(os.path.join(ROOT, "src"), os.path.join(dest, "src"), ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), dest)


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "RINGLINE_", "PYTEST_", "VIRTUAL_ENV"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(argv, cwd, env, timeout=300):
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(argv)} exited {proc.returncode}:\n"
                                  f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout


PROGRAM = textwrap.dedent("""
    import asyncio, sys
    import ringline

    assert ringline.NATIVE is False, "the core should be absent in this venv"

    async def main():
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"hello\\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line, type(asyncio.get_running_loop()).__name__

    with asyncio.Runner(loop_factory=ringline.new_event_loop) as runner:
        print(runner.run(main()))
    print(ringline.run(main()))
    """)


def test_install_without_extension(tmp_path):
    _gate()
    src = tmp_path / "src-copy"
    src.mkdir()
    _copy_source(str(src))
    venv = tmp_path / "venv"
    env = _env()
    _run([sys.executable, "-m", "venv", str(venv)], str(tmp_path), env, timeout=120)
    py = str(venv / "bin" / "python")
    env_build = dict(env, RINGLINE_NO_EXTENSION="1")
    _run([py, "-m", "pip", "install", "-q", f"{src}[test]"], str(tmp_path), env_build)
    site = _run([py, "-c", "import ringline, os; print(os.path.dirname(ringline.__file__))"],
                str(tmp_path), env).strip()
    assert site.startswith(str(venv)), site
    assert not [f for f in os.listdir(os.path.join(site, "_core")) if f.endswith(".so")]

    out = _run([py, "-c", PROGRAM], str(tmp_path), env)
    assert out.splitlines() == ["(b'HELLO\\n', '_UnixSelectorEventLoop')"] * 2, out

    info = _run([py, "-m", "ringline", "info"], str(tmp_path), env)
    assert "NOT AVAILABLE" in info, info
    assert "RINGLINE_NO_EXTENSION=1" in info, info

    tests = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  os.path.join(ROOT, "tests", "test_public_api.py")], str(tmp_path), env)
    assert " passed" in tests and "failed" not in tests, tests
