"""Subprocesses on the spawner pool (ringline.aio._subprocess).

asyncio's subprocess API with every stdio form, env/PATH, close_fds,
sessions and process groups, signal dispositions, on both spawn paths
(posix_spawnp and the subprocess.Popen fall-back) and both backends; the
Popen-like process object (poll/wait/send_signal, race-free exit status);
pidfd_open failure; cancellation of a spawn in flight.

Tests marked ringline_only look at ringline internals; the others also run
on stock asyncio (RINGLINE_TEST_LOOP=asyncio) as the reference.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from _helpers import no_zombie

import _loops

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT


@pytest.fixture(params=["posix_spawn", "os.posix_spawn", "popen"])
def spawn_path(request, monkeypatch):
    """Which spawn path ringline takes: libc's posix_spawnp through ctypes,
    os.posix_spawnp (where libc lacks addclosefrom_np), or subprocess.Popen
    (no-op on stock asyncio)."""
    if request.param != "posix_spawn" and _loops.is_asyncio_mode():
        pytest.skip("one spawn path on stock asyncio")
    if not _loops.is_asyncio_mode():
        from ringline.aio import _spawn, _subprocess
        monkeypatch.setattr(_subprocess, "USE_POSIX_SPAWN", request.param != "popen")
        if request.param == "os.posix_spawn":
            monkeypatch.setattr(_spawn, "AVAILABLE", False)
    return request.param


def _sh(script, **kw):
    return asyncio.create_subprocess_exec("/bin/sh", "-c", script, **kw)


# ---------------------------------------------------------------------------
# stdio, env, arguments
# ---------------------------------------------------------------------------

def test_pipes_and_exit_status(run, spawn_path):
    async def main():
        p = await _sh("read x; echo out:$x; echo err:$x >&2; exit 3",
                      stdin=PIPE, stdout=PIPE, stderr=PIPE)
        out, err = await p.communicate(b"hello\n")
        return out, err, p.returncode
    assert run(main()) == (b"out:hello\n", b"err:hello\n", 3)


def test_stderr_to_stdout_and_devnull(run, spawn_path):
    async def main():
        p = await _sh("echo a; echo b >&2; cat", stdin=DEVNULL, stdout=PIPE, stderr=STDOUT)
        out, _ = await p.communicate()
        q = await _sh("echo hidden; echo hidden >&2", stdout=DEVNULL, stderr=DEVNULL)
        assert await q.wait() == 0
        return out, p.returncode
    assert run(main()) == (b"a\nb\n", 0)


def test_fd_and_file_object_redirection(run, spawn_path, tmp_path):
    path = tmp_path / "out.txt"
    r, w = os.pipe()

    async def main():
        with open(path, "wb") as f:
            p = await _sh("echo to-file; echo to-fd >&2", stdout=f, stderr=w)
            assert await p.wait() == 0
        os.close(w)
        return os.read(r, 100)
    try:
        assert run(main()) == b"to-fd\n"
    finally:
        os.close(r)
    assert path.read_bytes() == b"to-file\n"


def test_low_fd_sources_are_not_clobbered(run, spawn_path):
    # stdout gets our fd 2's file and stderr our fd 1's file: the sources
    # are below 3, so a naive dup2 order would send both to one place.
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    saved = os.dup(1), os.dup(2)
    os.dup2(w1, 1)
    os.dup2(w2, 2)

    async def main():
        p = await _sh("echo to-stdout; echo to-stderr >&2", stdout=2, stderr=1)
        return await p.wait()
    try:
        rc = run(main())
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (w1, w2) + saved:
            os.close(fd)
    try:
        assert rc == 0
        assert os.read(r2, 100) == b"to-stdout\n"
        assert os.read(r1, 100) == b"to-stderr\n"
    finally:
        os.close(r1)
        os.close(r2)


def test_shell_and_env(run, spawn_path):
    async def main():
        p = await asyncio.create_subprocess_shell(
            "echo $RL_X-$RL_Y", stdout=PIPE,
            env={"RL_X": "1", "RL_Y": "two", "PATH": os.environ.get("PATH", "")})
        out, _ = await p.communicate()
        return out
    assert run(main()) == b"1-two\n"


def test_path_searched_in_child_env(run, spawn_path, tmp_path):
    # Popen searches the PATH of the child's environment, not ours.
    prog = tmp_path / "rl-only-here"
    prog.write_text("#!/bin/sh\necho found\n")
    prog.chmod(prog.stat().st_mode | stat.S_IXUSR)

    async def main():
        p = await asyncio.create_subprocess_exec(
            "rl-only-here", stdout=PIPE, env={"PATH": f"/nonexistent:{tmp_path}"})
        out, _ = await p.communicate()
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("true", env={"PATH": str(tmp_path)})
        return out
    assert run(main()) == b"found\n"


def test_executable_and_argv0(run, spawn_path):
    async def main():
        p = await asyncio.create_subprocess_exec(
            "argv0-name", "-c", 'echo "$0"', executable="/bin/sh", stdout=PIPE)
        out, _ = await p.communicate()
        return out
    assert run(main()) == b"argv0-name\n"


def test_missing_and_unexecutable_program(run, spawn_path, tmp_path):
    noexec = tmp_path / "noexec"
    noexec.write_text("#!/bin/sh\n")

    async def main():
        with pytest.raises(FileNotFoundError) as info:
            await asyncio.create_subprocess_exec("ringline-no-such-program")
        assert info.value.errno == errno.ENOENT
        assert info.value.filename == "ringline-no-such-program"
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec(str(tmp_path / "missing"))
        with pytest.raises(PermissionError):
            await asyncio.create_subprocess_exec(str(noexec))
        # the loop goes on
        p = await asyncio.create_subprocess_exec("true")
        return await p.wait()
    assert run(main()) == 0


def test_bad_arguments(run, spawn_path):
    async def main():
        with pytest.raises(TypeError):
            await asyncio.create_subprocess_exec("echo", 42)
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec("echo", "a\0b")
        with pytest.raises(ValueError):
            await asyncio.create_subprocess_exec("true", env={"A=B": "1"})
    run(main())


def test_cwd(run, spawn_path, tmp_path):
    async def main():
        p = await asyncio.create_subprocess_exec("pwd", stdout=PIPE, cwd=tmp_path)
        out, _ = await p.communicate()
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec("pwd", cwd=tmp_path / "missing")
        return out
    assert run(main()).strip() == os.fsencode(os.path.realpath(tmp_path))


# ---------------------------------------------------------------------------
# fds, sessions, signals
# ---------------------------------------------------------------------------

def _child_fds(run, **kw):
    async def main():
        p = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import os; print(sorted(map(int, os.listdir('/proc/self/fd'))))",
            stdout=PIPE, **kw)
        out, _ = await p.communicate()
        return eval(out)
    return run(main())


def test_close_fds(run, spawn_path):
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        assert w not in _child_fds(run)
        assert w in _child_fds(run, close_fds=False)
        assert w in _child_fds(run, pass_fds=(w,))
        # a non-inheritable fd never reaches the child
        assert r not in _child_fds(run, close_fds=False)
    finally:
        os.close(r)
        os.close(w)


def test_new_session_and_process_group(run, spawn_path):
    async def main():
        p = await asyncio.create_subprocess_exec("sleep", "30", start_new_session=True)
        try:
            assert os.getsid(p.pid) == p.pid
            assert os.getpgid(p.pid) == p.pid
        finally:
            p.kill()
            await p.wait()
        if sys.version_info >= (3, 11):
            q = await asyncio.create_subprocess_exec("sleep", "30", process_group=0)
            try:
                assert os.getpgid(q.pid) == q.pid
                assert os.getsid(q.pid) == os.getsid(0)
            finally:
                q.kill()
                await q.wait()
        return p.returncode
    assert run(main()) == -signal.SIGKILL


def _sigign(run, **kw):
    async def main():
        p = await _sh("grep SigIgn /proc/self/status", stdout=PIPE, **kw)
        out, _ = await p.communicate()
        return int(out.split()[1], 16)
    return run(main())


def test_signal_dispositions_as_popen(run, spawn_path):
    # Python ignores SIGPIPE and SIGXFSZ; restore_signals=True (the default)
    # gives the child the default disposition back, and nothing else is
    # ignored (glibc's posix_spawn would leave its internal signals 32/33
    # ignored: ringline resets them, as a fork/exec child has them).
    bit = lambda sig: 1 << (sig - 1)  # noqa: E731
    ignored_by_us = 0
    for sig in range(1, signal.NSIG):
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                ignored_by_us |= bit(sig)
        except (ValueError, OSError):
            pass
    # (os.posix_spawn cannot reset them: signal numbers 32 and 33 are refused.
    # subprocess.Popen itself spawns with posix_spawn from 3.13 on, leaving
    # them as its children get them: the Popen path matches Popen.)
    internal = 0 if spawn_path == "os.posix_spawn" else bit(32) | bit(33)
    if spawn_path == "popen" and sys.version_info >= (3, 13):
        out = subprocess.run("grep SigIgn /proc/self/status", shell=True,
                             stdout=subprocess.PIPE, check=True).stdout
        internal &= ~int(out.split()[1], 16)
    restored = _sigign(run)
    assert not restored & (bit(signal.SIGPIPE) | bit(signal.SIGXFSZ))
    assert not restored & internal
    kept = _sigign(run, restore_signals=False)
    assert kept & bit(signal.SIGPIPE)
    assert not kept & internal


def test_terminate_kill_send_signal(run, spawn_path):
    async def main():
        codes = []
        for how in ("terminate", "kill", "send_signal"):
            p = await asyncio.create_subprocess_exec("sleep", "30")
            if how == "send_signal":
                p.send_signal(signal.SIGUSR1)
            else:
                getattr(p, how)()
            codes.append(await p.wait())
        return codes
    assert run(main()) == [-signal.SIGTERM, -signal.SIGKILL, -signal.SIGUSR1]


def test_many_concurrent(run, spawn_path):
    async def one(i):
        p = await _sh(f"exit {i % 7}", stdout=DEVNULL)
        return await p.wait()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(100)))
    assert run(main(), timeout=60) == [i % 7 for i in range(100)]


# ---------------------------------------------------------------------------
# the process object; race-free exit status (ringline internals)
# ---------------------------------------------------------------------------

@pytest.mark.ringline_only
def test_exit_status_survives_early_reap(run, spawn_path):
    # The transport's close() calls proc.poll(), which may reap the child
    # before the pidfd watcher runs: the watcher must report the real
    # status (it used to report 255 after a ChildProcessError).
    async def main():
        p = await _sh("sleep 0.2; exit 7")
        proc = p._transport.get_extra_info("subprocess")
        # wait (blocking the loop, so the watcher cannot run) for the exit
        # without reaping, then reap through poll()
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        assert proc.poll() == 7
        assert proc.returncode == 7
        return await p.wait()
    assert run(main()) == 7


@pytest.mark.ringline_only
def test_close_after_exit_does_not_kill_or_lose_status(run, spawn_path):
    async def main():
        transport, _ = await asyncio.get_running_loop().subprocess_exec(
            asyncio.SubprocessProtocol, "/bin/sh", "-c", "sleep 0.2; exit 5")
        os.waitid(os.P_PID, transport.get_pid(), os.WEXITED | os.WNOWAIT)
        transport.close()          # polls: reaps the child, sees it finished
        await transport._wait()
        return transport.get_returncode()
    assert run(main()) == 5


@pytest.mark.ringline_only
def test_process_object_wait_poll_signal(run, spawn_path):
    async def main():
        p = await asyncio.create_subprocess_exec("sleep", "30")
        proc = p._transport.get_extra_info("subprocess")
        assert proc.pid == p.pid and proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
        # a blocking wait() in another thread sees the same status
        result = []
        t = threading.Thread(target=lambda: result.append(proc.wait()))
        t.start()
        proc.kill()
        rc = await p.wait()
        t.join(10)
        assert result == [rc] == [-signal.SIGKILL]
        proc.send_signal(signal.SIGTERM)     # reaped: nothing is sent
        proc.kill()
        assert proc.poll() == rc
        return proc.pidfd
    assert run(main()) == -1                 # the watcher closed the pidfd


@pytest.mark.ringline_only
def test_reaped_behind_our_back_reports_255(run, spawn_path):
    async def main():
        p = await _sh("sleep 0.2; exit 3")
        os.waitpid(p.pid, 0)                 # user code reaps it
        return await p.wait()
    assert run(main()) == 255                # as asyncio's child watchers report


@pytest.mark.ringline_only
def test_pidfd_open_failure_kills_and_reaps(run, spawn_path, monkeypatch):
    from ringline.aio import _spawn, _subprocess
    pids = []
    real_spawn = _spawn.spawn
    real_popen = subprocess.Popen

    def spawn(*a, **kw):
        pids.append(real_spawn(*a, **kw))
        return pids[-1]

    class Popen(real_popen):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            pids.append(self.pid)

    def recording(real):
        def spawn_os(*a, **kw):
            pids.append(real(*a, **kw))
            return pids[-1]
        return spawn_os

    def pidfd_open(pid, flags=0):
        raise OSError(errno.EMFILE, "Too many open files")
    monkeypatch.setattr(_spawn, "spawn", spawn)
    monkeypatch.setattr(os, "posix_spawn", recording(os.posix_spawn))
    monkeypatch.setattr(os, "posix_spawnp", recording(os.posix_spawnp))
    monkeypatch.setattr(_subprocess, "_Popen", Popen)
    monkeypatch.setattr(subprocess, "Popen", Popen)
    monkeypatch.setattr(os, "pidfd_open", pidfd_open)

    async def main():
        with pytest.raises(OSError) as info:
            await asyncio.create_subprocess_exec("sleep", "30", stdout=PIPE)
        assert info.value.errno == errno.EMFILE
    run(main())
    assert len(pids) == 1 and no_zombie(pids[0])


@pytest.mark.ringline_only
@pytest.mark.parametrize("how", ["reaped", "pid-reused"])
def test_child_reaped_before_pidfd_open(run, spawn_path, monkeypatch, caplog, how):
    # A reaper of every child (os.wait(); a FastChildWatcher that is not the
    # policy's -- the policy's is used, tests/test_child_watcher.py) may
    # take the child between the spawn and pidfd_open; its pid
    # may then name another process.  The spawn succeeds, the status is
    # lost (255, as asyncio reports it) and nothing is signalled by pid.
    real = os.pidfd_open
    killed = []

    def pidfd_open(pid, flags=0):
        os.waitpid(pid, 0)                   # someone else reaps it
        if how == "reaped":
            return real(pid)                 # ESRCH
        return real(os.getpid())             # "reused" by a process not our child

    def kill(pid, sig):
        killed.append(pid)
    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    monkeypatch.setattr(os, "kill", kill)

    async def main():
        p = await _sh("exit 3", stdout=PIPE)
        p.kill()                             # a no-op: the child is gone
        out, _ = await p.communicate()
        return out, p.returncode
    assert run(main()) == (b"", 255)
    assert killed == []
    assert any("reaped by someone else" in r.getMessage() for r in caplog.records)


@pytest.mark.ringline_only
def test_patched_popen_is_used(run, monkeypatch):
    # asyncio calls subprocess.Popen at spawn time; a patched Popen (a mock
    # in a test) is honoured the same way.
    class Boom(Exception):
        pass

    def popen(*a, **kw):
        raise Boom
    monkeypatch.setattr(subprocess, "Popen", popen)

    async def main():
        with pytest.raises(Boom):
            await asyncio.create_subprocess_exec("true")
    run(main())


@pytest.mark.ringline_only
def test_cancelled_spawn_leaves_no_child(run, spawn_path, monkeypatch):
    from ringline.aio import _subprocess
    made = []
    real = _subprocess._spawn_blocking
    started = threading.Event()

    def slow(*a):
        started.set()
        time.sleep(0.2)
        res = real(*a)
        made.append(res[0])
        return res
    monkeypatch.setattr(_subprocess, "_spawn_blocking", slow)

    async def main():
        task = asyncio.ensure_future(asyncio.create_subprocess_exec("sleep", "30"))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(500):
            if made and made[0].returncode is not None:
                break
            await asyncio.sleep(0.01)
    run(main())
    assert made and made[0].returncode == -signal.SIGKILL
    assert no_zombie(made[0].pid)


@pytest.mark.ringline_only
def test_spawn_paths_chosen(monkeypatch):
    from ringline.aio import _subprocess
    monkeypatch.setattr(_subprocess, "USE_POSIX_SPAWN", True)
    ok = _subprocess._posix_spawnable
    assert ok({})
    assert ok({"env": {}, "start_new_session": True, "close_fds": False,
               "restore_signals": False, "executable": "/bin/sh", "pass_fds": (),
               "cwd": None, "preexec_fn": None, "umask": -1})
    assert ok({"process_group": 0})
    for kw in ({"cwd": "/"}, {"preexec_fn": os.getpid}, {"pass_fds": (5,)},
               {"user": 0}, {"group": 0}, {"extra_groups": []}, {"umask": 0o22},
               {"start_new_session": True, "process_group": 0}, {"unknown": 1}):
        assert not ok(kw), kw


@pytest.mark.ringline_only
def test_ringline_process_command(run):
    import ringline

    async def main():
        out = await ringline.process.Command("sh").args(["-c", "echo hi; exit 2"]).output()
        return out.status.returncode, out.stdout
    assert run(main()) == (2, b"hi\n")
