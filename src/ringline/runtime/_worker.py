"""One worker: its own loop and ring, its listeners, its connections.

Runs in a worker process (or thread): builds a loop with the Config's ring
sizes, accepts on its own SO_REUSEPORT listeners with a multishot ACCEPT,
runs one task per connection (``handler.on_accept(conn)``; the connection
is closed when it returns), on_start as a standalone task, on_tick from the
loop's per-iteration hook, on_notify and shutdown from the launcher's
control pipe (or SIGTERM), and reports ready / error / exit to the launcher.

Shutdown is graceful: stop accepting, let handler tasks finish for up to
Config.shutdown_timeout, cancel what is left, abort the connections still
open, close the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import logging
import os
import signal
import socket
import ssl
import threading
import traceback

from ..aio import _subprocess
from . import _tls
from ._conn import ConnCtx, _set_nodelay
from .._core.core import (DirectCoro, _close_direct, _direct_table, _serve_accept,
                          set_flush_interval, set_recv_buffers, set_recv_incremental,
                          set_ring_entries, set_sqpoll)
from ._handler import WorkerCtx, has_callback
from ._metrics import SLOT
from ._state import Runtime, _Pools

__all__ = ("Worker", "Listener")

logger = logging.getLogger("ringline")

_M_REJECTED = SLOT["connections_rejected"]
_M_HANDLER_ERRORS = SLOT["handler_errors"]
_M_LOOP_ITERATIONS = SLOT["loop_iterations"]
_M_TABLE_FULL = SLOT["direct_table_full"]

# set_sqpoll is process-global and read only when a ring is made: held
# from setting it to restoring it, so thread workers (and the launching
# program's own later loops) get exactly what they asked for.
_RING_SETUP_LOCK = threading.Lock()


class Listener:
    """A listening socket handed to a worker (tls: server context or None)."""

    __slots__ = ("sock", "tls", "kind", "address")

    def __init__(self, sock, tls, kind, address):
        self.sock = sock
        self.tls = tls
        self.kind = kind            # "tcp", "unix" or "udp"
        self.address = address


class _IterHook:
    """Called by the loop after every iteration: driver counters into the
    metrics block, then the handler's on_tick."""

    __slots__ = ("worker", "loop", "metrics", "on_tick", "ctx")

    def __init__(self, worker, on_tick):
        self.worker = worker
        self.loop = worker.loop
        self.metrics = worker.metrics
        self.on_tick = on_tick
        self.ctx = worker.ctx

    def __call__(self):
        m = self.metrics
        m.snapshot_driver(self.loop)
        m.add(_M_LOOP_ITERATIONS)
        if self.on_tick is not None:
            try:
                r = self.on_tick(self.ctx)
                if r is not None and asyncio.iscoroutine(r):
                    self.loop.create_task(self.worker._guard(r, "on_tick"))
            except BaseException as exc:  # noqa: BLE001 - reported, fatal
                self.on_tick = None
                self.worker.fatal(exc, "on_tick")


class Worker:
    def __init__(self, worker_id, config, handler_cls, listeners, control_fd, report,
                 metrics_block, in_process, unpinned=None):
        self.worker_id = worker_id
        self.config = config
        self.handler_cls = handler_cls
        self.listeners = listeners
        self.control_fd = control_fd
        self.report = report
        self.metrics = metrics_block
        self.in_process = in_process
        self.unpinned = unpinned        # the CPUs the worker had before it was pinned
        self.addresses = [ln.address for ln in listeners]
        self.loop = None
        self.handler = None
        self.ctx = None
        self.conn_tasks = set()
        self.tasks = set()
        self.accept_ops = []
        self.udp = []
        self.stopping = False
        self.failed = None
        self._stop = None
        self._tick_timer = None
        self.direct = False         # accepted connections in the ring's fd table
        self._full_logged = False

    # ---- running ---------------------------------------------------------------

    def run(self) -> int:
        cfg = self.config
        set_recv_buffers(cfg.ring_size, cfg.buffer_size)
        set_recv_incremental(cfg.recv_incremental)
        set_ring_entries(cfg.sq_entries, cfg.cq_entries)
        set_flush_interval(cfg.flush_interval)
        if cfg.spawner_threads > 0 and self.in_process:
            _subprocess.SPAWNER_THREADS = cfg.spawner_threads
        loop = self.loop = self._new_loop(cfg)
        if cfg.fixed_files:
            err = _direct_table(loop, cfg.fixed_files)
            self.direct = err == 0
            if err and err != errno.EOPNOTSUPP:
                logger.warning("ringline worker %d: no direct-descriptor table of %d slots "
                               "(%s); connections use fds", self.worker_id, cfg.fixed_files,
                               os.strerror(err))
        pools = _Pools(cfg, f"ringline-w{self.worker_id}")
        loop._ringline_runtime = Runtime(loop, cfg, self.metrics, worker=self, pools=pools)
        asyncio.set_event_loop(loop)
        code = 1
        try:
            code = loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to the launcher
            self.fatal(exc, "worker")
            code = 1
        finally:
            try:
                self._cleanup_loop()
            finally:
                pools.shutdown(wait=False)
                asyncio.set_event_loop(None)
        return code

    def _new_loop(self, cfg):
        from ..aio import new_event_loop
        # The SQ thread takes the affinity of the thread making the ring
        # (6.x; older kernels let it run on any online CPU): a pinned worker
        # would share its one CPU with it.  Unless sqpoll_cpu says where,
        # the ring is made with the CPUs the worker had before pinning.
        widen = None
        if cfg.sqpoll and cfg.sqpoll_cpu is None and self.unpinned:
            mine = os.sched_getaffinity(0)
            if mine != self.unpinned:
                widen = mine
        with _RING_SETUP_LOCK:
            old = set_sqpoll(cfg.sqpoll_idle_ms if cfg.sqpoll else None,
                             -1 if cfg.sqpoll_cpu is None else cfg.sqpoll_cpu)
            try:
                if widen is not None:
                    os.sched_setaffinity(0, self.unpinned)
                return new_event_loop(cfg.backend)
            finally:
                if widen is not None:
                    os.sched_setaffinity(0, widen)
                set_sqpoll(*old)

    def _cleanup_loop(self):
        loop = self.loop
        try:
            tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop._iter_hook = None
            loop.close()

    async def _main(self) -> int:
        loop = self.loop
        self._stop = asyncio.Event()
        self.ctx = WorkerCtx(self)
        if self.in_process:
            try:
                loop.add_signal_handler(signal.SIGTERM, self.request_shutdown)
            except (RuntimeError, ValueError):
                pass
        try:
            maker = getattr(self.handler_cls, "create_for_worker", None)
            self.handler = maker(self.worker_id) if maker is not None else self.handler_cls()
        except BaseException as exc:
            self.fatal(exc, "create_for_worker")
            return 1
        h = self.handler
        on_tick = has_callback(h, "on_tick")
        loop._iter_hook = _IterHook(self, on_tick)
        if on_tick is not None:
            self._arm_tick()
        if self.control_fd is not None:
            os.set_blocking(self.control_fd, False)
            loop.add_reader(self.control_fd, self._on_control)
        try:
            on_udp = has_callback(h, "on_udp_bind")
            for ln in self.listeners:
                if ln.kind == "udp":
                    from ._udp import UdpCtx
                    udp = await UdpCtx._open(loop, ln.sock, self.config, self.metrics)
                    self.udp.append(udp)
                    if on_udp is not None:
                        r = on_udp(udp)
                        if asyncio.iscoroutine(r):
                            self._spawn(self._guard(r, "on_udp_bind"))
            for ln in self.listeners:
                if ln.kind in ("tcp", "unix"):
                    self.accept_ops.append(self._accept_on(ln))
            on_start = has_callback(h, "on_start")
            start_task = None
            if on_start is not None:
                r = on_start()
                if asyncio.iscoroutine(r):
                    start_task = self._spawn(self._guard(r, "on_start"))
        except BaseException as exc:
            self.fatal(exc, "startup")
            return 1
        self.report(("ready", self.worker_id, os.getpid()))
        client_only = not self.listeners
        if client_only and start_task is not None:
            # A client program: done when on_start is.
            start_task.add_done_callback(lambda t: self.request_shutdown())
        await self._stop.wait()
        await self._shutdown()
        return 1 if self.failed is not None else 0

    def _spawn(self, coro):
        task = self._task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _task(self, coro):
        # A handler's task: an ordinary asyncio Task, whose connection waits
        # are resumed straight from completions (DirectCoro, _core/runtime/
        # direct.pxi) unless Config.direct_resume is off.  Its context is a
        # copy of the current one, as create_task() takes.
        loop = self.loop
        if not self.config.direct_resume:
            return loop.create_task(coro)
        ctx = contextvars.copy_context()
        dc = DirectCoro(coro, loop, ctx)
        task = loop.create_task(dc, context=ctx)
        dc.task = task
        return task

    async def _guard(self, coro, what):
        try:
            return await coro
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        except BaseException as exc:  # noqa: BLE001 - fatal for the worker
            self.fatal(exc, what)

    def fatal(self, exc, what):
        """A callback raised: report it to the launcher, shut this worker down."""
        if self.failed is None:
            self.failed = exc
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            try:
                self.report(("error", self.worker_id, what, type(exc).__name__, str(exc), tb))
            except Exception:  # noqa: BLE001 - the launcher may be gone
                pass
        self.request_shutdown()

    def request_shutdown(self):
        if self._stop is not None and not self._stop.is_set():
            self._stop.set()

    def _arm_tick(self):
        # The loop wakes at least every tick_interval so on_tick runs.
        if self.stopping:
            return
        self._tick_timer = self.loop.call_later(self.config.tick_interval, self._arm_tick)

    def _on_control(self):
        try:
            data = os.read(self.control_fd, 256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            # The launcher is gone (or closed our pipe): stop.
            self.loop.remove_reader(self.control_fd)
            self.request_shutdown()
            return
        for b in data:
            if b == ord("s"):
                self.request_shutdown()
            elif b == ord("n"):
                on_notify = has_callback(self.handler, "on_notify")
                if on_notify is not None:
                    try:
                        r = on_notify(self.ctx)
                        if asyncio.iscoroutine(r):
                            self._spawn(self._guard(r, "on_notify"))
                    except BaseException as exc:  # noqa: BLE001
                        self.fatal(exc, "on_notify")

    # ---- accepting -----------------------------------------------------------------

    def _accept_on(self, ln):
        loop = self.loop
        sock = ln.sock
        family = sock.family
        tls = ln.tls
        rt = loop._ringline_runtime
        env = rt.env
        nodelay = self.config.tcp_nodelay and family in (socket.AF_INET, socket.AF_INET6)
        max_conns = self.config.max_connections
        conn_tasks = self.conn_tasks
        metrics = self.metrics
        serve = self._serve_conn
        direct = self.direct
        if direct and nodelay:
            # An accepted socket starts as a copy of the listener's (Linux's
            # sk_clone_lock copies TCP_NODELAY along): no setsockopt per
            # connection, which a slot could not take anyway.
            _set_nodelay(sock)

        def serve_conn(conn):
            # A set-up connection starts receiving, and its handler task runs.
            conn._start()
            task = self._task(serve(conn, tls))
            conn.task = task
            conn_tasks.add(task)
            task.add_done_callback(conn_tasks.discard)

        def on_accept_direct(slot):
            if len(conn_tasks) >= max_conns or self.stopping:
                metrics.add(_M_REJECTED)
                _close_direct(loop, slot)
                return
            conn = ConnCtx()
            conn._setup_direct(loop, slot, family, env)
            serve_conn(conn)

        def on_full():
            # The kernel accepted and closed a connection: no free slot.
            metrics.add(_M_REJECTED)
            metrics.add(_M_TABLE_FULL)
            if not self._full_logged:
                self._full_logged = True
                logger.warning("ringline worker %d: the direct-descriptor table is full "
                               "(Config.fixed_files=%d): connections are closed at accept "
                               "until slots free up (metric direct_table_full)",
                               self.worker_id, self.config.fixed_files)

        def start():
            if direct:
                return _serve_accept(loop, sock, on_accept_direct, on_error, True, on_full)
            return _serve_accept(loop, sock, on_accept, on_error)

        def on_accept(fd):
            if len(conn_tasks) >= max_conns or self.stopping:
                metrics.add(_M_REJECTED)
                os.close(fd)
                return
            s = socket.socket(family, socket.SOCK_STREAM, 0, fd)
            if nodelay:
                _set_nodelay(s)
            conn = ConnCtx()
            conn._setup(loop, s, env, False)
            serve_conn(conn)

        def on_error(exc):
            if self.stopping:
                return
            loop.call_exception_handler({
                "message": f"ringline worker {self.worker_id}: accept() failed",
                "exception": exc,
            })
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                def retry():
                    if not self.stopping:
                        i = self.accept_ops.index(op_box[0])
                        op_box[0] = start()
                        self.accept_ops[i] = op_box[0]
                loop.call_later(0.1, retry)

        # on_accept runs in a copy of this (the _main task's) context, so
        # every on_accept task copies it (_handler's docstring).
        op_box = [start()]
        return op_box[0]

    async def _serve_conn(self, conn, tls):
        try:
            if tls is not None:
                await _tls.handshake(conn, tls, server_side=True,
                                     timeout=self.config.tls_handshake_timeout)
            await self.handler.on_accept(conn)
        except asyncio.CancelledError:
            if not self.stopping:
                raise
        except (ConnectionError, ssl.SSLError, TimeoutError) as exc:
            # The peer went away (or failed the handshake): not a handler bug.
            if self.loop.get_debug():
                logger.debug("ringline worker %d: %r: %r", self.worker_id, conn, exc)
        except Exception as exc:  # noqa: BLE001 - reported, the worker goes on
            self.metrics.add(_M_HANDLER_ERRORS)
            self.loop.call_exception_handler({
                "message": f"ringline worker {self.worker_id}: on_accept() raised",
                "exception": exc,
                "connection": conn,
            })
        finally:
            conn.close()

    # ---- shutdown --------------------------------------------------------------------

    async def _shutdown(self):
        self.stopping = True
        loop = self.loop
        if self._tick_timer is not None:
            self._tick_timer.cancel()
        for op in self.accept_ops:
            op.stop()
        self.accept_ops = []
        loop._flush()
        for ln in self.listeners:
            if ln.kind != "udp":
                try:
                    ln.sock.close()
                except OSError:
                    pass
        pending = set(self.conn_tasks) | set(self.tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=self.config.shutdown_timeout)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=max(1.0, self.config.shutdown_timeout))
        for udp in self.udp:
            udp.close()
        if self.control_fd is not None:
            try:
                loop.remove_reader(self.control_fd)
            except (ValueError, OSError):
                pass
        # Let closes flush what they can in one more iteration.
        await asyncio.sleep(0)
