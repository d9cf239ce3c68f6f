"""asyncio's child watchers (Python 3.11-3.13) on the loop under test.

A program that installed a child watcher on the event loop policy
(asyncio.set_child_watcher(), or get_child_watcher(), which creates one) gets
asyncio's unix-loop behaviour: the watcher's is_active() is checked before
anything is spawned, add_child_handler(pid, callback, transport) is called,
and the exit status comes from the watcher (ringline's pidfd reaper is not
used for that child).  Without a watcher none is created and the child's
exit is awaited on its pidfd.

The tests that do not look at ringline's internals run on stock asyncio too
(RINGLINE_TEST_LOOP=asyncio), as the reference.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import warnings
from unittest import mock

import pytest

import _loops

if sys.version_info >= (3, 14) or not hasattr(asyncio, "set_child_watcher"):
    pytest.skip("child watchers were removed in Python 3.14 (deprecated since 3.12)",
                allow_module_level=True)

from asyncio import unix_events  # noqa: E402  (3.11-3.13 only)

PIPE = subprocess.PIPE
MESSAGE = "asyncio.get_child_watcher() is not activated, subprocess support is not installed."


def _quiet(fn, *args):
    # set_child_watcher/get_child_watcher and the Safe/Fast/MultiLoop
    # constructors warn from 3.12 (the watchers are deprecated).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return fn(*args)


@pytest.fixture
def policy():
    """A fresh default (unix) policy for the test, with no watcher; the
    previous policy is put back after."""
    saved = asyncio.get_event_loop_policy()
    fresh = asyncio.DefaultEventLoopPolicy()
    asyncio.set_event_loop_policy(fresh)
    try:
        yield fresh
    finally:
        watcher = fresh._watcher
        if watcher is not None:
            _quiet(fresh.set_child_watcher, None)
            if not isinstance(watcher, mock.Mock):
                watcher.attach_loop(None)
                watcher.close()
        asyncio.set_event_loop_policy(saved)


@pytest.fixture
def spies(monkeypatch):
    """In ringline mode: records of the pidfd reaper (watch_exit) and the
    spawner's calls; stock asyncio has neither (None)."""
    if _loops.is_asyncio_mode():
        return None
    from ringline.aio import _subprocess
    calls = {"watch_exit": [], "spawn": []}
    real_watch, real_spawn = _subprocess.watch_exit, _subprocess._spawn_blocking

    def watch_exit(*args):
        calls["watch_exit"].append(args)
        return real_watch(*args)

    def spawn_blocking(*args):
        calls["spawn"].append(args)
        return real_spawn(*args)
    monkeypatch.setattr(_subprocess, "watch_exit", watch_exit)
    monkeypatch.setattr(_subprocess, "_spawn_blocking", spawn_blocking)
    return calls


def _spy_add_child_handler(watcher):
    calls = []
    real = watcher.add_child_handler

    def add_child_handler(pid, callback, *args):
        calls.append((pid, callback, args))
        return real(pid, callback, *args)
    watcher.add_child_handler = add_child_handler
    return calls


# ---------------------------------------------------------------------------

def test_inactive_watcher_raises_before_spawning(run, policy, spies, tmp_path):
    # CPython's GenericWatcherTests.test_create_subprocess_fails_with_inactive_watcher,
    # plus: no child was created.
    watcher = mock.create_autospec(asyncio.AbstractChildWatcher)
    watcher.is_active.return_value = False
    watcher.__enter__.return_value.is_active.return_value = False   # 3.11's spelling
    _quiet(asyncio.set_child_watcher, watcher)
    marker = tmp_path / "ran"

    async def main():
        with pytest.raises(RuntimeError) as info:
            await asyncio.create_subprocess_exec("/bin/sh", "-c", f"touch {marker}")
        await asyncio.sleep(0.2)              # a child, had one been made, would have run
        return str(info.value)
    assert run(main()) == MESSAGE
    assert not marker.exists()
    if sys.version_info >= (3, 12):
        expected = [mock.call.__enter__(), mock.call.is_active(),
                    mock.call.__exit__(RuntimeError, mock.ANY, mock.ANY)]
    else:     # 3.11: `with get_child_watcher() as watcher`: what __enter__ returned
        expected = [mock.call.__enter__(), mock.call.__enter__().is_active(),
                    mock.call.__exit__(RuntimeError, mock.ANY, mock.ANY)]
    assert watcher.mock_calls == expected
    watcher.add_child_handler.assert_not_called()
    if spies is not None:
        assert spies["spawn"] == []


def _make_watcher(kind, loop):
    cls = getattr(unix_events, kind)
    watcher = _quiet(cls)
    watcher.attach_loop(loop)                 # Safe/Fast: the SIGCHLD handler
    return watcher


WATCHERS = ["ThreadedChildWatcher", "SafeChildWatcher", "FastChildWatcher"]
if hasattr(os, "pidfd_open"):
    WATCHERS.append("PidfdChildWatcher")


@pytest.mark.parametrize("kind", WATCHERS)
def test_watcher_set_by_program_is_used(run, loop, policy, spies, kind):
    watcher = _make_watcher(kind, loop)
    _quiet(asyncio.set_child_watcher, watcher)
    added = _spy_add_child_handler(watcher)

    async def main():
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "echo hi; exit 7",
                                                 stdout=PIPE)
        out, _ = await p.communicate()
        assert out == b"hi\n"
        rc = p.returncode
        # A signal goes to the child (through its pidfd on ringline) and the
        # watcher reports it.
        q = await asyncio.create_subprocess_exec("sleep", "30")
        q.send_signal(signal.SIGTERM)
        return p, rc, q, await q.wait()
    p, rc, q, rc2 = run(main(), timeout=20)
    assert (rc, rc2) == (7, -signal.SIGTERM)
    assert [(pid, args) for pid, _, args in added] == [
        (p.pid, (p._transport,)), (q.pid, (q._transport,))]
    assert all(cb.__name__ == "_child_watcher_callback" for _, cb, _ in added)
    if spies is not None:
        assert spies["watch_exit"] == []       # the watcher reaped them
        assert len(spies["spawn"]) == 2


@pytest.mark.parametrize("kind", ["FastChildWatcher", "ThreadedChildWatcher"])
def test_watcher_reports_every_status(run, loop, policy, kind):
    # FastChildWatcher reaps every child with waitpid(-1) on SIGCHLD, also
    # one it reaps before the spawn has returned (its zombies): each status
    # must still reach its transport (ringline used to race it: 255).
    watcher = _make_watcher(kind, loop)
    _quiet(asyncio.set_child_watcher, watcher)

    async def one(i):
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", f"exit {i % 7}")
        return await p.wait()

    async def main():
        return await asyncio.gather(*(one(i) for i in range(40)))
    assert run(main(), timeout=60) == [i % 7 for i in range(40)]


def test_watcher_created_by_get_child_watcher_is_used(run, policy, spies):
    # get_child_watcher() creates the policy's default watcher (Threaded on
    # 3.11, Pidfd where it can on 3.12+); from then on it is used.
    watcher = _quiet(asyncio.get_child_watcher)
    assert watcher is not None and policy._watcher is watcher
    added = _spy_add_child_handler(watcher)

    async def main():
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 3")
        return p.pid, await p.wait()
    pid, rc = run(main())
    assert rc == 3 and [a[0] for a in added] == [pid]
    if spies is not None:
        assert spies["watch_exit"] == []


def test_policy_with_its_own_get_child_watcher(run, spies):
    # A policy class that implements get_child_watcher itself is asked, as
    # asyncio's unix loop asks it.
    watcher = unix_events.ThreadedChildWatcher()
    added = _spy_add_child_handler(watcher)

    class Policy(asyncio.DefaultEventLoopPolicy):
        def get_child_watcher(self):
            return watcher

    saved = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(Policy())
    try:
        async def main():
            p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 4")
            return await p.wait()
        assert run(main()) == 4
    finally:
        asyncio.set_event_loop_policy(saved)
    assert len(added) == 1
    if spies is not None:
        assert spies["watch_exit"] == []


@pytest.mark.ringline_only
def test_no_watcher_none_created_pidfd_path(run, policy, spies):
    from ringline import _compat
    assert _compat.installed_child_watcher() is None

    async def main():
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "read x; exit 5",
                                                 stdin=PIPE)
        proc = p._transport.get_extra_info("subprocess")
        assert not proc._watched and proc.pidfd >= 0
        await p.communicate(b"\n")
        return p.returncode, proc.pidfd
    assert run(main()) == (5, -1)                     # the pidfd reaper closed it
    assert _compat.installed_child_watcher() is None    # policy._watcher still None
    assert len(spies["watch_exit"]) == 1                # the pidfd reaper


@pytest.mark.ringline_only
def test_no_policy_yet_is_no_watcher(monkeypatch):
    # Before anything asked for the policy there is none, so no watcher
    # (and none is created by asking).
    from asyncio import events
    from ringline import _compat
    monkeypatch.setattr(events, "_event_loop_policy", None)
    assert _compat.installed_child_watcher() is None
    assert events._event_loop_policy is None


@pytest.mark.ringline_only
def test_fast_watcher_reaps_before_pidfd_open(run, loop, policy, monkeypatch, caplog):
    # The race the FastChildWatcher tests used to lose: its waitpid(-1) takes
    # the child before the spawner thread has opened the pidfd.  The child
    # is the watcher's: it reports the real status, no 255, no warning, and
    # nothing is signalled by pid.
    watcher = _make_watcher("FastChildWatcher", loop)
    _quiet(asyncio.set_child_watcher, watcher)
    real = os.pidfd_open
    killed, outcome = [], []

    def pidfd_open(pid, flags=0):
        # On the spawner thread: wait until the watcher (on the loop
        # thread, on SIGCHLD) has reaped the child into its zombies.
        for _ in range(500):
            with watcher._lock:
                if pid in watcher._zombies:
                    break
            time.sleep(0.01)
        try:
            return real(pid, flags)
        except ProcessLookupError:
            outcome.append("ESRCH")          # gone: reaped by the watcher
            raise

    def kill(pid, sig):
        killed.append(pid)
    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    monkeypatch.setattr(os, "kill", kill)

    async def main():
        p = await asyncio.create_subprocess_exec("/bin/sh", "-c", "exit 3")
        proc = p._transport.get_extra_info("subprocess")
        p.kill()                             # a no-op: the child is gone
        return await p.wait(), proc.pidfd, proc.returncode
    assert run(main()) == (3, -1, 3)         # 255 until the watcher's report replaced it
    assert outcome == ["ESRCH"] and killed == []
    assert not any("reaped by someone else" in r.getMessage() for r in caplog.records)
