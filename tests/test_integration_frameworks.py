"""Frameworks on ringline, each selecting the loop the way its users do, on
every backend: a real request or query through each.

* uvicorn: ``--loop ringline:new_event_loop`` on the CLI, and
  ``uvicorn.Config(loop=...)`` with the import string and with the callable;
* aiohttp: ``web.run_app(app, loop=ringline.new_event_loop())`` serving, and
  aiohttp's client (on ringline) talking to it;
* hypercorn: ``ringline.run(hypercorn.asyncio.serve(app, config))``;
* anyio: ``anyio.run(main, backend_options={"loop_factory": ...})``;
* pytest-asyncio: its ``pytest_asyncio_loop_factories`` hook (1.4+) in a
  conftest, run by a child pytest;
* asyncpg: a pool against a real PostgreSQL server (``RINGLINE_PG_DSN``;
  ``.ci/run`` starts one with tools/ci_postgres.sh).

Servers run in child processes, the backend chosen by ``RINGLINE_BACKEND``
(what a deployment would set); requests go over loopback HTTP from this
process.  Each app answers with the class and backend of the loop it runs
on, so a test fails if the framework quietly used another loop.

A framework that is not installed skips its tests, unless
``RINGLINE_REQUIRE_INTEGRATION=1`` (tests/all_pythons.py sets it: it
installs the ``[integration]`` extra), where that is a failure.  The asyncpg
test skips when no server answers, unless ``RINGLINE_REQUIRE_PG=1``
(.ci/run sets it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import _loops
from _helpers import child_env, free_port

pytestmark = [pytest.mark.ringline_only, pytest.mark.timeout(120)]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ASGI_APP = '''
import asyncio


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    loop = asyncio.get_running_loop()
    info = {"loop": type(loop).__module__ + "." + type(loop).__qualname__,
            "backend": getattr(loop, "backend", None), "path": scope["path"],
            "method": scope["method"], "received": len(body)}
    out = __import__("json").dumps(info).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})
'''


def _need(module: str):
    """Import a framework, or skip (fail when RINGLINE_REQUIRE_INTEGRATION=1)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("RINGLINE_REQUIRE_INTEGRATION") == "1":
            pytest.fail(f"{module} is not installed but RINGLINE_REQUIRE_INTEGRATION=1 "
                        f"(pip install '.[integration]'): {exc}")
        pytest.skip(f"{module} not installed (pip install '.[integration]')")


@contextlib.contextmanager
def _server(argv, cwd, backend, port, timeout=30.0):
    """Run a server child until it accepts on ``port``; stop it after
    (SIGINT, as Ctrl-C would: every framework here shuts down on it), and
    fail if it did not exit cleanly."""
    log = open(os.path.join(cwd, "server.log"), "w+b")
    proc = subprocess.Popen(argv, cwd=cwd, env=child_env(backend), stdout=log,
                            stderr=subprocess.STDOUT)

    def output():
        log.flush()
        log.seek(0)
        return log.read().decode(errors="replace")

    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode} before serving:\n{output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"server not accepting on {port} after {timeout}s:\n{output()}")
                time.sleep(0.05)
        yield output
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"server did not stop within 20 s of SIGINT:\n{output()}")
        # uvicorn and hypercorn exit 0 on SIGINT; aiohttp's run_app too.
        assert rc == 0, f"server exited with {rc}:\n{output()}"
        assert "Traceback" not in output(), output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _http_exchange(port: int, backend: str) -> None:
    """GETs and a 300 KB POST over one keep-alive connection, then a second
    connection; each answer names the loop that served it."""
    for _ in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            for i in range(3):
                conn.request("GET", f"/get/{i}")
                resp = conn.getresponse()
                assert resp.status == 200
                info = json.loads(resp.read())
                assert info["loop"] == "ringline.aio._loop.EventLoop", info
                assert info["backend"] == backend, info
                assert info["path"] == f"/get/{i}"
            body = bytes(range(256)) * 1200
            conn.request("POST", "/post", body=body,
                         headers={"Content-Type": "application/octet-stream"})
            resp = conn.getresponse()
            assert resp.status == 200
            info = json.loads(resp.read())
            assert (info["method"], info["received"]) == ("POST", len(body)), info
        finally:
            conn.close()


def _write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


# ---------------------------------------------------------------------------
# uvicorn
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 2])
def test_uvicorn_cli(backend, tmp_path, workers):
    """``uvicorn app:app --loop ringline:new_event_loop`` (uvicorn >= 0.36),
    in one process and with ``--workers 2`` (worker processes spawned by
    uvicorn's supervisor, each on its own ringline loop)."""
    _need("uvicorn")
    _write(tmp_path, "asgi_app.py", ASGI_APP)
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--loop", "ringline:new_event_loop",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--workers", str(workers)]
    with _server(argv, str(tmp_path), backend, port):
        _http_exchange(port, backend)


@pytest.mark.parametrize("form", ["string", "callable"])
def test_uvicorn_config(backend, tmp_path, form):
    """``uvicorn.Server(uvicorn.Config(app, loop=...)).run()`` with the import
    string and with ``ringline.new_event_loop`` itself."""
    _need("uvicorn")
    _write(tmp_path, "asgi_app.py", ASGI_APP)
    loop_arg = '"ringline:new_event_loop"' if form == "string" else "ringline.new_event_loop"
    _write(tmp_path, "serve.py", f"""
        import sys
        import ringline, uvicorn
        from asgi_app import app
        config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[1]),
                                loop={loop_arg}, log_level="warning")
        try:
            uvicorn.Server(config).run()
        except KeyboardInterrupt:   # Server.run() re-raises the SIGINT it handled
            pass
        """)
    port = free_port()
    with _server([sys.executable, "serve.py", str(port)], str(tmp_path), backend, port):
        _http_exchange(port, backend)


# ---------------------------------------------------------------------------
# hypercorn
# ---------------------------------------------------------------------------

def test_hypercorn(backend, tmp_path):
    """``ringline.run(hypercorn.asyncio.serve(app, config))``."""
    _need("hypercorn")
    _write(tmp_path, "asgi_app.py", ASGI_APP)
    _write(tmp_path, "serve.py", """
        import sys
        import ringline
        from hypercorn.asyncio import serve
        from hypercorn.config import Config
        from asgi_app import app
        config = Config()
        config.bind = [f"127.0.0.1:{sys.argv[1]}"]
        config.loglevel = "WARNING"
        ringline.run(serve(app, config))
        """)
    port = free_port()
    with _server([sys.executable, "serve.py", str(port)], str(tmp_path), backend, port):
        _http_exchange(port, backend)


# ---------------------------------------------------------------------------
# aiohttp
# ---------------------------------------------------------------------------

AIOHTTP_APP = '''
import asyncio, json, sys
from aiohttp import web
import ringline



async def handler(request):
    body = await request.read()
    loop = asyncio.get_running_loop()
    return web.json_response({
        "loop": type(loop).__module__ + "." + type(loop).__qualname__,
        "backend": getattr(loop, "backend", None), "path": request.path,
        "method": request.method, "received": len(body)})


async def stream(request):
    resp = web.StreamResponse()
    await resp.prepare(request)
    for i in range(100):
        await resp.write(b"%05d" % i * 200)
    await resp.write_eof()
    return resp


app = web.Application(client_max_size=10 * 1024 * 1024)
app.router.add_get("/stream", stream)
app.router.add_route("*", "/{tail:.*}", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), loop=ringline.new_event_loop(),
            print=None, handle_signals=True)
'''


def test_aiohttp_server_and_client(backend, loop, tmp_path):
    """aiohttp.web served with ``web.run_app(app, loop=ringline.new_event_loop())``,
    queried by aiohttp's client running on ringline (this process's loop)."""
    _need("aiohttp")
    import aiohttp

    _write(tmp_path, "serve.py", AIOHTTP_APP)
    port = free_port()
    with _server([sys.executable, "serve.py", str(port)], str(tmp_path), backend, port):
        _http_exchange(port, backend)

        async def client():
            base = f"http://127.0.0.1:{port}"
            async with aiohttp.ClientSession() as session:
                async def one(i):
                    async with session.post(f"{base}/c/{i}", data=b"z" * (i * 5000)) as r:
                        assert r.status == 200
                        return await r.json()
                infos = await asyncio.gather(*(one(i) for i in range(20)))
                for i, info in enumerate(infos):
                    assert info["backend"] == backend, info
                    assert info["received"] == i * 5000
                async with session.get(f"{base}/stream") as r:
                    data = await r.read()
                assert data == b"".join(b"%05d" % i * 200 for i in range(100))
            return asyncio.get_running_loop()

        used = loop.run_until_complete(asyncio.wait_for(client(), 30))
        assert used is loop and loop.backend == backend


# ---------------------------------------------------------------------------
# anyio
# ---------------------------------------------------------------------------

def test_anyio(backend):
    """``anyio.run(main, backend_options={"loop_factory": ...})``: a TCP
    listener and client, a subprocess and a worker thread, on ringline."""
    anyio = _need("anyio")
    from anyio.abc import SocketAttribute

    async def main():
        async def handle(stream):
            async with stream:
                async for chunk in stream:
                    await stream.send(chunk.upper())

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            async with await anyio.connect_tcp("127.0.0.1", port) as client:
                payload = b"ringline" * 20000
                await client.send(payload)
                got = b""
                while len(got) < len(payload):
                    got += await client.receive()
                assert got == payload.upper()
            done = await anyio.run_process([sys.executable, "-c", "print('child')"])
            assert done.stdout.strip() == b"child"
            assert await anyio.to_thread.run_sync(lambda: 41 + 1) == 42
            with anyio.fail_after(5):
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        loop = asyncio.get_running_loop()
        return type(loop).__module__, loop.backend

    factory = _loops.loop_factory(backend)
    assert anyio.run(main, backend="asyncio",
                     backend_options={"loop_factory": factory}) == ("ringline.aio._loop", backend)


# ---------------------------------------------------------------------------
# pytest-asyncio
# ---------------------------------------------------------------------------

def test_pytest_asyncio(backend, tmp_path):
    """pytest-asyncio's ``pytest_asyncio_loop_factories`` hook (1.4+) in a
    conftest makes its tests and async fixtures run on ringline; run by a
    child pytest in a directory of its own."""
    _need("pytest_asyncio")
    _write(tmp_path, "pytest.ini", """
        [pytest]
        asyncio_mode = strict
        asyncio_default_fixture_loop_scope = function
        """)
    _write(tmp_path, "conftest.py", """
        import os
        import ringline


        def pytest_asyncio_loop_factories(config, item):
            return {"ringline": ringline.new_event_loop}
        """)
    _write(tmp_path, "test_user.py", """
        import asyncio, os
        import pytest
        import pytest_asyncio


        @pytest_asyncio.fixture
        async def echo_server():
            async def handle(reader, writer):
                writer.write(await reader.readline())
                await writer.drain()
                writer.close()
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            yield server.sockets[0].getsockname()[1]
            server.close()
            await server.wait_closed()


        @pytest.mark.asyncio
        async def test_round_trip(echo_server):
            loop = asyncio.get_running_loop()
            assert type(loop).__module__ == "ringline.aio._loop"
            assert loop.backend == os.environ["RINGLINE_BACKEND"]
            reader, writer = await asyncio.open_connection("127.0.0.1", echo_server)
            writer.write(b"hello\\n")
            assert await reader.readline() == b"hello\\n"
            writer.close()
            await writer.wait_closed()


        @pytest.mark.asyncio
        async def test_second_test_gets_a_loop_too():
            assert type(asyncio.get_running_loop()).__module__ == "ringline.aio._loop"
        """)
    env = child_env(backend)
    env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "asyncio",
         "-W", "error::pytest.PytestDeprecationWarning", str(tmp_path)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=100)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "2 passed" in out, out


# ---------------------------------------------------------------------------
# asyncpg
# ---------------------------------------------------------------------------

DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_dsn() -> str:
    dsn = os.environ.get("RINGLINE_PG_DSN") or DEFAULT_PG_DSN
    import urllib.parse
    u = urllib.parse.urlsplit(dsn)
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or 5432), timeout=2).close()
    except OSError as exc:
        why = (f"no PostgreSQL server at {u.hostname}:{u.port or 5432} ({exc}); "
               f"set RINGLINE_PG_DSN, or start one: eval \"$(bash tools/ci_postgres.sh start)\"")
        if os.environ.get("RINGLINE_REQUIRE_PG") == "1":
            pytest.fail(f"RINGLINE_REQUIRE_PG=1: {why}")
        pytest.skip(why)
    return dsn


def test_asyncpg(backend, loop):
    """asyncpg over a pool on ringline: concurrent queries, COPY in, a
    10,000-row fetch, LISTEN/NOTIFY, a transaction rolled back."""
    asyncpg = _need("asyncpg")
    dsn = _pg_dsn()

    async def main():
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        try:
            got = await asyncio.gather(*(pool.fetchval("SELECT $1::int + 1", i)
                                         for i in range(200)))
            assert got == [i + 1 for i in range(200)]
            async with pool.acquire() as conn:
                await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, s text)")
                await conn.copy_records_to_table(
                    "t", records=[(i, "x" * (i % 300)) for i in range(10000)])
                rows = await conn.fetch("SELECT id, s FROM t ORDER BY id")
                assert len(rows) == 10000 and rows[299]["s"] == "x" * 299
                with pytest.raises(asyncpg.UniqueViolationError):
                    async with conn.transaction():
                        await conn.execute("INSERT INTO t VALUES (10001, 'a')")
                        await conn.execute("INSERT INTO t VALUES (0, 'dup')")
                assert await conn.fetchval("SELECT count(*) FROM t") == 10000

                notes = asyncio.Queue()
                listener = lambda *args: notes.put_nowait(args[3])  # noqa: E731
                await conn.add_listener("ringline_ch", listener)
                async with pool.acquire() as other:
                    await other.execute("NOTIFY ringline_ch, 'hello'")
                assert await asyncio.wait_for(notes.get(), 10) == "hello"
                await conn.remove_listener("ringline_ch", listener)
                with pytest.raises(asyncio.TimeoutError):
                    await conn.fetchval("SELECT pg_sleep(5)", timeout=0.2)
                assert await conn.fetchval("SELECT 7") == 7
        finally:
            await pool.close()
        return asyncio.get_running_loop()

    assert loop.run_until_complete(asyncio.wait_for(main(), 60)) is loop
    assert loop.backend == backend
