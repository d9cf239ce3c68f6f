"""ringline.process: child processes, built like Rust's std::process::Command.

    out = await Command("git").args(["log", "-1"]).cwd(repo).output()
    print(out.status.success(), out.stdout.decode())

    child = await (Command("sort").stdin(PIPE).stdout(PIPE).spawn())
    child.stdin.write(b"b\\na\\n")
    await child.stdin.drain()
    child.stdin.close()
    print(await child.stdout.read(), await child.wait())

Children are created off the loop thread by the spawner pool that asyncio's
subprocess_exec on a ringline loop uses too (ringline.aio._subprocess), each
with a pidfd; the exit is awaited by polling the pidfd in the ring (POLL_ADD
on io_uring, epoll on the poll backend) and reaped with waitpid(WNOHANG).
Signals go through the pidfd (pidfd_send_signal), so a recycled pid is never
signalled.  Pipes are asyncio StreamReader/StreamWriter objects.
"""

from __future__ import annotations

import asyncio
import os
import signal as _signal
import subprocess
from . import _compat

from .aio import _subprocess

__all__ = ("Child", "Command", "DEVNULL", "ExitStatus", "INHERIT", "Output", "PIPE")

#: Connect the stream to a new pipe (Child.stdin/stdout/stderr).
PIPE = subprocess.PIPE
#: Connect the stream to /dev/null.
DEVNULL = subprocess.DEVNULL
#: Share the parent's stream (the default of spawn() and status()).
INHERIT = None

_STDIO_NAMES = {PIPE: "PIPE", DEVNULL: "DEVNULL", INHERIT: "INHERIT"}


def _check_stdio(value, name):
    if value in (PIPE, DEVNULL, INHERIT) or (isinstance(value, int) and value >= 0):
        return value
    if hasattr(value, "fileno"):
        return value
    raise ValueError(f"{name} must be PIPE, DEVNULL, INHERIT, an fd or a file object, "
                     f"not {value!r}")


class ExitStatus:
    """How a child ended: ``code`` (exit status, or None when killed by a
    signal), ``signal`` (the signal number, or None); ``success()`` is
    code == 0.  ``returncode`` is asyncio's form (negative: -signal)."""

    __slots__ = ("returncode",)

    def __init__(self, returncode: int):
        self.returncode = returncode

    @property
    def code(self) -> int | None:
        return self.returncode if self.returncode >= 0 else None

    @property
    def signal(self) -> int | None:
        return -self.returncode if self.returncode < 0 else None

    def success(self) -> bool:
        return self.returncode == 0

    def check(self, args=None) -> None:
        """Raise subprocess.CalledProcessError unless success()."""
        if self.returncode != 0:
            raise subprocess.CalledProcessError(self.returncode, args)

    def __eq__(self, other):
        if isinstance(other, ExitStatus):
            return self.returncode == other.returncode
        return NotImplemented

    def __hash__(self):
        return hash(self.returncode)

    def __repr__(self):
        if self.returncode < 0:
            try:
                name = _signal.Signals(-self.returncode).name
            except ValueError:
                name = str(-self.returncode)
            return f"ExitStatus(signal={name})"
        return f"ExitStatus(code={self.returncode})"


class Output:
    """What ``Command.output()`` and ``Child.wait_with_output()`` return."""

    __slots__ = ("status", "stdout", "stderr")

    def __init__(self, status: ExitStatus, stdout: bytes | None, stderr: bytes | None):
        self.status = status
        self.stdout = stdout
        self.stderr = stderr

    def __iter__(self):
        return iter((self.status, self.stdout, self.stderr))

    def __repr__(self):
        return f"Output(status={self.status!r}, stdout={self.stdout!r}, stderr={self.stderr!r})"


class Command:
    """A builder for one child process; every setter returns the command,
    so calls chain.  ``spawn()``, ``output()`` and ``status()`` may be
    called any number of times."""

    def __init__(self, program):
        self._program = os.fspath(program)
        self._args: list = []
        self._env: dict = {}
        self._env_remove: set = set()
        self._env_clear = False
        self._cwd = None
        self._stdin = None
        self._stdout = None
        self._stderr = None
        self._set = set()           # which stdio were set explicitly
        self._popen_kwargs: dict = {}

    def __repr__(self):
        return f"Command({[self._program, *self._args]!r})"

    # ---- building --------------------------------------------------------

    def arg(self, arg) -> "Command":
        self._args.append(os.fspath(arg) if not isinstance(arg, (str, bytes)) else arg)
        return self

    def args(self, args) -> "Command":
        if isinstance(args, (str, bytes)):
            raise TypeError("args() takes an iterable of arguments; use arg() for one")
        for a in args:
            self.arg(a)
        return self

    def env(self, key: str, value: str) -> "Command":
        self._env[key] = value
        self._env_remove.discard(key)
        return self

    def envs(self, mapping) -> "Command":
        for k, v in dict(mapping).items():
            self.env(k, v)
        return self

    def env_remove(self, key: str) -> "Command":
        self._env.pop(key, None)
        self._env_remove.add(key)
        return self

    def env_clear(self) -> "Command":
        self._env.clear()
        self._env_remove.clear()
        self._env_clear = True
        return self

    def cwd(self, path) -> "Command":
        self._cwd = os.fspath(path)
        return self

    def stdin(self, cfg) -> "Command":
        self._stdin = _check_stdio(cfg, "stdin")
        self._set.add("stdin")
        return self

    def stdout(self, cfg) -> "Command":
        self._stdout = _check_stdio(cfg, "stdout")
        self._set.add("stdout")
        return self

    def stderr(self, cfg) -> "Command":
        self._stderr = _check_stdio(cfg, "stderr")
        self._set.add("stderr")
        return self

    def popen_option(self, **kwargs) -> "Command":
        """Further subprocess.Popen options (start_new_session, umask, ...)."""
        self._popen_kwargs.update(kwargs)
        return self

    def get_program(self):
        return self._program

    def get_args(self) -> list:
        return list(self._args)

    # ---- running -----------------------------------------------------------

    def _environ(self):
        if not self._env_clear and not self._env and not self._env_remove:
            return None                  # inherit as is
        env = {} if self._env_clear else dict(os.environ)
        for k in self._env_remove:
            env.pop(k, None)
        env.update(self._env)
        return env

    async def spawn(self, *, _stdin=None, _stdout=None, _stderr=None) -> "Child":
        """Start the child; returns a :class:`Child`.  Raises the OSError of
        a failed exec (FileNotFoundError for a missing program, ...)."""
        loop = asyncio.get_running_loop()
        stdin = self._stdin if "stdin" in self._set or _stdin is None else _stdin
        stdout = self._stdout if "stdout" in self._set or _stdout is None else _stdout
        stderr = self._stderr if "stderr" in self._set or _stderr is None else _stderr
        kwargs = dict(self._popen_kwargs)
        env = self._environ()
        if env is not None:
            kwargs["env"] = env
        if self._cwd is not None:
            kwargs["cwd"] = self._cwd
        argv = [self._program, *self._args]
        if not hasattr(loop, "_poll_once"):
            raise RuntimeError("ringline.process needs a ringline event loop")
        proc, pidfd = await _subprocess.spawn(loop, argv, False, stdin, stdout, stderr, 0, kwargs)
        child = Child(loop, proc, pidfd, argv)
        try:
            await child._connect_pipes()
        except BaseException:
            child._abandon()
            raise
        return child

    async def output(self) -> Output:
        """Run to completion with stdout and stderr captured (unless set
        otherwise) and stdin from /dev/null (unless set otherwise)."""
        child = await self.spawn(_stdin=DEVNULL, _stdout=PIPE, _stderr=PIPE)
        return await child.wait_with_output()

    async def status(self) -> ExitStatus:
        """Run to completion (stdio inherited unless set); the exit status."""
        child = await self.spawn()
        return await child.wait()


class _WritePipeProtocol(_compat.StreamFlowControlMixin, asyncio.Protocol):
    """Write side of a pipe for an asyncio StreamWriter."""

    def __init__(self, loop):
        super().__init__(loop=loop)
        self._closed = loop.create_future()

    def connection_lost(self, exc):
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream):
        return self._closed


class _ExitWatch:
    """What _subprocess.watch_exit tells when the pidfd says the child is gone."""

    __slots__ = ("child",)

    def __init__(self, child):
        self.child = child

    def _process_exited(self, returncode):
        self.child._exited(returncode)


class Child:
    """A running (or finished) child process."""

    def __init__(self, loop, proc, pidfd, args):
        self._loop = loop
        self._proc = proc
        self._pidfd = pidfd
        self.args = args
        self.pid = proc.pid
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._status: ExitStatus | None = None
        self._exit = loop.create_future()
        self._transports = []
        _subprocess.watch_exit(loop, _ExitWatch(self), proc, pidfd)

    def __repr__(self):
        return f"<Child pid={self.pid} {self._status or 'running'}>"

    async def _connect_pipes(self):
        loop = self._loop
        proc = self._proc
        if proc.stdin is not None:
            tr, proto = await loop.connect_write_pipe(lambda: _WritePipeProtocol(loop),
                                                      proc.stdin)
            self._transports.append(tr)
            self.stdin = asyncio.StreamWriter(tr, proto, None, loop)
        for name in ("stdout", "stderr"):
            pipe = getattr(proc, name)
            if pipe is None:
                continue
            reader = asyncio.StreamReader(limit=_compat.STREAM_DEFAULT_LIMIT, loop=loop)
            tr, _ = await loop.connect_read_pipe(
                lambda r=reader: asyncio.StreamReaderProtocol(r, loop=loop), pipe)
            self._transports.append(tr)
            setattr(self, name, reader)

    def _abandon(self):
        # Pipes failed to connect: do not leave the child running.
        self.kill()
        for f in (self._proc.stdin, self._proc.stdout, self._proc.stderr):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        for tr in self._transports:
            tr.close()

    def _exited(self, returncode):
        self._status = ExitStatus(returncode)
        if not self._exit.done():
            self._exit.set_result(self._status)

    @property
    def returncode(self) -> int | None:
        """asyncio's form of the exit status, None while running."""
        return None if self._status is None else self._status.returncode

    def try_wait(self) -> ExitStatus | None:
        """The exit status if the child has exited (and been seen to), else None."""
        return self._status

    async def wait(self) -> ExitStatus:
        """Close stdin (so a child reading it sees EOF) and wait for the exit."""
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()
        return await asyncio.shield(self._exit)

    async def wait_with_output(self) -> Output:
        """Wait, collecting what remains of stdout and stderr (piped ones)."""
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()

        async def drain(stream):
            return None if stream is None else await stream.read()

        out, err, status = await asyncio.gather(drain(self.stdout), drain(self.stderr),
                                                asyncio.shield(self._exit))
        return Output(status, out, err)

    def send_signal(self, sig: int) -> None:
        """Send sig (through the pidfd: never to a recycled pid); nothing
        once the child has been reaped."""
        if self._status is not None:
            return
        self._proc.send_signal(sig)

    def kill(self) -> None:
        self.send_signal(_signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(_signal.SIGTERM)
