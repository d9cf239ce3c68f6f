"""Direct resume: a handler's connection waits resumed straight from the
completion batch (_core/runtime/direct.pxi), behaving as an ordinary task.

Each test launches a worker (a thread: the handler reports through a queue)
and drives it with a blocking socket.  Every test runs on every backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
import socket
import sys
import threading
import time

import pytest

from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")

VAR = contextvars.ContextVar("VAR", default="unset")


def _echo(conn):
    def fn(view):
        conn.send_nowait(view)
        return len(view)
    return fn


def _roundtrips(s, n, size=100):
    for i in range(n):
        data = bytes([i % 256]) * size
        s.sendall(data)
        assert recv_exactly(s, size) == data


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "futures"])
def test_echo_steps_directly(backend, direct):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            fn = _echo(conn)
            while await conn.with_data(fn):
                pass
            q.put(asyncio.get_running_loop().stats()["direct_steps"])

    with launched(H, backend, direct_resume=direct) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 50)
        s.close()
        steps = get(q)
    if direct:
        assert steps >= 45      # one per message (a few may coalesce)
    else:
        assert steps == 0


def test_current_task_and_all_tasks(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            seen = []

            def fn(view):
                seen.append(asyncio.current_task())
                conn.send_nowait(view)
                return len(view)

            while await conn.with_data(fn):
                seen.append(asyncio.current_task())
            task = asyncio.current_task()
            q.put((task is conn.task, all(t is task for t in seen), len(seen),
                   task in asyncio.all_tasks(), asyncio.iscoroutine(task.get_coro()),
                   repr(task), len(task.get_stack()),
                   inspect.getcoroutinestate(task.get_coro())))

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 20)
        s.close()
        is_conn_task, same, n, in_all, is_coro, r, nstack, state = get(q)
    assert is_conn_task and same and n >= 20 and in_all and is_coro
    assert state == inspect.CORO_RUNNING   # what anyio asks of a task's coroutine
    assert "_serve_conn" in r          # the handler's coroutine, not a wrapper's name
    assert nstack >= 1                 # get_stack() sees the handler's frame


def test_each_step_of_a_batch_is_its_own_task(backend):
    # Messages for several connections complete in one poll: each direct
    # step names its own task, a plain callback queued from fn runs with no
    # current task, and an ordinary Task step right after a batch (every
    # other message here) enters its task as usual.
    q = queue.Queue()
    nconns, rounds = 8, 20

    class H(ringline.Handler):
        async def on_accept(self, conn):
            me = asyncio.current_task()
            loop = asyncio.get_running_loop()
            wrong, outside, k = [], [], 0

            def fn(view):
                if asyncio.current_task() is not me:
                    wrong.append(repr(asyncio.current_task()))
                loop.call_soon(lambda: outside.append(asyncio.current_task()))
                conn.send_nowait(view)
                return len(view)

            while await conn.with_data(fn):
                k += 1
                if k % 2:
                    await asyncio.sleep(0)
                if asyncio.current_task() is not me:
                    wrong.append("after the await")
            await asyncio.sleep(0)
            q.put((wrong, all(t is None for t in outside), len(outside),
                   loop.stats()["direct_steps"]))

    with launched(H, backend) as (sh, _):
        socks = [client(sh.address()) for _ in range(nconns)]
        for r in range(rounds):
            data = bytes([r]) * 50
            for s in socks:
                s.sendall(data)
            for s in socks:
                assert recv_exactly(s, 50) == data
        for s in socks:
            s.close()
        results = [get(q) for _ in range(nconns)]
    for wrong, none_outside, n, steps in results:
        assert wrong == [] and none_outside and n >= rounds
    assert max(r[3] for r in results) >= rounds


def test_contextvars_are_the_tasks(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            VAR.set("task")
            inner = []

            def fn(view):
                inner.append(VAR.get())
                VAR.set("set-in-fn")        # the task's context: seen after the await
                conn.send_nowait(view)
                return len(view)

            await conn.with_data(fn)
            after = VAR.get()
            VAR.set("task")
            await conn.with_data(fn)
            q.put((inner, after))

    with launched(H, backend) as (sh, _):
        s1, s2 = client(sh.address()), client(sh.address())
        _roundtrips(s1, 2)
        _roundtrips(s2, 2)
        r1, r2 = get(q), get(q)
        s1.close()
        s2.close()
    for inner, after in (r1, r2):
        assert inner == ["task", "task"]
        assert after == "set-in-fn"
    assert VAR.get() == "unset"


def test_fn_exception_reaches_the_await(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            calls = 0

            def fn(view):
                nonlocal calls
                calls += 1
                if calls == 2:
                    raise ValueError("bad message")
                conn.send_nowait(view)
                return len(view)

            while True:
                try:
                    if not await conn.with_data(fn):
                        break
                except ValueError as exc:
                    q.put(str(exc))
                    conn.send_nowait(b"E" * 100)

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 1)
        s.sendall(b"x" * 100)
        assert recv_exactly(s, 100) == b"E" * 100
        assert get(q) == "bad message"
        # The bytes fn raised on stay buffered: the next call gets them.
        assert recv_exactly(s, 100) == b"x" * 100
        _roundtrips(s, 3)
        s.close()


def test_uncaught_exception_ends_the_task(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            def fn(view):
                raise RuntimeError("handler bug")
            try:
                await conn.with_data(fn)
            finally:
                q.put(sys.exc_info()[0].__name__ if sys.exc_info()[0] else None)

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        s.sendall(b"x")
        assert get(q) == "RuntimeError"
        s.settimeout(10)
        assert s.recv(10) == b""        # the worker closed the connection
        s.close()
        assert sh.metrics()["total"]["handler_errors"] == 1


def test_cancel_while_waiting(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            task = asyncio.current_task()
            loop = asyncio.get_running_loop()
            fn = _echo(conn)
            await conn.with_data(fn)            # one direct round first
            loop.call_later(0.05, lambda: q.put(("cancel", task.cancel("stop it"))))
            try:
                await conn.with_data(fn)
            except asyncio.CancelledError as exc:
                q.put(("caught", exc.args, task.cancelling()))
                task.uncancel()
            while await conn.with_data(fn):     # still served directly afterwards
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 1)
        assert get(q) == ("cancel", True)
        assert get(q) == ("caught", ("stop it",), 1)
        _roundtrips(s, 5)
        s.close()


def test_cancelled_task_ends_cancelled(backend):
    q = queue.Queue()
    started = threading.Event()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            fn = _echo(conn)
            await conn.with_data(fn)
            task = asyncio.current_task()
            task.add_done_callback(lambda t: q.put(t.cancelled()))
            asyncio.get_running_loop().call_later(0.05, task.cancel)
            started.set()
            while await conn.with_data(fn):
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 1)
        assert started.wait(10)
        assert get(q) is True
        s.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
def test_timeout(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            fn = _echo(conn)
            async with asyncio.timeout(30):            # met: data comes in time
                await conn.with_data(fn)
            q.put(("in time", asyncio.current_task().cancelling()))
            try:
                async with asyncio.timeout(0.05):      # nothing comes
                    await conn.with_data(fn)
            except TimeoutError:
                q.put(("timed out", asyncio.current_task().cancelling()))
            while await conn.with_data(fn):
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 1)
        assert get(q) == ("in time", 0)
        assert get(q) == ("timed out", 0)
        _roundtrips(s, 3)
        s.close()


def test_self_cancel_in_fn(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            def fn(view):
                asyncio.current_task().cancel()
                conn.send_nowait(view)
                return len(view)
            await conn.with_data(_echo(conn))
            await conn.with_data(fn)                   # the cancel lands at the next wait
            q.put("ran on")
            try:
                await conn.with_data(_echo(conn))
            except asyncio.CancelledError:
                q.put("cancelled at the next wait")
                raise

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 2)
        assert get(q) == "ran on"
        assert get(q) == "cancelled at the next wait"
        s.close()


def test_other_awaits_fall_back(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            lock = asyncio.Lock()
            ev = asyncio.Event()
            loop = asyncio.get_running_loop()
            n = 0
            fn = _echo(conn)
            while True:
                async with lock:
                    if not await conn.with_data(fn):
                        break
                n += 1
                await asyncio.sleep(0)
                if n % 3 == 0:
                    await asyncio.sleep(0.001)
                if n % 5 == 0:
                    loop.call_soon(ev.set)
                    await ev.wait()
                    ev.clear()
                    await asyncio.create_task(asyncio.sleep(0))
            q.put((n, loop.stats()["direct_steps"]))

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 30)
        s.close()
        n, steps = get(q)
    assert n == 30
    assert steps > 0


def test_two_waiters_on_one_connection(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            async def other():
                try:
                    await conn.with_data(lambda v: len(v))
                except RuntimeError as exc:
                    q.put(str(exc))
            loop = asyncio.get_running_loop()
            loop.call_later(0.05, lambda: loop.create_task(other()))
            fn = _echo(conn)
            while await conn.with_data(fn):
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        assert "already waiting" in get(q)
        _roundtrips(s, 3)
        s.close()


def test_send_and_drain_waits(backend):
    q = queue.Queue()
    big = bytes(range(256)) * 4096          # 1 MiB: waits on the send side

    class H(ringline.Handler):
        async def on_accept(self, conn):
            await conn.with_data(lambda v: len(v))
            for _ in range(4):
                await conn.send(big)
            conn.send_nowait(b"end")
            await conn.drain()
            q.put(asyncio.get_running_loop().stats()["direct_steps"])

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"go")
        got = recv_exactly(s, 4 * len(big) + 3)
        assert got == big * 4 + b"end"
        assert get(q) > 0
        s.close()


def test_timers_run_while_a_connection_floods(backend):
    q = queue.Queue()
    stop = threading.Event()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            loop = asyncio.get_running_loop()
            loop.call_later(0.02, lambda: q.put("timer"))
            while await conn.with_data(lambda v: len(v)):
                pass

    def flood(s):
        try:
            while not stop.is_set():
                s.sendall(b"x" * 65536)
        except OSError:
            pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        t = threading.Thread(target=flood, args=(s,))
        t.start()
        try:
            assert get(q, timeout=30) == "timer"
        finally:
            stop.set()
            t.join(10)
            s.close()


def test_budget_defers_the_rest(backend):
    q = queue.Queue()
    nconn = 6

    class H(ringline.Handler):
        async def on_accept(self, conn):
            loop = asyncio.get_running_loop()
            loop._set_direct_budget(1)

            def fn(view):
                if view[0:1] == b"S":
                    # Hold the loop while the test writes to every other
                    # connection: the next poll finds them all at once.
                    q.put("holding")
                    time.sleep(0.3)
                conn.send_nowait(view)
                return len(view)

            q.put("waiting")
            while await conn.with_data(fn):
                pass
            q.put(loop.stats()["direct_deferred"])

    with launched(H, backend) as (sh, _):
        socks = [client(sh.address()) for _ in range(nconn)]
        for _ in socks:
            assert get(q) == "waiting"
        socks[0].sendall(b"S")
        assert get(q) == "holding"
        for s in socks[1:]:
            s.sendall(b"y" * 10)
        assert recv_exactly(socks[0], 1) == b"S"
        for s in socks[1:]:
            assert recv_exactly(s, 10) == b"y" * 10
        for s in socks:
            s.close()
        deferred = max(get(q) for _ in range(nconn))
    assert deferred >= 1


def test_debug_mode_takes_the_ordinary_path(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            base = loop.stats()["direct_steps"]
            fn = _echo(conn)
            while await conn.with_data(fn):
                pass
            q.put(loop.stats()["direct_steps"] - base)

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 10)
        s.close()
        assert get(q) == 0


def test_direct_coro_rejects_bad_arguments(loop_factory):
    import contextvars as cv
    from ringline._core.core import DirectCoro
    loop = loop_factory()
    try:
        async def coro():
            return 1
        c = coro()
        with pytest.raises(TypeError, match="coroutine"):
            DirectCoro(1, loop, cv.copy_context())
        with pytest.raises(TypeError):
            DirectCoro(c, None, cv.copy_context())
        with pytest.raises(TypeError, match="Context"):
            DirectCoro(c, loop, {})
        c.close()
    finally:
        loop.close()


def test_anyio_cancel_scope_in_a_handler(backend):
    # anyio asks the task's coroutine for its state (inspect.getcoroutinestate)
    # when it delivers a cancel scope's cancellation.
    anyio = pytest.importorskip("anyio", reason="anyio is in the integration extra")
    q = queue.Queue()

    class H(ringline.Handler):
        async def on_accept(self, conn):
            fn = _echo(conn)
            await conn.with_data(fn)
            try:
                with anyio.fail_after(0.05):
                    await conn.with_data(fn)        # nothing comes
            except TimeoutError:
                q.put("timed out")
            while await conn.with_data(fn):
                pass

    with launched(H, backend) as (sh, _):
        s = client(sh.address())
        _roundtrips(s, 1)
        assert get(q) == "timed out"
        _roundtrips(s, 3)
        s.close()
