"""Builder, launch, and the handles the launcher keeps.

    shutdown, workers = (ringline.Builder(ringline.Config(workers=2))
                         .bind(("0.0.0.0", 8080))
                         .launch(Echo))
    shutdown.wait_on_signal()          # SIGINT/SIGTERM: graceful shutdown

Workers are processes (forked; threads where the interpreter is free-
threaded, or with Config.worker_mode="thread"), one per CPU by default, each
pinned to its core when Config.pin_to_core.  Connections are spread by the
kernel: every worker has its own listening socket per bind() address, all
bound to the same address with SO_REUSEPORT (the launcher binds them, so a
bad address fails launch() before any worker starts, and port 0 becomes
one port for all).  The alternative -- one acceptor handing fds to workers
-- costs an fd passing per connection and a hop through another loop;
SO_REUSEPORT spreads them in the kernel for nothing.  Unix listeners cannot
be SO_REUSEPORT: the workers share one and each accepts from it.

Each worker reports ready / error / exit on a status pipe; a monitor
thread records that on the worker's handle (and logs a worker that raised
or died), so no failure is lost.  launch() waits for every worker to be
ready and, if one fails or time runs out, stops the ones it started, closes
the sockets, and raises WorkerError.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import stat
import sys
import threading
import time
import weakref

from ._config import Config
from ._conn import split_addr
from ._metrics import MetricsArea, area_metrics, register, unregister
from ._worker import Listener, Worker

__all__ = ("Builder", "ShutdownHandle", "WorkerHandle", "WorkerError")

logger = logging.getLogger("ringline")


class WorkerError(RuntimeError):
    """A worker raised, died, or did not start.  ``traceback`` is the
    worker's formatted traceback when it raised."""

    def __init__(self, message, worker_id=None, traceback=None):
        super().__init__(message)
        self.worker_id = worker_id
        self.traceback = traceback


def _free_threaded() -> bool:
    check = getattr(sys, "_is_gil_enabled", None)
    return check is not None and not check()


# ---- handles ------------------------------------------------------------------

class WorkerHandle:
    """The launcher's view of one worker."""

    def __init__(self, worker_id, mode, cpu):
        self.worker_id = worker_id
        self.mode = mode                    # "process" or "thread"
        self.cpu = cpu                      # pinned CPU, or None
        self.pid = None
        self.exitcode = None
        self.error = None                   # WorkerError once it raised or died
        self._ready = threading.Event()
        self._started = False               # it reported ready (before any later error)
        self._exited = threading.Event()
        self._control_w = None              # pipe to the worker: b"s" stop, b"n" notify
        self._proc = None
        self._thread = None

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def is_alive(self) -> bool:
        return not self._exited.is_set()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the worker to end; True if it has."""
        return self._exited.wait(timeout)

    def notify(self) -> None:
        """Run the handler's on_notify(ctx) on this worker."""
        self._send(b"n")

    def stop(self) -> None:
        """Ask this worker to shut down gracefully (do not wait)."""
        self._send(b"s")

    def kill(self) -> None:
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _send(self, b: bytes) -> None:
        fd = self._control_w
        if fd is None or self._exited.is_set():
            return
        try:
            os.write(fd, b)
        except OSError:
            pass

    def _close_control(self):
        fd, self._control_w = self._control_w, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def __repr__(self):
        state = ("failed" if self.failed else "exited" if self._exited.is_set()
                 else "running" if self.ready else "starting")
        extra = f" pid={self.pid}" if self.pid else ""
        code = f" exitcode={self.exitcode}" if self.exitcode is not None else ""
        return f"<WorkerHandle {self.worker_id} {self.mode}{extra} {state}{code}>"


class _Monitor(threading.Thread):
    """Reads the workers' status pipes and process sentinels."""

    def __init__(self, handles, readers):
        super().__init__(name="ringline-monitor", daemon=True)
        self.handles = handles
        self.readers = dict(readers)         # Connection -> handle

    def run(self):
        sentinels = {}
        for h in self.handles:
            if h._proc is not None:
                sentinels[h._proc.sentinel] = h
        while self.readers or sentinels:
            try:
                ready = multiprocessing.connection.wait(list(self.readers) + list(sentinels))
            except OSError:
                break
            for r in ready:
                if r in self.readers:
                    h = self.readers[r]
                    try:
                        msg = r.recv()
                    except (EOFError, OSError):
                        del self.readers[r]
                        r.close()
                        if h._proc is None:
                            self._exited(h, h.exitcode if h.exitcode is not None else 1)
                        continue
                    self._message(h, msg)
                else:
                    h = sentinels.pop(r)
                    h._proc.join()
                    # Drain what the worker said before it ended.
                    for conn, hh in list(self.readers.items()):
                        if hh is h:
                            try:
                                while conn.poll():
                                    self._message(h, conn.recv())
                            except (EOFError, OSError):
                                pass
                            del self.readers[conn]
                            conn.close()
                    self._exited(h, h._proc.exitcode)

    def _message(self, h, msg):
        kind = msg[0]
        if kind == "ready":
            h.pid = msg[2]
            h._started = True
            h._ready.set()
        elif kind == "error":
            _, wid, what, tname, text, tb = msg
            h.error = WorkerError(f"ringline worker {wid}: {what} raised {tname}: {text}",
                                  wid, tb)
            logger.error("ringline worker %d: %s raised %s: %s\n%s", wid, what, tname, text, tb)
        elif kind == "exit":
            h.exitcode = msg[2]

    def _exited(self, h, code):
        h.exitcode = code
        if code != 0 and h.error is None:
            how = (f"was killed by signal {-code}" if code is not None and code < 0
                   else f"exited with status {code}")
            h.error = WorkerError(f"ringline worker {h.worker_id} {how}", h.worker_id)
            logger.error("ringline worker %d %s", h.worker_id, how)
        h._close_control()
        h._ready.set()
        h._exited.set()


_live: "weakref.WeakSet[ShutdownHandle]" = weakref.WeakSet()


@atexit.register
def _shutdown_all():
    for h in list(_live):
        try:
            h.shutdown()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass


class ShutdownHandle:
    """Stops the workers of one launch; shuts them down when dropped or when
    the program exits."""

    def __init__(self, handles, config, addresses, unix_paths, area):
        self.workers = handles
        self.config = config
        #: [("tcp", (host, port)), ("unix", path), ("udp", (host, port)), ...]
        self.addresses = addresses
        self._unix_paths = unix_paths
        self._area = area
        self._done = False
        self._lock = threading.Lock()
        _live.add(self)

    def address(self, kind="tcp"):
        """The first bound address of that kind (handy with port 0)."""
        for k, a in self.addresses:
            if k == kind:
                return a
        return None

    def notify(self, worker_id=None) -> None:
        """Run on_notify on one worker, or on every worker."""
        for h in self.workers:
            if worker_id is None or h.worker_id == worker_id:
                h.notify()

    @property
    def errors(self) -> list:
        return [h.error for h in self.workers if h.error is not None]

    def join(self, timeout: float | None = None) -> bool:
        """Wait until every worker has ended; True if they have."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for h in self.workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not h.join(left):
                return False
        return True

    def is_running(self) -> bool:
        return any(h.is_alive() for h in self.workers)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Graceful: every worker stops accepting, lets its handlers finish
        (up to Config.shutdown_timeout), closes.  Waits up to ``timeout``
        (default: shutdown_timeout + 5 s), then kills what is left.  True if
        every worker ended by itself."""
        with self._lock:
            if self._done:
                return self.join(0)
            self._done = True
        for h in self.workers:
            h.stop()
        if timeout is None:
            timeout = self.config.shutdown_timeout + 5.0
        clean = self.join(timeout)
        if not clean:
            for h in self.workers:
                if h.is_alive():
                    logger.warning("ringline worker %d did not stop in %.1fs: killing it",
                                   h.worker_id, timeout)
                    h.kill()
            self.join(2.0)
        for h in self.workers:
            h._close_control()
        for path in self._unix_paths:
            _unlink_socket(path)
        unregister(self._area)
        return clean

    def metrics(self) -> dict:
        """This launch's counters (ringline.metrics() format), also after
        shutdown."""
        return area_metrics(self._area)

    def wait_on_signal(self, signals=(signal.SIGINT, signal.SIGTERM), shutdown: bool = True,
                       ready=None):
        """Block until one of ``signals`` arrives (main thread only), then
        shut down (unless shutdown=False); returns the signal
        (signal.Signals), or None if every worker ended first.  ``ready``,
        if given, is called once the handlers are installed (announce the
        server there: a signal sent after it is never the default action)."""
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("wait_on_signal() must be called from the main thread")
        got = []
        event = threading.Event()

        def handler(signum, frame):
            got.append(signum)
            event.set()

        old = {}
        try:
            for s in signals:
                old[s] = signal.signal(s, handler)
            if ready is not None:
                ready()
            while not event.is_set():
                if not self.is_running():
                    break
                event.wait(0.2)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        if shutdown:
            self.shutdown()
        return signal.Signals(got[0]) if got else None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __del__(self):
        try:
            if not self._done:
                self.shutdown()
        except Exception:  # noqa: BLE001 - interpreter teardown
            pass

    def __repr__(self):
        return f"<ShutdownHandle workers={len(self.workers)} addresses={self.addresses!r}>"


def _unlink_socket(path):
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except OSError:
        pass


# ---- the builder -------------------------------------------------------------------

class Builder:
    """``Builder(config).bind(addr).bind_unix(path).bind_udp(addr).launch(Handler)``."""

    def __init__(self, config: Config | None = None):
        self.config = config if config is not None else Config()
        self._binds = []            # ("tcp", (host, port), tls) | ("unix", path, tls) | ("udp", (host, port), None)

    def bind(self, addr, *, tls=None) -> "Builder":
        """Listen on a TCP address ((host, port) or "host:port").  ``tls``:
        None = Config.tls, False = plain, or a server SSLContext."""
        self._binds.append(("tcp", split_addr(addr), tls))
        return self

    def bind_unix(self, path, *, tls=False) -> "Builder":
        self._binds.append(("unix", os.fspath(path), tls))
        return self

    def bind_udp(self, addr) -> "Builder":
        self._binds.append(("udp", split_addr(addr), None))
        return self

    # ---- launch ------------------------------------------------------------------

    def launch(self, handler_cls):
        """Start the workers; returns (ShutdownHandle, [WorkerHandle, ...])."""
        cfg = self.config
        cfg.validate()
        if not callable(getattr(handler_cls, "create_for_worker", None)) and not callable(handler_cls):
            raise TypeError("launch() needs a handler class")
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        n = cfg.workers or len(cpus) or os.cpu_count() or 1
        mode = cfg.worker_mode
        if mode == "auto":
            mode = "thread" if _free_threaded() else "process"
        area = MetricsArea(n)
        socks = []                  # every socket the launcher opened
        per_worker = [[] for _ in range(n)]
        addresses = []
        unix_paths = []
        handles = []
        readers = {}
        parent_fds = []             # fds a forked worker must close
        ok = False
        try:
            self._open_listeners(cfg, n, socks, per_worker, addresses, unix_paths)
            for i in range(n):
                cpu = cpus[(cfg.core_offset + i) % len(cpus)] if (cfg.pin_to_core and cpus) else None
                h = WorkerHandle(i, mode, cpu)
                handles.append(h)
                r, w = multiprocessing.Pipe(duplex=False)
                cr, cw = os.pipe()
                os.set_inheritable(cr, False)
                h._control_w = cw
                readers[r] = h
                if mode == "process":
                    self._start_process(h, cfg, handler_cls, per_worker[i], socks, cr, w,
                                        area, parent_fds + [r.fileno(), cw])
                    w.close()
                    os.close(cr)
                    parent_fds += [r.fileno(), cw]
                else:
                    self._start_thread(h, cfg, handler_cls, per_worker[i], cr, w, area)
            _Monitor(handles, readers).start()
            deadline = time.monotonic() + cfg.startup_timeout
            for h in handles:
                if not h._ready.wait(max(0.0, deadline - time.monotonic())):
                    raise WorkerError(
                        f"ringline worker {h.worker_id} was not ready within "
                        f"Config.startup_timeout={cfg.startup_timeout}s", h.worker_id)
                # Only a failure before "ready" fails the launch; one after
                # it (on_start raising later) is the running worker's, and
                # the monitor may have read both before this thread woke.
                if h.error is not None and not h._started:
                    raise h.error
            ok = True
        finally:
            if not ok:
                self._abort_launch(handles, socks, unix_paths, mode)
        if mode == "process":
            # The workers have their own copies now.
            for s in socks:
                s.close()
        register(area)
        sh = ShutdownHandle(handles, cfg, addresses, unix_paths, area)
        return sh, list(handles)

    @staticmethod
    def _abort_launch(handles, socks, unix_paths, mode):
        for h in handles:
            h.stop()
        deadline = time.monotonic() + 5.0
        for h in handles:
            if h._proc is None and h._thread is None:
                continue
            if not h._exited.wait(max(0.0, deadline - time.monotonic())):
                h.kill()
                h._exited.wait(2.0)
        for h in handles:
            h._close_control()
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        for p in unix_paths:
            _unlink_socket(p)

    def _open_listeners(self, cfg, n, socks, per_worker, addresses, unix_paths):
        for kind, addr, tls in self._binds:
            if kind == "unix":
                path = addr
                _unlink_socket(path)
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                socks.append(s)
                s.bind(path)
                unix_paths.append(path)
                s.listen(cfg.backlog)
                s.setblocking(False)
                ctx = _tls_for(cfg, tls, default=None)
                for i in range(n):
                    per_worker[i].append(Listener(s, ctx, "unix", path))
                addresses.append(("unix", path))
                continue
            host, port = addr
            infos = socket.getaddrinfo(host or None, port,
                                       type=socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
            fam, stype, proto, _, sa = infos[0]
            bound = None
            ctx = _tls_for(cfg, tls, default=cfg.tls) if kind == "tcp" else None
            for i in range(n):
                s = socket.socket(fam, stype, proto)
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                if fam == socket.AF_INET6:
                    try:
                        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                    except OSError:
                        pass
                s.bind(sa if bound is None else bound)
                if bound is None:
                    bound = s.getsockname()
                if kind == "tcp":
                    s.listen(cfg.backlog)
                s.setblocking(False)
                per_worker[i].append(Listener(s, ctx, kind, bound[:2]))
            addresses.append((kind, bound[:2]))

    # ---- starting workers ---------------------------------------------------------------

    def _start_process(self, h, cfg, handler_cls, listeners, all_socks, control_r, status_w,
                       area, parent_fds):
        own = {id(ln.sock) for ln in listeners}
        others = [s for s in all_socks if id(s) not in own]
        ctx = multiprocessing.get_context("fork")
        proc = ctx.Process(
            target=_process_main,
            args=(h.worker_id, h.cpu, cfg, handler_cls, listeners, others, control_r,
                  status_w, area, parent_fds),
            name=f"ringline-worker-{h.worker_id}")
        h._proc = proc
        proc.start()
        h.pid = proc.pid

    def _start_thread(self, h, cfg, handler_cls, listeners, control_r, status_w, area):
        def main():
            code = 1
            try:
                unpinned = _affinity()
                if h.cpu is not None:
                    _pin(h.cpu)
                w = Worker(h.worker_id, cfg, handler_cls, listeners, control_r,
                           status_w.send, area.block(h.worker_id), in_process=False,
                           unpinned=unpinned)
                code = w.run()
            except BaseException as exc:  # noqa: BLE001 - reported
                import traceback
                try:
                    status_w.send(("error", h.worker_id, "worker", type(exc).__name__, str(exc),
                                   traceback.format_exc()))
                except Exception:  # noqa: BLE001
                    pass
            finally:
                h.exitcode = code
                try:
                    status_w.send(("exit", h.worker_id, code))
                except Exception:  # noqa: BLE001
                    pass
                status_w.close()
                try:
                    os.close(control_r)
                except OSError:
                    pass
                for ln in listeners:
                    if ln.kind != "unix":
                        try:
                            ln.sock.close()
                        except OSError:
                            pass
        t = threading.Thread(target=main, name=f"ringline-worker-{h.worker_id}", daemon=True)
        h._thread = t
        t.start()


def _tls_for(cfg, tls, default):
    if tls is None:
        return default
    if tls is False:
        return None
    if tls is True:
        if cfg.tls is None:
            raise ValueError("bind(tls=True) needs Config.tls")
        return cfg.tls
    return tls


def _pin(cpu):
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass


def _affinity():
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return None


def _process_main(worker_id, cpu, cfg, handler_cls, listeners, other_socks, control_r,
                  status_w, area, parent_fds):
    # In the forked worker: drop what belongs to the launcher and the others.
    for s in other_socks:
        try:
            s.close()
        except OSError:
            pass
    for fd in parent_fds:
        try:
            os.close(fd)
        except OSError:
            pass
    # launch() may have been called from a running loop: that loop is the
    # parent's, not ours to run or touch here.
    from .. import _compat
    _compat.set_running_loop(None)
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # the launcher handles Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    unpinned = _affinity()
    if cpu is not None:
        _pin(cpu)
    code = 1
    try:
        w = Worker(worker_id, cfg, handler_cls, listeners, control_r, status_w.send,
                   area.block(worker_id), in_process=True, unpinned=unpinned)
        code = w.run()
    finally:
        try:
            status_w.send(("exit", worker_id, code))
        except Exception:  # noqa: BLE001
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
