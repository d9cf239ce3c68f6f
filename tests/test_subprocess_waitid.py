"""Subprocess exits reaped in the ring (IORING_OP_WAITID, 6.7) and with it
forced off (core.set_waitid(False): pidfd POLL_ADD + waitid(2), the path of
older kernels and of the poll backend), on both backends.

Exit statuses, many children at once, poll()/wait() from other threads
racing the ring's reap (never a wrong status), os.wait() behind our back
(255, as asyncio reports), the loop closed with children running or just
exited, ringline.process children.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from _helpers import no_zombie

pytestmark = pytest.mark.ringline_only

PY = sys.executable


@pytest.fixture(params=["ring", "off"])
def waitid(request, backend):
    """'ring': WAITID where the loop can (io_uring with the opcode); 'off':
    forced off.  Yields whether the ring reaps."""
    from ringline._core import core
    if request.param == "ring" and backend == "io_uring" and not core.waitid_in_ring():
        pytest.skip("this kernel's io_uring has no IORING_OP_WAITID (6.7+)")
    old = core.set_waitid(request.param == "ring")
    try:
        yield request.param == "ring" and backend == "io_uring"
    finally:
        core.set_waitid(old)


def _sh(script, **kw):
    return asyncio.create_subprocess_exec("/bin/sh", "-c", script, **kw)


def _proc(p):
    return p._transport.get_extra_info("subprocess")


def _gone(pid):
    # Reaped (by anyone), looked at without reaping.
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return False


def test_exit_statuses(run, waitid):
    async def main():
        out = []
        for script in ("exit 0", "exit 3", "kill -9 $$", "sleep 0.05; exit 7",
                       "sleep 0.05; kill -TERM $$"):
            p = await _sh(script)
            out.append(await p.wait())
            assert no_zombie(p.pid)
        return out
    assert run(main()) == [0, 3, -signal.SIGKILL, 7, -signal.SIGTERM]


def test_which_path(run, waitid):
    async def main():
        p = await _sh("sleep 0.3")
        await asyncio.sleep(0)
        armed = _proc(p)._ring is not None
        p.kill()
        assert await p.wait() == -signal.SIGKILL
        assert _proc(p)._ring is None       # the ring's result was taken
        return armed
    assert run(main()) is waitid


def test_many_children_at_once(run, waitid):
    async def main():
        procs = [await _sh(f"sleep 0.1; exit {i % 11}") for i in range(40)]
        codes = await asyncio.gather(*(p.wait() for p in procs))
        assert all(no_zombie(p.pid) for p in procs)
        return codes
    assert run(main(), timeout=30) == [i % 11 for i in range(40)]


@pytest.mark.parametrize("how", ["poll", "wait"])
def test_other_thread_races_the_ring(run, waitid, how):
    # poll() spinning / wait() blocking in another thread while the ring
    # reaps: whoever wins, every report is the real status, never 255.
    async def main():
        for i in range(60):
            code = 1 + i % 5
            p = await _sh(f"exit {code}")
            proc = _proc(p)
            seen = []

            def other():
                if how == "wait":
                    seen.append(proc.wait())
                    return
                while (rc := proc.poll()) is None:
                    pass
                seen.append(rc)
            t = threading.Thread(target=other)
            t.start()
            rc = await p.wait()
            await asyncio.get_running_loop().run_in_executor(None, t.join)
            assert (rc, seen, proc.returncode) == (code, [code], code), i
            assert no_zombie(p.pid)
    run(main(), timeout=60)


def test_os_wait_behind_our_back(run, waitid):
    # A reaper of all children (os.waitpid here) takes the status: the
    # transport reports 255, as asyncio's child watchers do -- unless the
    # ring reaped first, in which case os.waitpid found no child.
    async def main():
        p = await _sh("exit 5")
        try:
            _, status = os.waitpid(p.pid, 0)     # blocks the loop thread
            took = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            took = None
        rc = await p.wait()
        return took, rc
    took, rc = run(main())
    assert (took, rc) in ((5, 255), (None, 5))


def test_loop_closed_with_children_running(loop_factory, waitid):
    loop = loop_factory()
    try:
        async def start():
            return [await _sh("sleep 30") for _ in range(3)]
        ps = loop.run_until_complete(start())
        procs = [_proc(p) for p in ps]
        assert all((pr._ring is not None) is waitid for pr in procs)
    finally:
        for p in ps:
            p._transport._proc = None     # closed below, not by the transport
        loop.close()
    for pr in procs:
        pr.kill()
        assert pr.wait(timeout=10) == -signal.SIGKILL
        assert pr._ring is None
        assert no_zombie(pr.pid)


def test_loop_closed_after_children_exited(loop_factory, waitid):
    # Children exit while no loop runs; the ring reaps them while the loop
    # closes (its completions are not run then): the status is kept.
    loop = loop_factory()
    try:
        async def start():
            return await asyncio.gather(*(_sh(f"sleep 0.3; exit {i + 2}") for i in range(3)))
        ps = loop.run_until_complete(start())
        procs = [_proc(p) for p in ps]
        for pr in procs:
            os.waitid(os.P_PID, pr.pid, os.WEXITED | os.WNOWAIT)   # exited, not reaped
        ops = [pr._ring for pr in procs]
    finally:
        for p in ps:
            p._transport._proc = None
        loop.close()
    if waitid:
        # Reaped by the ring during the close (io_uring/waitid.c: a woken
        # WAITID cannot be cancelled; it completes), results kept on the ops.
        assert [op.outcome()[0] for op in ops] == [0, 0, 0]
    assert [pr.wait(timeout=10) for pr in procs] == [2, 3, 4]
    assert [pr.poll() for pr in procs] == [2, 3, 4]
    assert all(no_zombie(pr.pid) for pr in procs)


def test_ringline_process_children(run, waitid):
    from ringline import process as P

    async def main():
        st = await P.Command("sh").args(["-c", "exit 3"]).status()
        assert st.code == 3 and not st.success()
        child = await P.Command(PY).args(["-c", "import time; time.sleep(30)"]).spawn()
        assert (child._proc._ring is not None) is waitid
        child.kill()
        st = await child.wait()
        assert st.signal == signal.SIGKILL and st.returncode == -signal.SIGKILL
        outs = await asyncio.gather(*(P.Command("sh").args(["-c", f"echo {i}; exit {i}"]).output()
                                      for i in range(10)))
        assert [(o.stdout, o.status.code) for o in outs] == [(f"{i}\n".encode(), i)
                                                              for i in range(10)]
    run(main(), timeout=30)


def test_switch_and_probe():
    from ringline._core import core
    old = core.set_waitid(False)
    try:
        assert core.waitid_in_ring() is False
        assert core.set_waitid(True) is False
        ops = core.probe()[2]
        assert core.waitid_in_ring() is bool(ops.get(50))   # IORING_OP_WAITID
    finally:
        core.set_waitid(old)


def test_blocking_wait_on_the_loop_thread(loop, run, waitid):
    # A callback calling the Popen-like wait() on the loop's own thread,
    # after the ring reaped the child in an enter that did not process its
    # CQE (a flush(): DEFER_TASKRUN runs task work in any GETEVENTS enter).
    async def main():
        p = await _sh("sleep 0.2; exit 6")
        proc = _proc(p)
        await asyncio.sleep(0)                                  # the WAITID is in the kernel
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)     # exited, not reaped
        r, w = os.pipe()
        try:
            fut = loop._poll_once(r, 1)                         # an SQE to flush
            loop._flush()
            # Reaped by the ring, its completion not yet processed:
            stuck = _gone(p.pid) and proc._ring is not None and proc._ring.outcome() is None
            rc = proc.wait(timeout=5)
            fut.cancel()
        finally:
            os.close(r)
            os.close(w)
        assert rc == 6 and await p.wait() == 6
        return stuck
    assert run(main()) is waitid     # the case it is about did happen
