"""Subprocesses: created off the loop thread, exit awaited in the ring.

A small pool of spawner threads (started on demand, gone when idle) creates
the children, so the loop thread never forks, execs or waits:

* posix_spawnp (glibc: clone(CLONE_VM|CLONE_VFORK) + exec, no page table
  copy) for everything it can express: stdin/stdout/stderr (PIPE, DEVNULL,
  STDOUT, fds, file objects) as dup2 file actions, ``env``, ``executable``,
  ``start_new_session`` (setsid), ``process_group`` (setpgroup),
  ``restore_signals`` (SIGPIPE/SIGXFSZ back to SIG_DFL, as Popen does),
  ``close_fds`` and ``pipesize``.  libc's posix_spawnp is called through
  ctypes (_spawn.py), which releases the GIL for the call --
  ``os.posix_spawnp`` holds it until the child has exec'd, stalling the
  loop thread -- with close_fds as ``addclosefrom_np(3)``.  Without glibc
  2.34+ it is ``os.posix_spawnp`` with close actions for the inheritable
  fds above 2 (Python's own fds are non-inheritable, PEP 446).
* ``subprocess.Popen`` (fork/exec, still on the spawner thread) for what
  posix_spawn cannot say: ``cwd``, ``preexec_fn``, ``pass_fds``, ``user``,
  ``group``, ``extra_groups``, ``umask``, text mode, Windows-only options --
  and whenever ``subprocess.Popen`` has been patched (as asyncio would call
  the patched one).

Each child then gets a pidfd (pidfd_open(2), Linux 5.3+).  If pidfd_open
fails the child is killed and reaped there and the error raised, so no child
is ever left without a watcher -- except that a child already reaped by a
reaper of all children (os.wait(), a waitpid(-1) reaper) before its pidfd
could be opened is reported with returncode 255, as asyncio's child watchers
report a status taken behind their back.  The result comes back to the loop
through a concurrent future (queue + loop wakeup).  On io_uring with
IORING_OP_WAITID (6.7; ``core.set_waitid(False)`` turns it off) the ring
waits for the exit and reaps the child itself (_core/loop/waitid.pxi): one
SQE, no waitid syscall.  Elsewhere the loop polls the pidfd (POLL_ADD on
io_uring, epoll on the poll backend: a pidfd turns readable when the process
exits) and reaps with waitid(P_PIDFD).  No SIGCHLD handler: loops in several
threads can spawn at once.

asyncio's child watchers (Python 3.11-3.13; deprecated in 3.12, gone in
3.14): when the program has installed one on the event loop policy
(``asyncio.set_child_watcher()``, or a ``get_child_watcher()`` call, which
creates one), the loop's subprocess transports use it exactly as asyncio's
unix loop does (:func:`spawn_watched`): ``with watcher``, ``is_active()``
checked before anything is spawned (RuntimeError),
``add_child_handler(pid, loop._child_watcher_callback, transport)``, and the
exit status delivered by the watcher's callback (``call_soon_threadsafe``).
Such a child is left to the watcher (no pidfd reaper; ``poll()``, which the
transport's ``close()`` calls, only looks, with WNOWAIT; only the Popen-like
``wait()`` reaps, as Popen.wait() does), so the watcher -- FastChildWatcher's
waitpid(-1) included -- reports the real status; the child still gets a
pidfd, for signals.  ringline never creates a watcher
(``_compat.installed_child_watcher()`` reads the policy's): without one --
the normal case, and always on 3.14 -- the pidfd path above.
``ringline.process`` always takes the pidfd path.

Reaping is race-free: every reap of a child that no asyncio child watcher
owns goes through :meth:`Process._reap` under the process's lock, which
records the real exit status once; the pidfd watcher, ``poll()`` (called by
the transport's ``close()``) and ``wait()`` all report that recorded status,
whoever reaped first.  While a ring's WAITID may reap the child
(``Process._ring``), a waitid(2) of ours that finds the child gone (ECHILD)
means "the ring has it": ``_reap`` returns None (``wait()`` keeps waiting)
until the ring's result -- kept on its op, readable from any thread, even
after the loop closed -- is recorded; only a ring that also saw ECHILD
(os.wait() behind our back) makes it 255.  Signals go through the pidfd,
and never to a child that has been reaped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import fcntl
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import warnings
from .. import _compat
from .._compat import logger

from . import _spawn

__all__ = ("Process", "SubprocessTransport", "spawn", "watch_exit")

_POLLIN = 0x001

# A spawner thread is mostly blocked while its child gets to exec (glibc's
# posix_spawn is a vfork), without the GIL and without using a CPU; twice
# the CPUs keeps the CPUs busy when many children are started at once.
SPAWNER_THREADS = max(2, min(8, 2 * (os.cpu_count() or 1)))
#: Seconds a spawner thread waits for work before it exits.
SPAWNER_IDLE = 0.05

#: False sends every spawn through subprocess.Popen (benchmarks, debugging).
USE_POSIX_SPAWN = hasattr(os, "posix_spawnp") and sys.platform.startswith("linux")


class _SpawnerPool:
    """Threads started on demand, up to SPAWNER_THREADS (read at each
    submit), that exit after SPAWNER_IDLE seconds without work: a program
    that spawned once does not keep threads around (CPython's test support,
    for one, counts them as leaked)."""

    def __init__(self):
        self._queue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._serial = 0

    def submit(self, fn, *args) -> concurrent.futures.Future:
        fut = concurrent.futures.Future()
        self._queue.put((fut, fn, args))
        with self._lock:
            if self._queue.qsize() > self._idle and self._threads < max(1, SPAWNER_THREADS):
                self._threads += 1
                self._serial += 1
                threading.Thread(target=self._work, daemon=True,
                                 name=f"ringline-spawner_{self._serial}").start()
        return fut

    def _work(self):
        q = self._queue
        while True:
            with self._lock:
                self._idle += 1
            try:
                item = q.get(timeout=SPAWNER_IDLE)
            except queue.Empty:
                with self._lock:
                    self._idle -= 1
                    if q.qsize():
                        continue          # raced with a submit that counted on us
                    self._threads -= 1
                    return
            with self._lock:
                self._idle -= 1
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            del fut, fn, args, item


_pool: _SpawnerPool | None = None
_pool_lock = threading.Lock()


def _spawner_pool() -> _SpawnerPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = _SpawnerPool()
        return _pool


_HAVE_PIDFD_WAIT = hasattr(os, "P_PIDFD")

# Options posix_spawn expresses.
_SPAWN_OPTIONS = frozenset({
    "env", "executable", "close_fds", "restore_signals", "start_new_session",
    "process_group", "pipesize",
})
# Popen options that are no-ops at these values; any other value (or any
# other option) takes the Popen path, which also validates it.
_NEUTRAL = {
    "cwd": (None,), "preexec_fn": (None,), "pass_fds": ((), []), "user": (None,),
    "group": (None,), "extra_groups": (None,), "umask": (-1,), "startupinfo": (None,),
    "creationflags": (0,), "universal_newlines": (None, False), "text": (None, False),
    "encoding": (None,), "errors": (None,),
}
_RESTORE_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
                         if hasattr(signal, name))
_DEFAULT_SHELL = "/system/bin/sh" if hasattr(sys, "getandroidapilevel") else "/bin/sh"


def _after_fork_in_child() -> None:
    # The pool's threads do not exist in a forked child; neither are the
    # parent's children ours to reap.
    global _pool, _pool_lock, _orphans_lock
    _pool = None
    _pool_lock = threading.Lock()
    _orphans_lock = threading.Lock()
    _orphans.clear()


# ---------------------------------------------------------------------------
# The Popen-like process object
# ---------------------------------------------------------------------------

# Processes dropped while still running (their loop closed, say): reaped
# opportunistically on the next spawn, as subprocess._active is.
_orphans: list = []
_orphans_lock = threading.Lock()


def _reap_orphans() -> None:
    if not _orphans:
        return
    with _orphans_lock:
        keep = []
        for proc in _orphans:
            if proc._reap() is None:
                keep.append(proc)
            else:
                proc._close_pidfd()
        _orphans[:] = keep


def _status_from_waitid(res) -> int:
    if res.si_code == os.CLD_EXITED:
        return res.si_status
    return -res.si_status          # CLD_KILLED / CLD_DUMPED: the signal


class Process:
    """What the spawner pool hands back: a Popen-like view of one child.

    ``pid``, ``args``, ``stdin``/``stdout``/``stderr`` (binary file objects
    for the PIPE streams, opened as Popen opens them, else None),
    ``returncode``, ``poll()``, ``wait()``, ``send_signal()``,
    ``terminate()``, ``kill()`` -- what asyncio's subprocess transport uses
    (it is the transport's ``get_extra_info('subprocess')``).  ``pidfd`` is
    the child's pidfd; it stays open until the exit watcher is done with it.

    A child an asyncio child watcher reaps (``_watched``) is left to it:
    ``poll()`` (the transport's ``close()`` calls it) only looks, with
    WNOWAIT, and the status the watcher reports is recorded when it reaches
    the transport; only ``wait()`` reaps it, as Popen.wait() would.  If the
    watcher has reaped the child before its report arrived, ``returncode``
    is 255 until the report replaces it (``_provisional``) -- Popen's
    poll() gives a status then too (0), not None -- and nothing is
    signalled any more.
    """

    def __init__(self, args, pid, pidfd, stdin=None, stdout=None, stderr=None):
        self.args = args
        self.pid = pid
        self.pidfd = pidfd
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.returncode = None
        self._watched = False
        self._provisional = False
        self._ring = None       # the WaitidOp that may reap the child (watch_exit)
        self._lock = threading.Lock()

    def __repr__(self):
        state = "running" if self.returncode is None else f"returncode={self.returncode}"
        return f"<{type(self).__name__} pid={self.pid} {state}>"

    # ---- reaping ---------------------------------------------------------

    def _reap(self, reap_watched=False):
        """The exit status if the child has exited (reaping it now if no
        one has yet), else None.  Never blocks.  A watched child is left
        for its watcher to reap (WNOWAIT) unless ``reap_watched``."""
        with self._lock:
            if self._ring is not None:
                self._settle_ring()
            if self.returncode is not None:
                return self.returncode
            flags = os.WEXITED | os.WNOHANG
            if self._watched and not reap_watched:
                flags |= os.WNOWAIT
            try:
                if self.pidfd >= 0 and _HAVE_PIDFD_WAIT:
                    res = os.waitid(os.P_PIDFD, self.pidfd, flags)
                else:
                    res = os.waitid(os.P_PID, self.pid, flags)
            except ChildProcessError:
                if self._ring is not None:
                    # The ring reaped it (or os.wait() did: the ring then
                    # gets ECHILD too); its completion tells which.
                    return None
                # Reaped behind our back (os.wait() in user code): the
                # status is lost; asyncio's child watchers report 255.  A
                # watched child: its watcher reaped it and will report the
                # real status (_exited).
                self.returncode = 255
                self._provisional = self._watched
                return 255
            if res is None:
                return None
            self.returncode = _status_from_waitid(res)
            return self.returncode

    def _settle_ring(self):
        # Under self._lock: take the ring's result if it has one.
        out = self._ring.outcome()
        if out is None:
            return
        self._ring = None
        res, code, status = out
        if self.returncode is not None:
            return              # reaped here first (the ring got ECHILD)
        if res == 0:
            self.returncode = status if code == os.CLD_EXITED else -status
        elif res == -errno.ECHILD:
            self.returncode = 255   # os.wait() behind our back, as asyncio reports
        # Else (ECANCELED: the loop closed) the ring did not reap it: we do.

    def _exited(self, returncode):
        """The transport learnt the exit status (from the pidfd watcher or
        an asyncio child watcher): record it, close the pidfd."""
        with self._lock:
            if self.returncode is None or self._provisional:
                self.returncode = returncode
                self._provisional = False
        self._close_pidfd()

    def poll(self):
        """Popen.poll(): the return code, or None while the child runs."""
        return self._reap()

    def wait(self, timeout=None):
        """Popen.wait(): block until the child exits (this thread, not the
        loop's); subprocess.TimeoutExpired after ``timeout`` seconds.  It
        reaps the child, as Popen.wait() does, even one an asyncio child
        watcher watches (which then reports 255, as on asyncio's loop)."""
        if self.returncode is not None:
            return self.returncode
        if timeout is None:
            # Wait for the exit without reaping (WNOWAIT) on a pidfd of our
            # own, then reap through _reap() so the status is recorded once.
            fd = -1
            with self._lock:
                if self.returncode is None and self.pidfd >= 0 and _HAVE_PIDFD_WAIT:
                    fd = os.dup(self.pidfd)
            try:
                if fd >= 0:
                    try:
                        os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOWAIT)
                    except ChildProcessError:
                        pass
            finally:
                if fd >= 0:
                    os.close(fd)
            delay = 0.0005
            while (rc := self._reap(True)) is None:     # pidfd-less fallback, or the ring's
                self._ring_here()
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
            return rc
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while (rc := self._reap(True)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._ring_here()
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.05)
        return rc

    def _ring_here(self):
        # wait() on the loop's own thread: the ring's result may be a CQE
        # only this thread can process (WaitidOp.reap_here).
        op = self._ring
        if op is not None:
            op.reap_here()

    def _close_pidfd(self):
        with self._lock:
            fd, self.pidfd = self.pidfd, -1
        if fd >= 0:
            os.close(fd)

    # ---- signals -----------------------------------------------------------

    def send_signal(self, sig):
        """Send ``sig`` through the pidfd; nothing once the child is reaped
        (its pid may belong to another process by then)."""
        with self._lock:
            if self.returncode is not None:
                return
            try:
                if self.pidfd >= 0:
                    signal.pidfd_send_signal(self.pidfd, sig)
                else:
                    os.kill(self.pid, sig)   # unreaped: the pid is still ours
            except ProcessLookupError:
                pass                         # exited, not yet reaped

    def terminate(self):
        self.send_signal(signal.SIGTERM)

    def kill(self):
        self.send_signal(signal.SIGKILL)

    def __del__(self):
        if getattr(self, "pidfd", -1) < 0:
            return
        try:
            if self._watched:
                self._close_pidfd()  # its watcher reaps it
                return
            if self.returncode is None and self._reap() is None:
                # Still running and nobody will watch it: reap it later.
                with _orphans_lock:
                    _orphans.append(self)
                return
            self._close_pidfd()
        except Exception:     # interpreter shutdown
            pass


# ---------------------------------------------------------------------------
# Spawning (on the spawner threads)
# ---------------------------------------------------------------------------

_Popen = subprocess.Popen


def _posix_spawnable(kwargs) -> bool:
    if not USE_POSIX_SPAWN:
        return False
    if subprocess.Popen is not _Popen:
        # subprocess.Popen is patched (a mock in a test, a wrapper): asyncio
        # would call the patched one, so do the same.
        return False
    for key, value in kwargs.items():
        if key in _SPAWN_OPTIONS:
            continue
        if key not in _NEUTRAL:
            return False
        if key == "pass_fds" and not value:
            continue
        if any(value is v or (type(value) is type(v) and value == v)
               for v in _NEUTRAL[key]):
            continue
        return False
    if kwargs.get("start_new_session") and kwargs.get("process_group") not in (None, -1):
        return False     # Popen's order of setsid/setpgid; let Popen do (or refuse) it
    return True


def _argv(args, shell, executable):
    """(argv list, program to exec) exactly as Popen._execute_child builds them."""
    if isinstance(args, (str, bytes)):
        args = [args]
    elif isinstance(args, os.PathLike):
        if shell:
            raise TypeError("path-like args is not allowed when shell is true")
        args = [args]
    else:
        args = list(args)
    if shell:
        args = [_DEFAULT_SHELL, "-c"] + args
        if executable:
            args[0] = executable
    if executable is None:
        executable = args[0]
    return args, executable


def _resolve(executable, env):
    """posix_spawnp searches the parent's PATH; Popen searches the child's.
    When they differ, search the child's here (as os._execvpe does)."""
    exe = os.fsdecode(executable)
    for directory in os.get_exec_path(env):
        candidate = os.path.join(directory, exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)


def _inheritable_fds():
    """The inheritable fds above 2 (close_fds=True closes them in the child)."""
    fds = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return fds
    for name in names:
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass          # the listdir's own fd, or closed meanwhile
    return fds


def _child_fd(value, *, reading, stdout_fd, opened, pipes):
    """(fd the child gets, the parent's end of a new pipe or -1) for one std
    stream; ``reading`` is True for stdin (the child reads)."""
    if value is None:
        return -1, -1
    if value == subprocess.PIPE:
        r, w = os.pipe2(os.O_CLOEXEC)
        opened += (r, w)
        pipes.append(r if reading else w)    # the end the child gets
        return (r, w) if reading else (w, r)
    if value == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        opened.append(fd)
        return fd, -1
    if stdout_fd is not None and value == subprocess.STDOUT:
        if stdout_fd != -1:
            return stdout_fd, -1
        return (sys.__stdout__.fileno() if sys.__stdout__ is not None else 1), -1
    if isinstance(value, int):
        return value, -1
    return value.fileno(), -1


def _open_pipes(p2cwrite, c2pread, errread, bufsize):
    if bufsize is None:
        bufsize = -1
    if bufsize == 1:
        warnings.warn("line buffering (buffering=1) isn't supported in binary mode, "
                      "the default buffer size will be used", RuntimeWarning)
        bufsize = -1
    stdin = io.open(p2cwrite, "wb", bufsize) if p2cwrite != -1 else None
    stdout = io.open(c2pread, "rb", bufsize) if c2pread != -1 else None
    stderr = io.open(errread, "rb", bufsize) if errread != -1 else None
    return stdin, stdout, stderr


def _open_pidfd(pid):
    """A pidfd for our new child ``pid``, or -1 if it has already been
    reaped by someone else.

    Between the spawn (on a spawner thread) and pidfd_open, a reaper of
    every child (os.wait(), waitpid(-1) -- asyncio's FastChildWatcher does
    that on SIGCHLD) may take the child; its pid may then even name another
    process.  So ESRCH means "exited, status lost" (never kill by pid then),
    and the pidfd is checked to be a child of ours (waitid on a pidfd that
    is not our child gives ECHILD).  Any other failure (EMFILE, ENOSYS):
    the child is killed and reaped and the error raised."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return -1
    except OSError:
        _kill_and_reap(pid)
        raise
    if _HAVE_PIDFD_WAIT:
        try:
            os.waitid(os.P_PIDFD, pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            os.close(pidfd)
            return -1
        except OSError:
            pass              # P_PIDFD unsupported (Linux 5.3): no check
    return pidfd


def _new_process(args, pid, pidfd, files):
    return Process(args, pid, pidfd, *files)


def _kill_and_reap(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _posix_spawn(args, shell, stdin, stdout, stderr, bufsize, kwargs):
    executable = kwargs.get("executable")
    argv, executable = _argv(args, shell, executable)
    env = kwargs.get("env")
    search = not os.path.dirname(executable)
    if search and env is not None and os.get_exec_path(env) != os.get_exec_path():
        # posix_spawnp searches our PATH; Popen searches the child's.
        executable = _resolve(executable, env)
        search = False
    pipesize = kwargs.get("pipesize", -1)
    if pipesize is None:
        pipesize = -1
    close_fds = kwargs.get("close_fds", True)
    pgroup = kwargs.get("process_group")
    if pgroup is not None and pgroup < 0:
        pgroup = None

    opened = []          # fds made here; the child ends are closed after the spawn
    try:
        pipes = []
        p2cread, p2cwrite = _child_fd(stdin, reading=True, stdout_fd=None,
                                      opened=opened, pipes=pipes)
        c2pwrite, c2pread = _child_fd(stdout, reading=False, stdout_fd=None,
                                      opened=opened, pipes=pipes)
        errwrite, errread = _child_fd(stderr, reading=False, stdout_fd=c2pwrite,
                                      opened=opened, pipes=pipes)
        if pipesize > 0:
            for fd in pipes:
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, pipesize)

        dup2s = []
        for target, src in enumerate((p2cread, c2pwrite, errwrite)):
            if src == -1:
                continue
            if src < 3 and src != target:
                # An earlier dup2 may overwrite a low source fd: use a copy
                # above 2 (close-on-exec, so it does not reach the child).
                src = fcntl.fcntl(src, fcntl.F_DUPFD_CLOEXEC, 3)
                opened.append(src)
            # dup2(fd, fd) clears close-on-exec (glibc >= 2.29), as Popen's
            # child does with set_inheritable for a stream that is its own fd.
            dup2s.append((src, target))

        if _spawn.AVAILABLE:
            # libc's posix_spawnp, GIL released; close_fds = closefrom(3)
            # after the dup2s, as Popen closes every fd above 2.
            pid = _spawn.spawn(executable, argv, env, search=search, dup2s=dup2s,
                               closefrom=3 if close_fds else -1,
                               setsid=bool(kwargs.get("start_new_session")),
                               pgroup=pgroup,
                               restore_signals=kwargs.get("restore_signals", True))
        else:
            # os.posix_spawnp (holds the GIL while the child execs).
            actions = [(os.POSIX_SPAWN_DUP2, src, target) for src, target in dup2s]
            if close_fds:
                # After the dup2s: sources above 2 are closed too.
                actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
            attrs = {}
            if actions:
                attrs["file_actions"] = actions
            if kwargs.get("restore_signals", True):
                attrs["setsigdef"] = _RESTORE_SIGNALS
            if kwargs.get("start_new_session"):
                attrs["setsid"] = True
            if pgroup is not None:
                attrs["setpgroup"] = pgroup
            spawn = os.posix_spawnp if search else os.posix_spawn
            pid = spawn(executable, argv, os.environ if env is None else env, **attrs)
        pidfd = _open_pidfd(pid)

        parent_ends = {p2cwrite, c2pread, errread}
        for fd in opened:
            if fd not in parent_ends:
                os.close(fd)
        opened = [fd for fd in opened if fd in parent_ends]
        try:
            files = _open_pipes(p2cwrite, c2pread, errread, bufsize)
        except BaseException:
            if pidfd >= 0:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
                os.close(pidfd)
            raise
        opened = []
        return _new_process(args, pid, pidfd, files)
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass


def _popen_spawn(args, shell, stdin, stdout, stderr, bufsize, kwargs):
    proc = subprocess.Popen(args, shell=shell, stdin=stdin, stdout=stdout,
                            stderr=stderr, bufsize=bufsize, **kwargs)
    # From here on the child is ours alone: Popen must not reap it (its
    # __del__ would queue it for subprocess._cleanup(), racing our watcher).
    _compat.popen_disown(proc)
    files = (proc.stdin, proc.stdout, proc.stderr)
    try:
        pidfd = _open_pidfd(proc.pid)
    except OSError:
        for f in files:
            if f is not None:
                f.close()
        raise
    return _new_process(proc.args, proc.pid, pidfd, files)


def _spawn_blocking(args, shell, stdin, stdout, stderr, bufsize, kwargs, watched=False):
    """(Process, pidfd).  ``watched``: an asyncio child watcher will reap
    the child (spawn_watched)."""
    _reap_orphans()
    if _posix_spawnable(kwargs):
        proc = _posix_spawn(args, shell, stdin, stdout, stderr, bufsize, kwargs)
    else:
        proc = _popen_spawn(args, shell, stdin, stdout, stderr, bufsize, kwargs)
    proc._watched = watched
    if proc.pidfd < 0:
        # Reaped before its pidfd was opened.  As asyncio's child watchers
        # report a status reaped behind their back: 255.  A watched child
        # was reaped by its watcher (a FastChildWatcher), which reports the
        # real status.
        proc.returncode = 255
        proc._provisional = watched
        if not watched:
            logger.warning("child process pid %d was reaped by someone else (os.wait() or "
                           "a waitpid(-1) child watcher); will report returncode 255",
                           proc.pid)
    return proc, proc.pidfd


def _discard(cf):
    """A spawn whose caller was cancelled: kill and reap its child."""
    if cf.cancelled() or cf.exception() is not None:
        return
    proc, _ = cf.result()
    proc._watched = False      # never handed to a child watcher: reaped here
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f is not None:
            try:
                f.close()
            except OSError:
                pass
    proc.kill()
    proc.wait()
    proc._close_pidfd()


async def spawn(loop, args, shell, stdin, stdout, stderr, bufsize, kwargs, watched=False):
    """(Process, pidfd), created on a spawner thread.  ``watched``: the
    child is for an asyncio child watcher to reap (spawn_watched)."""
    cf = _spawner_pool().submit(_spawn_blocking, args, shell, stdin, stdout, stderr,
                                bufsize, dict(kwargs), watched)
    try:
        return await asyncio.wrap_future(cf, loop=loop)
    except asyncio.CancelledError:
        # The child may exist already (or soon): do not leave it behind.
        if not cf.cancel():
            cf.add_done_callback(
                lambda cf: _spawner_pool().submit(_discard, cf))
        raise


class SubprocessTransport(_compat.BaseSubprocessTransport):
    """asyncio's subprocess transport over a child spawned off-loop."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, _popen=None, **kwargs):
        # The child already exists (created by the spawner pool).
        self._proc = _popen

    # Signals go through the Process (pidfd_send_signal, nothing once
    # reaped), as asyncio 3.11/3.12 route them through Popen.  3.13+'s
    # BaseSubprocessTransport calls os.kill(pid) itself, which can signal
    # an unrelated process that reused the pid of a child reaped elsewhere.
    def send_signal(self, signal):
        self._proc_or_raise().send_signal(signal)

    def terminate(self):
        self._proc_or_raise().terminate()

    def kill(self):
        self._proc_or_raise().kill()

    def _proc_or_raise(self):
        # ProcessLookupError once closed, as asyncio's _check_proc.
        if self._proc is None:
            raise ProcessLookupError()
        return self._proc

    def _process_exited(self, returncode):
        # From watch_exit, or an asyncio child watcher's callback: the
        # Process records the status (under its lock) and drops its pidfd.
        if self._proc is not None:
            self._proc._exited(returncode)
        super()._process_exited(returncode)


async def spawn_watched(loop, watcher, protocol, args, shell, stdin, stdout, stderr,
                        bufsize, extra, kwargs):
    """A subprocess transport whose child an asyncio child watcher reaps:
    asyncio's _UnixSelectorEventLoop._make_subprocess_transport (3.11-3.13)
    with the spawn on the spawner pool.  ``watcher`` is the one the program
    installed on the policy (_compat.installed_child_watcher()).  The child
    still gets a pidfd, for signals only."""
    with watcher as entered:
        if _compat.CHILD_WATCHER_USES_ENTERED:
            watcher = entered         # 3.11: `with get_child_watcher() as watcher`
        if not watcher.is_active():
            # Check early: no child is created that nothing would reap.
            raise RuntimeError(_compat.CHILD_WATCHER_INACTIVE)
        proc, _ = await spawn(loop, args, shell, stdin, stdout, stderr, bufsize, kwargs,
                              watched=True)
        return await start_transport(
            loop, protocol, args, shell, stdin, stdout, stderr, bufsize, extra, proc,
            lambda transp: watcher.add_child_handler(
                transp.get_pid(), loop._child_watcher_callback, transp))


async def start_transport(loop, protocol, args, shell, stdin, stdout, stderr, bufsize,
                          extra, proc, watch):
    """The transport of a spawned child, once its pipes are connected (as
    asyncio's _make_subprocess_transport waits for them); ``watch(transp)``
    arranges for its exit to be reported.  On failure the transport is
    closed and the child waited for before the error propagates."""
    waiter = loop.create_future()
    transp = SubprocessTransport(loop, protocol, args, shell, stdin, stdout, stderr,
                                 bufsize, waiter=waiter, extra=extra, _popen=proc)
    watch(transp)
    try:
        await waiter
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException:
        transp.close()
        await transp._wait()
        raise
    return transp


def watch_exit(loop, transport, proc, pidfd) -> None:
    """Reap proc when its pidfd turns readable; tell the transport (anything
    with ``_process_exited(returncode)``) the real exit status, whoever
    reaped the child first."""

    def exited(returncode):
        proc._close_pidfd()
        if not loop.is_closed():
            transport._process_exited(returncode)

    def on_reaped(fut):
        # The ring's WAITID completed (its result is on the op, which
        # proc._reap() records) -- or was cancelled: the loop is closing.
        if fut.cancelled():
            return
        fut.exception()       # retrieved: the op's outcome says the same
        returncode = proc._reap()
        if returncode is None:
            # An error that reaped nothing (not expected): poll instead.
            loop._poll_once(pidfd, _POLLIN).add_done_callback(on_ready)
            return
        exited(returncode)

    def on_ready(fut):
        if fut.cancelled():
            return
        if fut.exception() is not None:
            # The poll failed (should not happen): wait on a spawner thread.
            wf = asyncio.wrap_future(_spawner_pool().submit(proc.wait), loop=loop)
            wf.add_done_callback(lambda f: exited(f.result()))
            return
        returncode = proc._reap()
        if returncode is None:
            # Readable but not yet waitable: poll again.
            loop._poll_once(pidfd, _POLLIN).add_done_callback(on_ready)
            return
        exited(returncode)

    if proc.returncode is not None:
        loop.call_soon(exited, proc.returncode)
        return
    with proc._lock:
        # Armed under the lock, after the check: a status recorded before
        # is never lost to the ring.  (The SQE reaches the kernel at this
        # thread's next io_uring_enter, after _ring is set.)
        ring = loop._wait_child(pidfd) if proc.returncode is None else None
        if ring is not None:
            proc._ring = ring[0]
    if ring is not None:
        ring[1].add_done_callback(on_reaped)
        return
    if proc.returncode is not None:
        loop.call_soon(exited, proc.returncode)
        return
    loop._poll_once(pidfd, _POLLIN).add_done_callback(on_ready)


os.register_at_fork(after_in_child=_after_fork_in_child)
