"""Subprocesses: created off the loop thread, exit awaited in the ring.

A small pool of spawner threads creates children (subprocess.Popen, which
uses vfork/exec or posix_spawn under the hood and runs preexec_fn in the
child), then opens a pidfd for each (pidfd_open(2), Linux 5.3+).  If
pidfd_open fails the child is killed and reaped there and the error raised,
so no child is ever left without a watcher.  The loop then polls the pidfd
in the ring (POLL_ADD: a pidfd turns readable when the process exits) and
reaps with waitpid(WNOHANG).  No child watcher, no SIGCHLD handler: loops in
several threads can spawn at once.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import threading
from asyncio import base_subprocess

__all__ = ("SubprocessTransport", "spawn", "watch_exit")

_POLLIN = 0x001

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
SPAWNER_THREADS = 2


def _spawner_pool() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=SPAWNER_THREADS, thread_name_prefix="ringline-spawner")
        return _pool


def _after_fork_in_child() -> None:
    # The pool's threads do not exist in a forked child.
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _spawn_blocking(args, shell, stdin, stdout, stderr, bufsize, kwargs):
    proc = subprocess.Popen(args, shell=shell, stdin=stdin, stdout=stdout,
                            stderr=stderr, universal_newlines=False,
                            bufsize=bufsize, **kwargs)
    try:
        pidfd = os.pidfd_open(proc.pid)
    except OSError:
        proc.kill()
        proc.wait()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        raise
    return proc, pidfd


async def spawn(loop, args, shell, stdin, stdout, stderr, bufsize, kwargs):
    """(Popen, pidfd), created on a spawner thread."""
    return await loop.run_in_executor(
        _spawner_pool(), _spawn_blocking, args, shell, stdin, stdout, stderr,
        bufsize, kwargs)


class SubprocessTransport(base_subprocess.BaseSubprocessTransport):
    """asyncio's subprocess transport over a child spawned off-loop."""

    def _start(self, args, shell, stdin, stdout, stderr, bufsize, _popen=None, **kwargs):
        # The child already exists (created by the spawner pool).
        self._proc = _popen


def watch_exit(loop, transport, proc, pidfd) -> None:
    """Reap proc when its pidfd turns readable; tell the transport."""

    def on_ready(fut):
        try:
            if fut.cancelled():
                return
            try:
                pid, status = os.waitpid(proc.pid, os.WNOHANG)
            except ChildProcessError:
                # Reaped by someone else (e.g. os.wait() in user code):
                # the exit status is lost, as asyncio reports it.
                pid, status = proc.pid, 255 << 8
            if pid == 0:
                # Readable but not yet waitable: poll again.
                loop._poll_once(pidfd, _POLLIN).add_done_callback(on_ready)
                return
            returncode = os.waitstatus_to_exitcode(status)
            os.close(pidfd)
            if loop.is_closed():
                return
            transport._process_exited(returncode)
        except Exception:
            try:
                os.close(pidfd)
            except OSError:
                pass
            raise

    loop._poll_once(pidfd, _POLLIN).add_done_callback(on_ready)
