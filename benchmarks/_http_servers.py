"""The servers (and the asyncpg client) that benchmarks/http_bench.py measures.

    python _http_servers.py uvicorn   LOOP PORT   # plain ASGI app, uvicorn + httptools
    python _http_servers.py starlette LOOP PORT   # Starlette JSON endpoint, uvicorn + httptools
    python _http_servers.py aiohttp   LOOP PORT   # aiohttp.web
    python _http_servers.py asyncpg   LOOP DSN SECONDS CONCURRENCY   # prints one JSON line
    python _http_servers.py hello-floor LOOP PORT [KEEP_ALIVE_TIMEOUT]
                                    # http_hello's Protocol, each read through a coroutine

(``http_bench.py --servers hello`` runs examples/http_hello.py itself: the runtime
API server, and its asyncio Protocol twin with ``--protocol MODULE:FACTORY``.)

LOOP is MODULE:FACTORY (``ringline:new_event_loop``, ``uvloop:new_event_loop``,
``asyncio:new_event_loop``); ringline's backend comes from RINGLINE_BACKEND.
Each server selects its loop the way the README says users do.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
import time

BODY = b"Hello, world!"
JSON_PAYLOAD = {"message": "Hello, world!", "items": list(range(10)), "ok": True}


def factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


async def asgi_app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})


def starlette_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request):
        return JSONResponse(JSON_PAYLOAD)

    return Starlette(routes=[Route("/", endpoint)])


def run_uvicorn(app, loop: str, port: int) -> None:
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=port, loop=loop, http="httptools",
                log_level="warning", access_log=False, lifespan="on")


def run_aiohttp(loop: str, port: int) -> None:
    from aiohttp import web

    async def hello(request):
        return web.Response(body=BODY, content_type="text/plain")

    app = web.Application()
    app.router.add_get("/", hello)
    web.run_app(app, host="127.0.0.1", port=port, loop=factory(loop)(), access_log=None,
                print=None)


async def pg_bench(dsn: str, seconds: float, concurrency: int) -> dict:
    import asyncpg
    pool = await asyncpg.create_pool(dsn, min_size=8, max_size=8)
    lat: list[float] = []
    stop = False

    async def worker(n):
        i = n
        while not stop:
            t0 = time.perf_counter()
            assert await pool.fetchval("SELECT $1::int + 1", i) == i + 1
            lat.append(time.perf_counter() - t0)
            i += 1

    tasks = [asyncio.create_task(worker(n)) for n in range(concurrency)]
    await asyncio.sleep(1.0)                      # warm-up
    lat.clear()
    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)
    n, cpu, wall = len(lat), time.process_time() - cpu0, time.perf_counter() - t0
    done = sorted(lat[:n])
    stop = True
    await asyncio.gather(*tasks)
    await pool.close()
    loop = asyncio.get_running_loop()
    return {"queries": n, "seconds": wall, "qps": n / wall, "cpu": cpu,
            "p99_us": done[int(0.99 * (len(done) - 1))] * 1e6 if done else None,
            "loop": f"{type(loop).__module__}.{type(loop).__qualname__}",
            "backend": getattr(loop, "backend", None)}


def hello_floor_protocol():
    """examples/http_hello.py's Protocol with each read handed to a coroutine
    per connection, resumed from data_received (_common.CoroutineFloor): the
    least a coroutine-per-connection API adds to it.  The runtime API's
    requests per CPU-second over this server's are its own bookkeeping; this
    server's over the Protocol's are CPython's floor.  (runtime_instructions.py
    counts it too.)"""
    import _common

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "examples"))
    import http_hello

    class FloorProtocol(_common.CoroutineFloor, http_hello.HelloProtocol):
        __slots__ = ("_floor", "_coro")

        def connection_made(self, transport):
            super().connection_made(transport)
            self.start_reader(asyncio.get_running_loop())

        async def reader(self):
            ex, transport, next_read = self.ex, self.transport, _common.next_read
            while True:
                ex.feed(await next_read())
                if ex.done:
                    transport.close()

        def connection_lost(self, exc):
            super().connection_lost(exc)
            self.stop_reader()

    return FloorProtocol


def run_hello_floor(loop: str, port: int, keep_alive_timeout: float = 5.0) -> None:
    """hello_floor_protocol() served on LOOP until SIGINT or SIGTERM."""
    FloorProtocol = hello_floor_protocol()
    import http_hello       # (hello_floor_protocol() put examples/ on sys.path)
    http_hello.run_protocol(
        loop, "127.0.0.1", port, keep_alive_timeout,
        lambda server: http_hello.print_banner(server, port, "coroutine floor: asyncio Protocol"),
        protocol=FloorProtocol)


def main(argv: list[str]) -> int:
    kind, loop = argv[0], argv[1]
    if kind == "uvicorn":
        run_uvicorn(asgi_app, loop, int(argv[2]))
    elif kind == "starlette":
        run_uvicorn(starlette_app(), loop, int(argv[2]))
    elif kind == "aiohttp":
        run_aiohttp(loop, int(argv[2]))
    elif kind == "hello-floor":
        run_hello_floor(loop, int(argv[2]), *(float(a) for a in argv[3:4]))
    elif kind == "asyncpg":
        dsn, seconds, conc = argv[2], float(argv[3]), int(argv[4])
        with asyncio.Runner(loop_factory=factory(loop)) as runner:
            print(json.dumps(runner.run(pg_bench(dsn, seconds, conc))), flush=True)
    else:
        print(f"unknown kind {kind!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
