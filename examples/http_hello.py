"""A minimal HTTP/1.1 keep-alive server on the runtime API, httptools as the parser.

    pip install httptools
    python examples/http_hello.py --port 8080 --workers 1
    curl -i http://127.0.0.1:8080/
    wrk -t1 -c64 -d5s http://127.0.0.1:8080/

Every request gets the same "Hello, world!" (200, Content-Length; HEAD gets
the headers only).  Each connection is one task: ``await conn.with_data(fn)``
hands fn a memoryview over the kernel's receive buffer, fn feeds it to the
connection's ``httptools.HttpRequestParser`` (which takes a memoryview
without copying it) and returns how many bytes it consumed -- all of them:
the parser keeps its own state between reads, so nothing is left over.
Each complete request's response is queued with ``send_nowait`` (a copy into
the worker's send pool) from the parser's ``on_message_complete``, so
pipelined requests in one read are answered in order and go out together.

HTTP: keep-alive as the parser decides it (HTTP/1.1 unless ``Connection:
close``; HTTP/1.0 only with ``Connection: keep-alive``); a response that
ends the connection says ``Connection: close`` and the connection is closed
once it has been sent.  A request the parser rejects gets 400 and the
connection is closed; an Upgrade request is answered as a plain request (a
server may ignore Upgrade) and the connection goes on in HTTP/1.1.  A connection that completes no
request for --keep-alive-timeout seconds (checked every that many seconds,
so it goes after 1-2x the timeout) is closed: an idle keep-alive connection,
or a client that never finishes its request.  A client that sends requests
but does not read the responses is paused (no more reads) once 256 KiB of
responses wait for it.

``--protocol LOOP`` runs the same responder as an asyncio Protocol on LOOP
(ringline, uvloop or asyncio) instead: one process, one loop.  It shares
everything above but the transport: ``HelloProtocol`` is what
benchmarks/http_bench.py (``--servers hello``) compares the runtime server
with.

One worker per CPU by default (processes, pinned); Ctrl-C (or SIGTERM) shuts
down gracefully: connections still open get Config.shutdown_timeout (5 s)
to finish before they are cancelled.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import signal

import httptools
from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade

import ringline

BODY = b"Hello, world!"
_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
         % len(BODY))
#: the response to a request that keeps the connection (HTTP/1.0 needs the
#: header to keep it; HTTP/1.1 clients ignore it, as with nginx's).
KEEP_ALIVE = _HEAD + b"Connection: keep-alive\r\n\r\n" + BODY
#: the response to a request that ends it (Connection: close, HTTP/1.0).
CLOSE = _HEAD + b"Connection: close\r\n\r\n" + BODY
BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
               b"Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n")
_HEAD_RESPONSES = {KEEP_ALIVE: KEEP_ALIVE[:-len(BODY)], CLOSE: CLOSE[:-len(BODY)]}

#: a connection whose unsent responses reach this many bytes is not read
#: until they are down to _LOW_WATER (runtime API; the Protocol uses its
#: transport's write buffer limits, pause_writing/resume_writing).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class Exchange:
    """One connection's HTTP side: the parser, its callbacks, the responses.

    Independent of the transport: ``send`` queues response bytes
    (``conn.send_nowait`` or ``transport.write``), ``send_unpooled`` is the
    fallback when the runtime's send pool is full (``conn.write_bytes``: a
    private copy; the reader stops at _HIGH_WATER, so it stays bounded), and
    ``close_idle`` ends the connection when it has been idle too long.
    """

    __slots__ = ("parser", "send", "send_unpooled", "close_idle", "done",
                 "requests", "seen")

    def __init__(self, send, close_idle, send_unpooled=None):
        self.send = send
        self.send_unpooled = send_unpooled
        self.close_idle = close_idle
        self.done = False        # the last response is queued: close after it
        self.requests = 0        # requests answered (the idle sweep compares)
        self.seen = -1           # self.requests at the previous sweep
        self.parser = httptools.HttpRequestParser(self)

    # ---- what the connection calls -----------------------------------------

    def feed(self, data) -> int:
        """Parse received bytes (bytes or a memoryview, used only during the
        call); every request completed in them is answered, in order.
        Returns len(data): the parser takes all of it (with_data's answer)."""
        n = len(data)
        while True:
            try:
                self.parser.feed_data(data)
            except HttpParserCallbackError as exc:
                # One of our callbacks raised (the connection went away under
                # send): that, not a parse error, is what happened.
                raise (exc.__context__ or exc) from None
            except HttpParserUpgrade as exc:
                # A server may ignore Upgrade (RFC 9110, 7.8): the request was
                # answered as a plain one; parsing goes on after it.
                data = data[exc.args[0]:]
                if len(data):
                    continue
            except HttpParserError:
                if not self.done:    # (bytes after a Connection: close request are ignored)
                    self.done = True
                    self._queue(BAD_REQUEST)
            return n

    # ---- httptools' callbacks -------------------------------------------------

    def on_message_complete(self) -> None:
        if self.done:
            return
        parser = self.parser
        self.requests += 1
        if parser.should_keep_alive():
            response = KEEP_ALIVE
        else:
            response = CLOSE
            self.done = True
        if parser.get_method() == b"HEAD":
            response = _HEAD_RESPONSES[response]
        try:                     # (self._queue(response), without the extra call)
            self.send(response)
        except ringline.SendPoolExhausted:
            self.send_unpooled(response)

    def _queue(self, response: bytes) -> None:
        try:
            self.send(response)
        except ringline.SendPoolExhausted:
            self.send_unpooled(response)


class IdleSweeper:
    """Closes connections that completed no request between two sweeps,
    one every ``timeout`` seconds (a timer on the loop, armed while there
    are connections)."""

    def __init__(self, loop, timeout: float):
        self.loop, self.timeout = loop, timeout
        self.exchanges: set[Exchange] = set()
        self.timer = None

    def add(self, ex: Exchange) -> None:
        if self.timeout > 0:
            self.exchanges.add(ex)
            if self.timer is None:
                self.timer = self.loop.call_later(self.timeout, self._sweep)

    def discard(self, ex: Exchange) -> None:
        self.exchanges.discard(ex)

    def _sweep(self) -> None:
        self.timer = None
        for ex in list(self.exchanges):
            if ex.requests == ex.seen:
                self.exchanges.discard(ex)
                ex.close_idle()
            else:
                ex.seen = ex.requests
        if self.exchanges:
            self.timer = self.loop.call_later(self.timeout, self._sweep)


# ---- the runtime API server -----------------------------------------------------


class HelloHandler(ringline.Handler):
    """The runtime API handler: one instance per worker, one task per connection."""

    keep_alive_timeout = 5.0

    def __init__(self):
        self.sweeper = None

    async def on_accept(self, conn):
        if self.sweeper is None:
            self.sweeper = IdleSweeper(asyncio.get_running_loop(), self.keep_alive_timeout)

        def close_idle():
            # Responses the client is not reading would keep a closing
            # connection open: drop them.
            conn.abort() if conn.qbytes else conn.close()

        ex = Exchange(conn.send_nowait, close_idle, conn.write_bytes)
        # ex.feed gets the view, the kernel's buffer, valid only during the
        # call: the parser reads it and keeps nothing of it.  It returns
        # len(view) (all consumed; 0 at EOF).
        feed, with_data = ex.feed, conn.with_data
        self.sweeper.add(ex)
        try:
            while await with_data(feed):
                if ex.done:
                    break
                if conn.qbytes > _HIGH_WATER:
                    await conn.drain(_LOW_WATER)
        finally:
            self.sweeper.discard(ex)
            ex.parser = None     # (parser <-> its callbacks: a cycle otherwise)
        # Returning closes the connection once its responses have gone out.


# ---- the same responder as an asyncio Protocol --------------------------------


class HelloProtocol(asyncio.Protocol):
    """The same responder on any asyncio loop (transport.write for send)."""

    __slots__ = ("sweeper", "transport", "ex")

    def __init__(self, sweeper: IdleSweeper):
        self.sweeper = sweeper
        self.transport = None
        self.ex = None

    def connection_made(self, transport):
        self.transport = transport

        def close_idle():
            transport.abort() if transport.get_write_buffer_size() else transport.close()

        self.ex = Exchange(transport.write, close_idle)
        self.sweeper.add(self.ex)

    def data_received(self, data):
        ex = self.ex
        ex.feed(data)
        if ex.done:
            self.transport.close()

    def eof_received(self):
        return False             # close (after what is queued has been sent)

    def connection_lost(self, exc):
        self.sweeper.discard(self.ex)
        self.ex.parser = None

    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


async def serve_protocol(host: str, port: int, keep_alive_timeout: float = 5.0,
                         ready=None, handle_signals: bool = False,
                         protocol=HelloProtocol) -> None:
    """Serve `protocol` (HelloProtocol or a subclass) on the running loop until cancelled, or (with
    handle_signals, in the main thread) SIGINT or SIGTERM: handled here, as
    a process started in the background by a shell has SIGINT ignored, and
    asyncio.Runner leaves it so."""
    loop = asyncio.get_running_loop()
    sweeper = IdleSweeper(loop, keep_alive_timeout)
    server = await loop.create_server(lambda: protocol(sweeper), host, port,
                                      backlog=1024)
    task = asyncio.current_task()
    signals = (signal.SIGINT, signal.SIGTERM) if handle_signals else ()
    for sig in signals:
        loop.add_signal_handler(sig, task.cancel)
    if ready is not None:
        ready(server)
    try:
        async with server:
            await server.serve_forever()
    except asyncio.CancelledError:
        pass
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def loop_factory(name: str):
    """ringline / uvloop / asyncio, or MODULE:FACTORY."""
    spec = {"ringline": "ringline:new_event_loop", "uvloop": "uvloop:new_event_loop",
            "asyncio": "asyncio:new_event_loop"}.get(name, name)
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def run_protocol(loop_name: str, host: str, port: int, keep_alive_timeout: float = 5.0,
                 ready=None, protocol=HelloProtocol) -> None:
    """serve_protocol() on a new LOOP until SIGINT (Ctrl-C) or SIGTERM."""
    with asyncio.Runner(loop_factory=loop_factory(loop_name)) as runner:
        runner.run(serve_protocol(host, port, keep_alive_timeout, ready, handle_signals=True,
                                  protocol=protocol))


def print_banner(server, port: int, what: str = "asyncio Protocol") -> None:
    """The line a Protocol server prints once it serves: its loop and backend."""
    loop = server.get_loop()
    backend = getattr(loop, "backend", None)
    print(f"http_hello ({what} on {type(loop).__module__}.{type(loop).__qualname__}"
          f"{f', {backend} backend' if backend else ''}) on :{port}; Ctrl-C to stop", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--workers", type=int, default=0,
                    help="worker processes (0: one per CPU; 1 for a benchmark)")
    ap.add_argument("--keep-alive-timeout", type=float, default=5.0,
                    help="close a connection that completes no request for this long "
                         "(seconds; 0: never)")
    ap.add_argument("--protocol", metavar="LOOP",
                    help="run the asyncio Protocol version on LOOP (ringline, uvloop, "
                         "asyncio) instead of the runtime API")
    args = ap.parse_args()
    if args.protocol:
        run_protocol(args.protocol, args.host, args.port, args.keep_alive_timeout,
                     lambda server: print_banner(server, args.port))
        return
    HelloHandler.keep_alive_timeout = args.keep_alive_timeout
    shutdown, workers = (ringline.Builder(ringline.Config(workers=args.workers))
                         .bind((args.host, args.port))
                         .launch(HelloHandler))
    print(f"http_hello on :{args.port} ({ringline.backend()} backend), {len(workers)} "
          f"workers; Ctrl-C to stop", flush=True)
    sig = shutdown.wait_on_signal()
    print(f"stopped by {sig.name if sig else 'worker exit'}")
    print(ringline.render_prometheus(shutdown.metrics()), end="")


if __name__ == "__main__":
    main()
