"""SQPOLL (Config.sqpoll, core.set_sqpoll): a kernel thread takes the ring's
SQEs, the loop enters the kernel only to wait or to wake that thread.

Each test checks the ring really has it (setup flags, the loop's stats, the
kernel thread ``iou-sqp-<pid>`` among the process's threads), and the
fallback where the kernel refuses it: simulated with
core.set_sqpoll_kernel(False) (what a kernel before 5.13 answers an
unprivileged process, EPERM), and refused for real with an SQ_AFF CPU the
kernel does not have (EINVAL).  The runtime tests run on every backend; on
the poll backend Config.sqpoll has nothing to act on and is ignored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import socket
import time

import pytest

from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")
from ringline._core import core  # noqa: E402
import ringline.runtime._echo  # noqa: E402

IORING_SETUP_SQPOLL = 1 << 1
IORING_SETUP_SQ_AFF = 1 << 2


def _sq_threads(pid=None):
    """{tid: Cpus_allowed_list} of the process's SQPOLL kernel threads."""
    pid = pid or os.getpid()
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
            # iou-sqp-<tid of the thread that made the ring>
            if not comm.startswith("iou-sqp-"):
                continue
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                cpus = [ln.split(":", 1)[1].strip() for ln in f
                        if ln.startswith("Cpus_allowed_list:")][0]
        except (OSError, IndexError):
            continue            # the thread ended meanwhile
        out[int(tid)] = cpus
    return out


@pytest.fixture
def sqpoll_reset():
    """Leave the process-global switches as they were."""
    old = core.set_sqpoll(None)
    old_kernel = core.set_sqpoll_kernel(True)
    try:
        yield
    finally:
        core.set_sqpoll(*old)
        core.set_sqpoll_kernel(old_kernel)


def _uring_only(backend):
    if backend != "io_uring":
        pytest.skip("io_uring only: SQPOLL is a ring setup flag")


async def _echo_pairs(loop, npairs, rounds, size=64):
    """npairs socketpair echoes, every pair written each round."""
    pairs = []
    for _ in range(npairs):
        a, b = socket.socketpair()
        a.setblocking(False)
        b.setblocking(False)
        pairs.append((a, b))
    try:
        for _ in range(rounds):
            payload = os.urandom(size)

            async def one(a, b):
                await loop.sock_sendall(a, payload)
                got = b""
                while len(got) < size:
                    got += await loop.sock_recv(b, size - len(got))
                assert got == payload
            await asyncio.gather(*(one(a, b) for a, b in pairs))
    finally:
        for a, b in pairs:
            a.close()
            b.close()


# ---- the asyncio face (core.set_sqpoll) -------------------------------------------

@pytest.mark.parametrize("mode", ["on", "refused", "off"])
def test_loop_echo(backend, loop_factory, sqpoll_reset, mode):
    _uring_only(backend)
    if mode != "off":
        core.set_sqpoll(20)
    if mode == "refused":
        core.set_sqpoll_kernel(False)
    before = set(_sq_threads())
    loop = loop_factory()
    try:
        st = loop.stats()
        loop.run_until_complete(_echo_pairs(loop, 4, 20))
        threads = set(_sq_threads()) - before
        st2 = loop.stats()
    finally:
        loop.close()
    has = mode == "on"
    assert st["sqpoll"] is has
    assert bool(st["setup_flags"] & IORING_SETUP_SQPOLL) is has
    assert bool(threads) is has
    if has:
        assert st["sqpoll_idle_ms"] == 20 and st["sqpoll_refused"] is None
        # Nothing the TASKRUN flags need: the kernel refuses them with SQPOLL.
        assert st2["sqes_submitted"] > 0
    elif mode == "refused":
        assert "simulated" in st["sqpoll_refused"]
    else:
        assert st["sqpoll_idle_ms"] is None and st["sqpoll_refused"] is None


def test_refused_by_the_kernel_falls_back(backend, loop_factory, sqpoll_reset, caplog):
    # A CPU number past any this machine has: the kernel refuses SQ_AFF
    # with EINVAL, and the loop gets a normal ring that works.
    _uring_only(backend)
    core.set_sqpoll(10, 4095)
    with caplog.at_level(logging.WARNING, logger="ringline"):
        loop = loop_factory()
    try:
        st = loop.stats()
        assert st["sqpoll"] is False
        assert not st["setup_flags"] & IORING_SETUP_SQPOLL
        assert "EINVAL" in st["sqpoll_refused"] or "Invalid argument" in st["sqpoll_refused"]
        assert any("SQPOLL" in r.getMessage() for r in caplog.records)
        loop.run_until_complete(_echo_pairs(loop, 2, 5))
    finally:
        loop.close()
    assert core.probe_sqpoll(10, 4095) is not None
    assert core.probe_sqpoll() is None


def test_idle_thread_is_woken(backend, loop_factory, sqpoll_reset):
    # Sleep past the idle time: the SQ thread sleeps (IORING_SQ_NEED_WAKEUP)
    # and the next RECV's SQE must wake it (IORING_ENTER_SQ_WAKEUP), or the
    # echo would hang.  (The first run's enable of the ring wakes it anyway.)
    _uring_only(backend)
    core.set_sqpoll(5)
    loop = loop_factory()
    try:
        loop.run_until_complete(_echo_pairs(loop, 1, 1))
        for _ in range(3):
            before = loop.stats()["sq_wakeups"]
            time.sleep(0.1)                         # 20 x the idle time
            loop.run_until_complete(_echo_pairs(loop, 1, 1))
            assert loop.stats()["sq_wakeups"] > before
    finally:
        loop.close()


def test_full_sq_waits_for_the_thread(backend, loop_factory, sqpoll_reset):
    # A 4-entry SQ and 64 connections: get_sqe finds the SQ full and waits
    # (IORING_ENTER_SQ_WAIT) for the SQ thread to take entries.
    _uring_only(backend)
    core.set_sqpoll(50)
    old = core.set_ring_entries(4, 256)
    try:
        loop = loop_factory()
    finally:
        core.set_ring_entries(*old)
    try:
        assert loop.stats()["sq_entries"] == 4 and loop.stats()["sqpoll"]
        loop.run_until_complete(_echo_pairs(loop, 64, 5))
    finally:
        loop.close()


@pytest.mark.parametrize("interval", [0, 1])
def test_flush_interval_and_registered_ring(backend, loop_factory, sqpoll_reset, interval):
    _uring_only(backend)
    core.set_sqpoll(20)
    old = core.set_flush_interval(interval)
    try:
        loop = loop_factory()
        seen = []

        async def main():
            seen.append(loop.stats()["registered_ring"])
            await _echo_pairs(loop, 16, 10)
        try:
            loop.run_until_complete(main())
            assert loop.stats()["sqpoll"]
        finally:
            loop.close()
    finally:
        core.set_flush_interval(old)
    assert seen == [True]


def test_loop_made_on_one_thread_runs_on_another(backend, loop_factory, sqpoll_reset):
    # R_DISABLED + SINGLE_ISSUER, as for every ring: the thread that first
    # runs the loop enables it.
    _uring_only(backend)
    import threading
    core.set_sqpoll(20)
    loop = loop_factory()
    result = []
    t = threading.Thread(target=lambda: result.append(
        loop.run_until_complete(_echo_pairs(loop, 2, 5)) or "ok"))
    t.start()
    t.join(20)
    loop.close()
    assert result == ["ok"]


def test_set_sqpoll_bad_arguments(sqpoll_reset):
    with pytest.raises(TypeError, match="idle_ms"):
        core.set_sqpoll("10")
    with pytest.raises(TypeError, match="idle_ms"):
        core.set_sqpoll(True)
    with pytest.raises(ValueError, match="idle_ms"):
        core.set_sqpoll(-1)
    with pytest.raises(ValueError, match="idle_ms"):
        core.set_sqpoll(1 << 32)
    with pytest.raises(TypeError, match="cpu"):
        core.set_sqpoll(10, 1.0)
    with pytest.raises(ValueError, match="cpu"):
        core.set_sqpoll(10, -2)
    assert core.set_sqpoll(None) == (None, -1)


# ---- the runtime API (Config.sqpoll) ----------------------------------------------

class _EchoReport(ringline.Handler):
    """Echo; after each message, the worker loop's stats and SQ threads."""
    q: "queue.Queue"

    async def on_accept(self, conn):
        loop = asyncio.get_running_loop()

        def fn(view):
            conn.send_nowait(view)
            return len(view)
        while await conn.with_data(fn):
            type(self).q.put((loop.stats(), _sq_threads(), os.sched_getaffinity(0)))


def _handler():
    return type("EchoReport", (_EchoReport,), {"q": queue.Queue()})


def _roundtrip(s, n=100):
    data = os.urandom(n)
    s.sendall(data)
    assert recv_exactly(s, n) == data


@pytest.mark.parametrize("sqpoll", [True, False], ids=["sqpoll", "default"])
def test_runtime_echo(backend, sqpoll_reset, sqpoll):
    h = _handler()
    before = set(_sq_threads())
    with launched(h, backend, sqpoll=sqpoll, sqpoll_idle_ms=50) as (sh, _):
        s = client(sh.address())
        _roundtrip(s)
        st, threads, _ = get(h.q)
        s.close()
    # The launching thread's own loops are not changed by a worker's Config.
    assert core.set_sqpoll(None) == (None, -1)
    if backend != "io_uring":
        assert "sqpoll" not in st
        return
    assert st["sqpoll"] is sqpoll
    assert bool(st["setup_flags"] & IORING_SETUP_SQPOLL) is sqpoll
    assert bool(set(threads) - before) is sqpoll
    if sqpoll:
        assert st["sqpoll_idle_ms"] == 50


def test_runtime_echo_process_worker_has_sq_thread(backend):
    _uring_only(backend)
    with launched(ringline.runtime._echo.EchoWithData, backend, worker_mode="process",
                  sqpoll=True, sqpoll_idle_ms=50) as (sh, workers):
        s = client(sh.address())
        _roundtrip(s)
        pid = workers[0].pid
        assert pid != os.getpid()
        assert _sq_threads(pid), "no iou-sqp thread in the worker process"
        s.close()


def test_runtime_forced_off_falls_back(backend, sqpoll_reset):
    # Simulated kernel without SQPOLL: the worker runs a normal ring.
    core.set_sqpoll_kernel(False)
    h = _handler()
    before = set(_sq_threads())
    with launched(h, backend, sqpoll=True) as (sh, _):
        s = client(sh.address())
        for _ in range(3):
            _roundtrip(s)
        st, threads, _ = get(h.q)
        s.close()
    if backend == "io_uring":
        assert st["sqpoll"] is False and "simulated" in st["sqpoll_refused"]
        assert not set(threads) - before


def test_runtime_idle_wakeup(backend, sqpoll_reset):
    # Sleep past sqpoll_idle_ms between messages: each then arrives while
    # the SQ thread sleeps.  (The multishot RECV's completion is task work of
    # the SQ thread, which issued it: that wakes the thread, so the reply's
    # SEND may find it awake; either way the echo must go on.)
    h = _handler()
    with launched(h, backend, sqpoll=True, sqpoll_idle_ms=5) as (sh, _):
        s = client(sh.address())
        _roundtrip(s)
        first, _, _ = get(h.q)
        for _ in range(3):
            time.sleep(0.1)
            _roundtrip(s)
            last, _, _ = get(h.q)
        s.close()
    if backend == "io_uring":
        assert last["sqpoll"]
        assert last["sq_wakeups"] >= first["sq_wakeups"]


def test_runtime_sqpoll_cpu_pins_the_thread(backend, sqpoll_reset):
    _uring_only(backend)
    cpu = max(os.sched_getaffinity(0))
    h = _handler()
    before = set(_sq_threads())
    with launched(h, backend, sqpoll=True, sqpoll_idle_ms=50, sqpoll_cpu=cpu) as (sh, _):
        s = client(sh.address())
        _roundtrip(s)
        st, threads, _ = get(h.q)
        s.close()
    assert st["sqpoll"] and st["sqpoll_cpu"] == cpu
    assert st["setup_flags"] & IORING_SETUP_SQ_AFF
    assert [c for t, c in threads.items() if t not in before] == [str(cpu)]


def test_unpinned_thread_may_run_anywhere(backend, sqpoll_reset):
    # Without sqpoll_cpu the SQ thread may run on every CPU the worker had
    # before it was pinned (the kernel gives it the ring maker's affinity:
    # the worker widens its own while it makes the ring), and the worker
    # stays pinned.
    _uring_only(backend)
    h = _handler()
    before = set(_sq_threads())
    with launched(h, backend, sqpoll=True, pin_to_core=True) as (sh, _):
        s = client(sh.address())
        _roundtrip(s)
        st, threads, worker_cpus = get(h.q)
        s.close()
    assert worker_cpus == {min(os.sched_getaffinity(0))}
    allowed = sorted(os.sched_getaffinity(0))
    everywhere = str(allowed[0]) if len(allowed) == 1 else f"{allowed[0]}-{allowed[-1]}"
    assert st["sqpoll_cpu"] is None
    assert [c for t, c in threads.items() if t not in before] == [everywhere]


def test_thread_ends_with_the_loop(backend, loop_factory, sqpoll_reset):
    _uring_only(backend)
    core.set_sqpoll(1000)
    before = set(_sq_threads())
    loop = loop_factory()
    try:
        loop.run_until_complete(_echo_pairs(loop, 1, 1))
        mine = set(_sq_threads()) - before
        assert len(mine) == 1
    finally:
        loop.close()
    deadline = time.monotonic() + 5
    while mine & set(_sq_threads()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mine & set(_sq_threads()), "the SQ thread outlived its ring"


@pytest.mark.parametrize("field, value, exc, words", [
    ("sqpoll", 1, TypeError, "must be a bool"),
    ("sqpoll", "yes", TypeError, "must be a bool"),
    ("sqpoll_idle_ms", -1, ValueError, "0..600000"),
    ("sqpoll_idle_ms", 600001, ValueError, "0..600000"),
    ("sqpoll_idle_ms", 1.5, TypeError, "must be an int"),
    ("sqpoll_idle_ms", True, TypeError, "must be an int"),
    ("sqpoll_cpu", -1, ValueError, "an online CPU"),
    ("sqpoll_cpu", 4096, ValueError, "an online CPU"),
    ("sqpoll_cpu", "0", TypeError, "a CPU number"),
    ("sqpoll_cpu", 0.0, TypeError, "a CPU number"),
])
def test_config_bad_values(field, value, exc, words):
    c = ringline.Config(**{"sqpoll": True, field: value})
    with pytest.raises(exc) as ei:
        c.validate()
    msg = str(ei.value)
    assert msg.startswith(f"Config.{field} ") and words in msg and repr(value) in msg
    with pytest.raises(exc):
        ringline.Builder(c).bind(("127.0.0.1", 0)).launch(ringline.runtime._echo.EchoWithData)


def test_config_defaults_and_good_values():
    c = ringline.Config()
    assert (c.sqpoll, c.sqpoll_idle_ms, c.sqpoll_cpu) == (False, 1000, None)
    cpu = min(os.sched_getaffinity(0))
    assert ringline.Config(sqpoll=True, sqpoll_idle_ms=0, sqpoll_cpu=cpu).validate()


def test_echo_command_rejects_bad_cpu(capsys):
    from ringline.__main__ import main
    assert main(["echo", "--sqpoll", "--sqpoll-cpu", "4096", "--port", "0"]) == 2
    assert "Config.sqpoll_cpu" in capsys.readouterr().err
