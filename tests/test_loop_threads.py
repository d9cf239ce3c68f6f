"""A loop created on one thread and run on another (a "loop thread"), as
asyncio allows, and the io_uring ring's ties to the thread that runs it:
IORING_SETUP_SINGLE_ISSUER and the registered ring fd (src/ringline/_core/driver/uring.h).
"""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest



def _echo_once(loop):
    """One byte over a socketpair through sock_sendall/sock_recv on loop."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        await loop.sock_sendall(a, b"x")
        return await loop.sock_recv(b, 1)

    try:
        return loop.run_until_complete(asyncio.wait_for(main(), 10))
    finally:
        a.close()
        b.close()


def _in_thread(fn, *args):
    out = []

    def target():
        try:
            out.append(("ok", fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out.append(("error", exc))

    t = threading.Thread(target=target)
    t.start()
    t.join(30)
    assert not t.is_alive()
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


def test_created_on_one_thread_run_on_another(loop_factory):
    loop = loop_factory()
    try:
        assert _in_thread(_echo_once, loop) == b"x"
    finally:
        loop.close()       # from the creating thread, with ops in flight


def test_run_forever_on_a_loop_thread_stopped_from_outside(loop_factory):
    loop = loop_factory()
    started = threading.Event()
    loop.call_soon(started.set)
    t = threading.Thread(target=loop.run_forever)
    t.start()
    try:
        assert started.wait(10)
        fut = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "done"), loop)
        assert fut.result(10) == "done"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()
    assert not t.is_alive()


@pytest.mark.ringline_only
def test_closed_unrun_loop_leaves_no_op(loop_factory):
    # Created and closed without ever running: every op it made (the wakeup
    # read) is let go at close, none kept as leaked.  (On io_uring no SQE
    # reached the kernel, and close does not enter the ring to find that out;
    # entering it would end the same way, so this checks the outcome only.)
    import ringline
    before = ringline.live_counts()
    loop_factory().close()
    after = ringline.live_counts()
    assert after["ops_leaked"] == before["ops_leaked"]
    assert after["ops_inflight"] == before["ops_inflight"]


@pytest.mark.ringline_only
def test_io_uring_loop_stays_on_the_thread_that_ran_it(backend, loop_factory):
    if backend != "io_uring":
        pytest.skip("a readiness loop may move between threads")
    loop = loop_factory()
    try:
        assert _in_thread(_echo_once, loop) == b"x"
        with pytest.raises(RuntimeError, match="another thread"):
            _echo_once(loop)
    finally:
        loop.close()


@pytest.mark.ringline_only
@pytest.mark.parametrize("registered", [True, False], ids=["registered", "plain_fd"])
def test_registered_ring_fd_while_running(backend, loop_factory, registered):
    # registered=False is what a kernel before 5.18 gets.
    if backend != "io_uring":
        pytest.skip("io_uring only")
    from ringline._core import core
    old = core.set_registered_ring(registered)
    try:
        loop = loop_factory()
        seen = []

        async def main():
            seen.append(loop.stats()["registered_ring"])
            return await asyncio.sleep(0, "ok")

        try:
            assert loop.stats()["registered_ring"] is False
            assert loop.run_until_complete(main()) == "ok"
            assert _echo_once(loop) == b"x"
            # Unregistered whenever the loop is not running (the slot is the
            # running thread's, and must be freed there).
            assert loop.stats()["registered_ring"] is False
        finally:
            loop.close()
        assert seen == [registered]
    finally:
        core.set_registered_ring(old)
