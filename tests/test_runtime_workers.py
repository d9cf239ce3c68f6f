"""Builder, workers, shutdown, signals, errors, metrics, UDP, pools (issue 6).

Process workers (the default) and thread workers, on every backend.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from _runtime_helpers import client, get, launched, recv_exactly

pytestmark = pytest.mark.ringline_only

ringline = pytest.importorskip("ringline")


from ringline.runtime._echo import EchoWithData as Echo  # noqa: E402  (the shipped handler)


class WhoAmI(ringline.Handler):
    """Replies with the worker's pid and id."""

    def __init__(self, worker_id=None):
        self.worker_id = worker_id

    @classmethod
    def create_for_worker(cls, worker_id):
        return cls(worker_id)

    async def on_accept(self, conn):
        conn.send_nowait(b"%d %d\n" % (os.getpid(), self.worker_id))
        await conn.with_data(lambda v: len(v))


def _read_line(addr):
    """Connect, read one line the server sends, close."""
    s = client(addr)
    line = b""
    while not line.endswith(b"\n"):
        chunk = s.recv(100)
        assert chunk
        line += chunk
    s.close()
    return line


def _ask(addr):
    pid, wid = _read_line(addr).split()
    return int(pid), int(wid)


# ---- launching -------------------------------------------------------------------------

def test_process_workers_spread_connections(backend):
    with launched(WhoAmI, backend, workers=2, worker_mode="process") as (sh, workers):
        assert [w.mode for w in workers] == ["process", "process"]
        assert all(w.ready and w.pid != os.getpid() for w in workers)
        seen = {_ask(sh.address()) for _ in range(60)}
        pids = {p for p, _ in seen}
        assert pids <= {w.pid for w in workers}
        assert len(pids) == 2                  # SO_REUSEPORT spread them
        assert sh.shutdown() is True
    assert [w.exitcode for w in workers] == [0, 0]
    assert not any(w.failed for w in workers)


def test_thread_workers_and_pinning(backend):
    cpus = sorted(os.sched_getaffinity(0))
    with launched(WhoAmI, backend, workers=2, worker_mode="thread",
                  pin_to_core=True, core_offset=1) as (sh, workers):
        assert [w.cpu for w in workers] == [cpus[1 % len(cpus)], cpus[2 % len(cpus)]]
        assert {_ask(sh.address())[0] for _ in range(10)} == {os.getpid()}
    # Pinning a worker thread does not pin the launcher.
    assert sorted(os.sched_getaffinity(0)) == cpus


def test_workers_default_to_one_per_cpu(backend):
    with launched(Echo, backend, workers=0, worker_mode="thread") as (sh, workers):
        assert len(workers) == len(os.sched_getaffinity(0))


def test_client_only_on_start(backend):
    q = queue.Queue()
    with launched(Echo, backend, tcp=True) as (srv, _):
        addr = srv.address()

        class Client(ringline.Handler):
            async def on_start(self):
                conn = await ringline.connect(addr, timeout=5)
                async with conn:
                    await conn.send(b"from on_start")
                    q.put(await conn.with_bytes(lambda b: (q.put(b), len(b))[1]))

        sh, workers = ringline.Builder(ringline.Config(
            backend=backend, workers=1, worker_mode="thread")).launch(Client)
        assert get(q) == b"from on_start"
        assert get(q) == 13
        # A client-only worker ends when on_start does.
        assert sh.join(10)
        assert workers[0].exitcode == 0
        sh.shutdown()


_launch_cv = contextvars.ContextVar("launch_cv", default="unset")
_made_cv = contextvars.ContextVar("made_cv", default="unset")
_start_cv = contextvars.ContextVar("start_cv", default="unset")


class CtxProbe(ringline.Handler):
    """Replies with what its on_accept task sees of three ContextVars: set
    before launch(), in create_for_worker() and in on_start()."""

    started = False

    @classmethod
    def create_for_worker(cls, worker_id):
        _made_cv.set("create_for_worker")
        return cls()

    async def on_start(self):
        _start_cv.set("on_start")
        self.started = True

    async def on_accept(self, conn):
        conn.send_nowait(b"%s %s %s %d\n" % (
            _launch_cv.get().encode(), _made_cv.get().encode(),
            _start_cv.get().encode(), self.started))
        await conn.with_data(lambda v: len(v))


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_on_accept_task_context(backend, mode):
    """An on_accept task copies the worker's context as it was when the
    worker started accepting: create_for_worker()'s values, not on_start's
    (a task of its own); the launcher's only in a forked worker (a worker
    thread starts with an empty context)."""
    token = _launch_cv.set("launcher")
    try:
        with launched(CtxProbe, backend, worker_mode=mode) as (sh, _):
            line = _read_line(sh.address())
    finally:
        _launch_cv.reset(token)
    launch, made, start, started = line.split()
    assert launch == (b"launcher" if mode == "process" else b"unset")
    assert made == b"create_for_worker"
    assert (start, started) == (b"unset", b"1")


# ---- errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["process", "thread"])
def test_launch_failing_part_way_cleans_up(backend, mode, caplog):
    class FailsOnOne(ringline.Handler):
        @classmethod
        def create_for_worker(cls, worker_id):
            if worker_id == 1:
                raise ValueError("no worker 1 today")
            return cls()

    b = ringline.Builder(ringline.Config(backend=backend, workers=2, worker_mode=mode,
                                         shutdown_timeout=1, pin_to_core=False))
    b.bind(("127.0.0.1", 0))
    with pytest.raises(ringline.WorkerError) as ei:
        b.launch(FailsOnOne)
    assert "no worker 1 today" in str(ei.value)
    assert "ValueError" in (ei.value.traceback or "")
    # Nothing is left running: no worker thread or process.
    time.sleep(0.05)
    assert not [t for t in threading.enumerate() if t.name.startswith("ringline-worker")]


def test_bind_failure_starts_nothing(backend):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        b = ringline.Builder(ringline.Config(backend=backend, workers=1)).bind(s.getsockname())
        with pytest.raises(OSError):
            b.launch(Echo)
    finally:
        s.close()


@pytest.mark.parametrize("mode", ["process", "thread"])
def test_worker_that_raises_is_reported(backend, mode, caplog):
    class Crashes(ringline.Handler):
        async def on_start(self):
            await asyncio.sleep(0.01)
            raise RuntimeError("boom in on_start")

    with launched(Crashes, backend, workers=1, worker_mode=mode) as (sh, workers):
        assert workers[0].join(10)
        w = workers[0]
        assert w.failed and w.exitcode == 1
        assert "boom in on_start" in str(w.error)
        assert "RuntimeError" in w.error.traceback
        assert sh.errors == [w.error]
        with pytest.raises(ringline.WorkerError):
            w.raise_for_error()
    assert any("boom in on_start" in r.getMessage() for r in caplog.records)


def test_worker_killed_is_reported(backend, caplog):
    with launched(Echo, backend, workers=2, worker_mode="process") as (sh, workers):
        os.kill(workers[0].pid, signal.SIGKILL)
        assert workers[0].join(10)
        assert workers[0].exitcode == -signal.SIGKILL
        assert "killed by signal 9" in str(workers[0].error)
        # The other worker is unaffected.
        assert workers[1].is_alive()


def test_handler_exception_is_logged_not_fatal(backend):
    class Raises(ringline.Handler):
        async def on_accept(self, conn):
            await conn.with_data(lambda v: len(v))
            raise KeyError("handler bug")

    with launched(Raises, backend) as (sh, workers):
        for _ in range(2):
            s = client(sh.address())
            s.sendall(b"x")
            assert s.recv(10) == b""            # closed after the handler raised
            s.close()
        deadline = time.monotonic() + 5
        while ringline.metrics()["total"]["handler_errors"] < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ringline.metrics()["total"]["handler_errors"] >= 2
        assert workers[0].is_alive() and not workers[0].failed


# ---- shutdown ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["process", "thread"])
def test_shutdown_with_open_connections(backend, mode):
    with launched(Echo, backend, workers=2, worker_mode=mode,
                  shutdown_timeout=0.5) as (sh, workers):
        conns = [client(sh.address()) for _ in range(6)]
        for c in conns:
            c.sendall(b"hi")
            assert recv_exactly(c, 2) == b"hi"
        t0 = time.monotonic()
        assert sh.shutdown() is True
        assert time.monotonic() - t0 < 5
        assert all(w.exitcode == 0 for w in workers)
        for c in conns:
            c.settimeout(5)
            try:
                assert c.recv(10) == b""
            except ConnectionResetError:
                pass
            c.close()
        with pytest.raises(OSError):
            client(sh.address(), timeout=1)


def test_graceful_shutdown_lets_handlers_finish(backend):
    q = queue.Queue()

    class Slow(ringline.Handler):
        async def on_accept(self, conn):
            await conn.with_data(lambda v: len(v))
            await asyncio.sleep(0.2)
            await conn.send(b"finished")
            q.put("done")

    with launched(Slow, backend, shutdown_timeout=3) as (sh, _):
        c = client(sh.address())
        c.sendall(b"go")
        time.sleep(0.05)
        sh.shutdown()
        assert get(q) == "done"
        assert recv_exactly(c, 8) == b"finished"
        c.close()


def test_request_shutdown_stops_only_that_worker(backend):
    class Stopper(ringline.Handler):
        @classmethod
        def create_for_worker(cls, worker_id):
            h = cls()
            h.wid = worker_id
            return h

        def on_tick(self, ctx):
            if self.wid == 0 and not ctx.shutting_down:
                ringline.request_shutdown()

    with launched(Stopper, backend, workers=2, worker_mode="thread") as (sh, workers):
        assert workers[0].join(10)
        assert workers[0].exitcode == 0 and not workers[0].failed
        time.sleep(0.1)
        assert workers[1].is_alive()
    with pytest.raises(RuntimeError):
        ringline.request_shutdown()


def test_tick_and_notify(backend):
    q = queue.Queue()

    class H(ringline.Handler):
        def __init__(self):
            self.ticks = 0

        def on_tick(self, ctx):
            self.ticks += 1

        def on_notify(self, ctx):
            q.put((ctx.worker_id, self.ticks))

    with launched(H, backend, workers=1, tick_interval=0.01) as (sh, workers):
        time.sleep(0.2)
        sh.notify()
        wid, ticks = get(q)
        assert wid == 0 and ticks >= 5        # idle loop still ticks every tick_interval
        workers[0].notify()
        assert get(q)[1] >= ticks


def test_real_sigterm_shuts_down_the_cli_server(backend):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ringline", "echo", "--workers", "2", "--port", str(port),
         "--backend", backend, "--shutdown-timeout", "0.5"],
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "ringline echo" in line, line
        c = client(("127.0.0.1", port))
        c.sendall(b"alive")
        assert recv_exactly(c, 5) == b"alive"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        c.settimeout(5)
        assert c.recv(10) == b""               # the open connection was closed
        c.close()
        out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
        assert out.stdout.strip() == ""         # no worker left behind
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_to_one_worker_is_a_clean_exit(backend):
    with launched(Echo, backend, workers=2, worker_mode="process") as (sh, workers):
        os.kill(workers[1].pid, signal.SIGTERM)
        assert workers[1].join(10)
        assert workers[1].exitcode == 0 and not workers[1].failed
        assert workers[0].is_alive()


# ---- metrics -------------------------------------------------------------------------------------

def test_metrics_and_prometheus(backend):
    with launched(Echo, backend, workers=2, worker_mode="process") as (sh, workers):
        for _ in range(10):
            c = client(sh.address())
            c.sendall(b"12345")
            assert recv_exactly(c, 5) == b"12345"
            c.close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            m = sh.metrics()                    # this launch's counters
            if m["total"]["connections_closed"] >= 10:
                break
            time.sleep(0.01)
        t = m["total"]
        assert t["connections_accepted"] == 10 and t["connections_closed"] == 10
        assert t["connections_active"] == 0
        assert t["bytes_in"] == 50 and t["bytes_out"] == 50
        assert t["sqes_submitted"] > 0 and t["cqes_processed"] > 0 and t["io_uring_enter"] > 0
        assert [w["worker"] for w in m["workers"]] == [0, 1]
        # ringline.metrics() aggregates every running launch (and "local"
        # connections of this process) into the same format.
        g = ringline.metrics()
        assert g["total"]["connections_accepted"] >= 10
        assert g["total"]["bytes_in"] >= 50
        text = ringline.render_prometheus(m)
        assert "# TYPE ringline_connections_accepted_total counter" in text
        assert 'ringline_bytes_in_total{worker="0"}' in text
        assert "ringline_connections_active" in text



def test_metric_slots_defined_once():
    # The compiled core defines the slots (M_* constants with their names);
    # the Python modules only derive from METRIC_NAMES.
    from ringline._core import core
    from ringline.runtime import _metrics, _udp, _worker
    names = core.METRIC_NAMES
    assert len(names) == len(set(names)) == core.METRIC_SLOTS == len(core.METRIC_HELP)
    # The public names and their order (the shared-memory layout) are API.
    assert names == (
        "connections_accepted", "connections_outbound", "connections_closed", "bytes_in",
        "bytes_out", "sqes_submitted", "cqes_processed", "io_uring_enter", "buffer_ring_empty",
        "send_pool_exhausted", "connections_rejected", "handler_errors", "udp_datagrams_in",
        "udp_datagrams_out", "udp_send_exhausted", "loop_iterations", "direct_table_full")
    assert _metrics.NAMES == names
    assert [c[0] for c in _metrics.COUNTERS] == list(names)
    assert [c[2] for c in _metrics.COUNTERS] == list(core.METRIC_HELP)
    assert all(h for h in core.METRIC_HELP)
    assert names[_worker._M_REJECTED] == "connections_rejected"
    assert names[_worker._M_HANDLER_ERRORS] == "handler_errors"
    assert names[_worker._M_LOOP_ITERATIONS] == "loop_iterations"
    assert names[_worker._M_TABLE_FULL] == "direct_table_full"
    assert names[_udp._M_UDP_IN] == "udp_datagrams_in"
    assert names[_udp._M_UDP_OUT] == "udp_datagrams_out"
    assert names[_udp._M_UDP_EXHAUSTED] == "udp_send_exhausted"
    # Slot i of a block is what metrics() reports under names[i].
    area = _metrics.MetricsArea(2)
    block = area.block(1)
    for i in range(core.METRIC_SLOTS):
        for _ in range(i + 1):
            block.add(i)
    assert block.values() == list(range(1, core.METRIC_SLOTS + 1))
    w = area.worker(1)
    assert all(w[name] == i + 1 for i, name in enumerate(names))
    assert not any(area.worker(0)[name] for name in names)

# ---- UDP --------------------------------------------------------------------------------------------

def test_udp(backend):
    q = queue.Queue()

    class Udp(ringline.Handler):
        async def on_udp_bind(self, udp):
            q.put(udp.local_addr)
            while True:
                data, addr = await udp.recv_from()
                if data == b"exhaust":
                    try:
                        for _ in range(100):
                            udp.send_to(b"z", addr)
                    except ringline.UdpSendPoolExhausted as exc:
                        q.put(str(exc))
                    await udp.send_ready()
                    q.put("ready")
                    continue
                await udp.send_ready()
                udp.send_to(data.upper(), addr)

    with launched(Udp, backend, tcp=False, udp=True, udp_send_slots=2) as (sh, _):
        addr = get(q)
        assert addr == sh.address("udp")
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(5)
        c.sendto(b"hello", addr)
        assert c.recvfrom(100)[0] == b"HELLO"
        c.sendto(b"exhaust", addr)
        assert "udp_send_slots" in get(q)
        assert get(q) == "ready"
        c.close()


# ---- pools ----------------------------------------------------------------------------------------

def test_spawn_blocking_and_resolve(backend):
    q = queue.Queue()

    class Pools(ringline.Handler):
        async def on_start(self):
            loop_thread = threading.get_ident()
            tid = await ringline.spawn_blocking(threading.get_ident)
            q.put(tid != loop_thread)
            q.put(await ringline.spawn_blocking(sum, [1, 2, 3]))
            q.put(await ringline.resolve("localhost", 80))

    sh, workers = ringline.Builder(ringline.Config(backend=backend, workers=1,
                                                   worker_mode="thread")).launch(Pools)
    try:
        assert get(q) is True
        assert get(q) == 6
        addrs = get(q)
        assert addrs and all(isinstance(a, tuple) and a[1][1] == 80 for a in addrs)
        assert sh.join(10) and not workers[0].failed
    finally:
        sh.shutdown()


def test_disabled_pools_raise(backend):
    q = queue.Queue()

    class Pools(ringline.Handler):
        async def on_start(self):
            for call in (lambda: ringline.spawn_blocking(print),
                         lambda: ringline.resolve("localhost", 80)):
                try:
                    call()
                except ringline.PoolDisabledError as exc:
                    q.put(str(exc))
            try:
                await ringline.connect(("localhost", 1), timeout=2)
            except ringline.PoolDisabledError as exc:
                q.put("connect: " + str(exc))

    sh, workers = ringline.Builder(ringline.Config(
        backend=backend, workers=1, worker_mode="thread",
        blocking_threads=0, resolver_threads=0)).launch(Pools)
    try:
        assert "blocking_threads is 0" in get(q)
        assert "resolver_threads is 0" in get(q)
        assert "resolver_threads is 0" in get(q)
    finally:
        sh.shutdown()


def test_pools_outside_workers(loop, run):
    async def main():
        assert await ringline.spawn_blocking(pow, 2, 10) == 1024
        res = await ringline.resolve("127.0.0.1", 9)
        return res

    assert run(main()) == [(socket.AF_INET, ("127.0.0.1", 9))]


def test_max_connections(backend):
    q = queue.Queue()

    class Hold(ringline.Handler):
        async def on_accept(self, conn):
            q.put("in")
            while await conn.with_data(lambda v: len(v)):
                pass

    with launched(Hold, backend, max_connections=2) as (sh, _):
        a, b = client(sh.address()), client(sh.address())
        assert get(q) == get(q) == "in"
        c = client(sh.address())
        c.settimeout(5)
        assert c.recv(10) == b""               # accepted and closed at once
        assert sh.metrics()["total"]["connections_rejected"] == 1
        for s in (a, b, c):
            s.close()


_EXIT_SCRIPT = r"""
import os, sys, time, ringline
class Echo(ringline.Handler):
    async def on_accept(self, conn):
        while await conn.with_data(lambda v: len(v)):
            pass
sh, workers = ringline.Builder(ringline.Config(workers=2, backend=sys.argv[1],
    shutdown_timeout=0.5)).bind(("127.0.0.1", 0)).launch(Echo)
print(" ".join(str(w.pid) for w in workers), flush=True)
if sys.argv[2] == "drop":
    del sh, workers
    import gc; gc.collect()
    print("dropped", flush=True)
    time.sleep(3)
# "exit": the program ends with the handle alive
"""


@pytest.mark.parametrize("how", ["exit", "drop"])
def test_shutdown_when_program_exits_or_handle_dropped(backend, how):
    proc = subprocess.Popen([sys.executable, "-c", _EXIT_SCRIPT, backend, how],
                            stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
        if how == "drop":
            assert proc.stdout.readline().strip() == "dropped"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = [p for p in pids if _alive(p)]
            if not alive:
                break
            time.sleep(0.02)
        assert not alive, f"workers {alive} outlived their ShutdownHandle"
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_launch_from_a_running_loop(backend, loop, run):
    async def main():
        sh, workers = ringline.Builder(ringline.Config(
            backend=backend, workers=2, worker_mode="process", shutdown_timeout=0.5,
            pin_to_core=False)).bind(("127.0.0.1", 0)).launch(Echo)
        try:
            conn = await ringline.connect(sh.address(), timeout=5)
            async with conn:
                await conn.send(b"from inside a loop")
                return await conn.with_bytes(lambda b: len(b))
        finally:
            assert sh.shutdown()
            assert [w.exitcode for w in workers] == [0, 0]

    assert run(main(), timeout=30) == 18
