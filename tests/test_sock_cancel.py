"""Cancellation races: what the kernel delivered for a cancelled operation
is handed to the next call on the socket, in order, and nothing hangs.

asyncio gets this by reading only while the future is pending (its reader
callback returns early once the future is done).  ringline's operations are
in the kernel's hands (io_uring) or tried at once (poll backend), so a result
can land after the cancel, or after the future was resolved but before the
cancelled task looked at it: the loop keeps it for the next call (the
"stash", _core/loop/ops.pxi).  Covered: sock_recv, sock_recv_into, sock_recvfrom,
sock_recvfrom_into, sock_accept, sock_sendall (a cancelled sendall may have
sent a prefix; nothing after it is reordered or duplicated), ConnCtx
with_data/send, and a stream transport's pause_reading/resume_reading while
a receive is in flight.

First regressions of fixed shapes, then seeded random drivers: a peer that
sends at random moments against cancels at random moments; every byte
(datagram, connection) must come out once, in order.  Rounds per driver:
RINGLINE_CANCEL_ROUNDS (default 400), seed: RINGLINE_CANCEL_SEED.  Soak:

    RINGLINE_CANCEL_ROUNDS=10000 python -m pytest tests/test_sock_cancel.py -k random

With RINGLINE_TEST_LOOP=asyncio the same tests run on stock asyncio, whose
own guarantee is narrower: a cancel that lands after its reader callback
read the data but before the task resumed loses that data (the task raises
CancelledError over the result).  On asyncio the drivers therefore never
yield twice between a peer's send and a cancel; on ringline they do.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
import random
import socket

import pytest

import _loops

ROUNDS = int(os.environ.get("RINGLINE_CANCEL_ROUNDS", "400"))
SEED = int(os.environ.get("RINGLINE_CANCEL_SEED", "20240611"))
ASYNCIO = _loops.is_asyncio_mode()
# The random drivers' time limit grows with the rounds (pytest-timeout's
# marker wins over --timeout).
soak_timeout = pytest.mark.timeout(max(60, ROUNDS // 40))
# Items the peer lets the reader fall behind by: a full socket (or UDP
# receive buffer, or listen backlog) would stall or drop them.
BACKLOG = 64


def _nb(sock):
    sock.setblocking(False)
    return sock


def _udp_pair():
    a = _nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = _nb(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    return a, b


def _unix_listener():
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind("")          # Linux autobind: an abstract address, no file
    lsock.listen(128)
    return _nb(lsock)


def _send_some(sock, data):
    """send() on a non-blocking socket: the part the kernel took."""
    try:
        return data[:sock.send(data)]
    except BlockingIOError:
        return b""


async def _settle(*tasks):
    await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------
# the issue's scenario, per operation
# ---------------------------------------------------------------------------

class _Case:
    """One receiving operation: its sockets, how to start it, how the peer
    produces one item (a byte, a datagram, a connection), and what the
    operation's result says it got."""

    def __init__(self, loop, method):
        self.loop = loop
        self.method = method
        self.socks = []
        if method in ("sock_recv", "sock_recv_into"):
            self.a, self.b = socket.socketpair()
            _nb(self.a), _nb(self.b)
        elif method in ("sock_recvfrom", "sock_recvfrom_into"):
            self.a, self.b = _udp_pair()
        else:
            self.a = _unix_listener()
            self.b = None
        self.socks += [s for s in (self.a, self.b) if s is not None]

    def close(self):
        for s in self.socks:
            s.close()

    def start(self):
        loop, a, m = self.loop, self.a, self.method
        if m == "sock_recv":
            return loop.sock_recv(a, 1), None
        if m == "sock_recvfrom":
            return loop.sock_recvfrom(a, 16), None
        if m == "sock_accept":
            return loop.sock_accept(a), None
        buf = bytearray(16 if m == "sock_recvfrom_into" else 1)
        return getattr(loop, m)(a, buf), buf

    def item(self, result, buf):
        m = self.method
        if m == "sock_recv":
            return result
        if m == "sock_recv_into":
            return bytes(buf[:result])
        if m == "sock_recvfrom":
            assert result[1] == self.b.getsockname()
            return result[0]
        if m == "sock_recvfrom_into":
            assert result[1] == self.b.getsockname()
            return bytes(buf[:result[0]])
        conn, _ = result
        with conn:
            return conn.recv(16)        # the client's name, sent on connect

    async def produce(self, name, awaited):
        """The peer sends `name` (one byte / one datagram / a connection
        that says `name`); awaited: through the loop, as a peer task on the
        same loop would."""
        loop, m = self.loop, self.method
        if m in ("sock_recv", "sock_recv_into"):
            if awaited:
                await loop.sock_sendall(self.b, name)
            else:
                self.b.send(name)
        elif m in ("sock_recvfrom", "sock_recvfrom_into"):
            if awaited:
                await loop.sock_sendto(self.b, name, self.a.getsockname())
            else:
                self.b.sendto(name, self.a.getsockname())
        else:
            c = _nb(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            self.socks.append(c)
            if awaited:
                await loop.sock_connect(c, self.a.getsockname())
            else:
                c.connect(self.a.getsockname())    # AF_UNIX: done at once
            c.send(name)


RECV_METHODS = ["sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
                "sock_accept"]


@pytest.mark.parametrize("peer", ["awaited", "send_and_yield", "send"])
@pytest.mark.parametrize("method", RECV_METHODS)
def test_issue_recv_cancelled_after_wait_timeout(loop, run, method, peer):
    """The issue: the operation starts inside asyncio.wait(timeout=...),
    which times out; the peer then sends one byte; the client cancels the
    pending task and calls the operation again at once: that call returns
    the byte (the issue used timeout=1; 0.05 s shows the same)."""
    case = _Case(loop, method)

    async def main():
        coro, buf = case.start()
        pending = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait([pending], timeout=0.05)
        assert not done
        if peer == "awaited":
            await case.produce(b"x", awaited=True)
        else:
            await case.produce(b"x", awaited=False)
            if peer == "send_and_yield":
                await asyncio.sleep(0)
        assert not pending.done()
        pending.cancel()
        coro, buf2 = case.start()
        async with asyncio.timeout(2):
            second = await coro
        await _settle(pending)
        assert pending.cancelled()
        assert case.item(second, buf2) == b"x"

    try:
        run(main())
    finally:
        case.close()


@pytest.mark.parametrize("method", RECV_METHODS)
def test_cancel_before_the_result_is_seen_keeps_order(loop, run, method):
    """The operation gets its item as soon as it starts (already queued);
    it is cancelled before the task saw it, and the next operation starts
    at once, before the loop heard of the cancel.  The items come out in
    the peer's order, whoever gets them."""
    case = _Case(loop, method)

    async def main():
        await case.produce(b"1", awaited=False)
        coro, buf = case.start()
        first = asyncio.ensure_future(coro)
        await asyncio.sleep(0)              # `first` starts its operation
        first.cancel()
        await case.produce(b"2", awaited=False)
        coro, buf2 = case.start()
        async with asyncio.timeout(2):
            second = await coro             # starts in this very step
        await _settle(first)
        items = []
        if not first.cancelled():
            items.append(case.item(first.result(), buf))
        items.append(case.item(second, buf2))
        while len(items) < 2:
            coro, buf3 = case.start()
            items.append(case.item(await asyncio.wait_for(coro, 2), buf3))
        assert items == [b"1", b"2"]

    try:
        run(main())
    finally:
        case.close()


@pytest.mark.parametrize("method", RECV_METHODS)
def test_queued_operation_cancelled_while_waiting_its_turn(loop, run, method):
    """Operations started behind one being cancelled wait their turn; one of
    them cancelled while waiting must not strand those behind it."""
    case = _Case(loop, method)

    async def main():
        coro, _ = case.start()
        t1 = asyncio.ensure_future(coro)
        await asyncio.sleep(0.01)                       # in flight
        t1.cancel()
        coro, _ = case.start()
        t2 = asyncio.ensure_future(coro)
        coro, buf3 = case.start()
        t3 = asyncio.ensure_future(coro)
        await asyncio.sleep(0)                          # t2, t3 start
        t2.cancel()
        await case.produce(b"z", awaited=False)
        assert case.item(await asyncio.wait_for(t3, 2), buf3) == b"z"
        await _settle(t1, t2)

    try:
        run(main())
    finally:
        case.close()


@pytest.mark.ringline_only
def test_queued_read_of_a_socket_closed_meanwhile_fails(loop, run):
    """A read waiting for its turn when its socket is closed fails with
    EBADF: it is not started on a number that may name another file."""
    a, b = socket.socketpair()
    _nb(a), _nb(b)

    async def main():
        t1 = asyncio.ensure_future(loop.sock_recv(a, 1))
        await asyncio.sleep(0.01)                       # in flight
        t2 = asyncio.ensure_future(loop.sock_recv(a, 1))
        await asyncio.sleep(0)                          # waits behind t1
        t1.cancel()
        a.close()
        with pytest.raises(OSError) as info:
            await asyncio.wait_for(t2, 2)
        assert info.value.errno == errno.EBADF
        await _settle(t1)

    try:
        run(main())
    finally:
        a.close()
        b.close()


def _tiny_buffers(a, b):
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


async def _read_to_eof(loop, sock):
    out = bytearray()
    while True:
        data = await loop.sock_recv(sock, 65536)
        if not data:
            return bytes(out)
        out += data


@pytest.mark.parametrize("peer", ["awaited", "send_and_yield"])
def test_issue_sendall_cancelled_mid_send(loop, run, peer):
    """sock_sendall of more than the socket holds, inside a timed-out wait;
    the peer reads part of it; the sender cancels and sends a tail: the peer
    gets a prefix of the first message, then the whole tail."""
    a, b = socket.socketpair()
    _nb(a), _nb(b)
    _tiny_buffers(a, b)
    big = random.Random(3).randbytes(1 << 20)
    tail = b"<tail>" * 1000

    async def main():
        pending = asyncio.ensure_future(loop.sock_sendall(a, big))
        done, _ = await asyncio.wait([pending], timeout=0.05)
        assert not done
        if peer == "awaited":
            head = await loop.sock_recv(b, 3000)
        else:
            head = b.recv(3000)
            await asyncio.sleep(0)
        pending.cancel()
        reader = asyncio.ensure_future(_read_to_eof(loop, b))
        await asyncio.wait_for(loop.sock_sendall(a, tail), 5)
        a.shutdown(socket.SHUT_WR)
        stream = head + await asyncio.wait_for(reader, 5)
        await _settle(pending)
        k = len(stream) - len(tail)
        assert stream[k:] == tail
        assert stream[:k] == big[:k]

    try:
        run(main())
    finally:
        a.close()
        b.close()


def test_sendall_cancelled_before_the_loop_heard_keeps_order(loop, run):
    """A sendall cancelled right after it started, and the next one issued
    at once: a prefix of the first, then all of the second."""
    a, b = socket.socketpair()
    _nb(a), _nb(b)
    _tiny_buffers(a, b)
    big = random.Random(4).randbytes(1 << 18)
    second = b"<second>" * 5000

    async def main():
        first = asyncio.ensure_future(loop.sock_sendall(a, big))
        await asyncio.sleep(0)              # starts, sends what fits
        first.cancel()
        reader = asyncio.ensure_future(_read_to_eof(loop, b))
        await asyncio.wait_for(loop.sock_sendall(a, second), 5)
        a.shutdown(socket.SHUT_WR)
        stream = await asyncio.wait_for(reader, 5)
        await _settle(first)
        k = len(stream) - len(second)
        assert stream[k:] == second
        assert stream[:k] == big[:k]
        if not first.cancelled():
            assert k == len(big)

    try:
        run(main())
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# seeded random drivers
# ---------------------------------------------------------------------------

class _Schedule:
    """The random moments of one driver.  `yield_()` is one loop iteration;
    on asyncio at most one of them separates a peer's send from a cancel
    (its own limit, see the module docstring)."""

    def __init__(self, rnd):
        self.rnd = rnd
        self.since_send = None      # yields since the peer's last send

    def sent(self):
        self.since_send = 0

    def may_yield(self):
        return not ASYNCIO or self.since_send is None or self.since_send < 1

    async def yield_(self):
        if self.since_send is not None:
            self.since_send += 1
        await asyncio.sleep(0)

    def settled(self):
        self.since_send = None


def _stream_producer(loop, sock, sent, got, counter):
    """A peer that sends 1-6 numbered bytes per turn (through the loop when
    awaited, else as much as send() takes), at most BACKLOG ahead."""
    async def produce(rnd, awaited):
        if len(sent) - len(got) > BACKLOG:
            return
        n = rnd.randint(1, 6)
        data = bytes((counter[0] + i) % 251 for i in range(n))
        if awaited:
            await loop.sock_sendall(sock, data)
        else:
            data = _send_some(sock, data)
        counter[0] += len(data)
        sent.extend(data)
    return produce


def _draining_reader(loop, sock, stream):
    """A peer that reads, making room for the sender, and is itself
    cancelled at random; always through the loop (a plain recv() would
    overtake what a cancelled read left in ringline's stash)."""
    async def produce(rnd, awaited):
        fut = asyncio.ensure_future(loop.sock_recv(sock, rnd.choice([1, 100, 5000, 70000])))
        done, _ = await asyncio.wait([fut], timeout=0.0002 if awaited else 0)
        if not done:
            fut.cancel()
        await _settle(fut)
        if not fut.cancelled():
            stream.extend(fut.result())
    return produce


async def _collect_rest(got, sent, receive, record, check, what):
    """After the random rounds: receive() until everything sent has been
    recorded (record(result) adds it to got), each wait bounded."""
    while len(got) < len(sent):
        try:
            record(await asyncio.wait_for(receive(), 2))
        except asyncio.TimeoutError:
            pytest.fail(f"{len(sent) - len(got)} of {len(sent)} {what} never came")
        check()
    assert got == sent


async def _drive(loop, rnd, rounds, start, produce, harvest, check):
    """The common loop.  Each round starts one operation, either as a task
    (cancelled at a random moment, or awaited) or inline (cancelled by a
    random timeout); between the two the peer produces and the loop turns.
    harvest(result, ctx) records results in the order the operations
    started; check() says the record is still a prefix of what was sent."""
    sched = _Schedule(rnd)
    line = collections.deque()       # (future, ctx) in start order
    round_ = 0

    def collect():
        while line and line[0][0].done():
            fut, ctx = line.popleft()
            if not fut.cancelled() and fut.exception() is None:
                harvest(fut.result(), ctx)
        try:
            check()
        except AssertionError as exc:
            raise AssertionError(f"round {round_} (RINGLINE_CANCEL_SEED={SEED}): {exc}") from None

    for round_ in range(rounds):
        if rnd.random() < 0.25:
            # Inline: the operation starts in this step, right after the
            # previous round's cancel, before the loop ran its callbacks.
            coro, ctx = start()
            fut = loop.create_future()
            try:
                async with asyncio.timeout(rnd.choice([0, 0.0002, 0.001])):
                    fut.set_result(await coro)
            except TimeoutError:
                fut.cancel()
            line.append((fut, ctx))
            sched.settled()
            collect()
            continue
        coro, ctx = start()
        task = asyncio.ensure_future(coro)
        line.append((task, ctx))
        for _ in range(rnd.randint(0, 4)):
            r = rnd.random()
            if r < 0.35:
                await produce(rnd, awaited=rnd.random() < 0.3)
                sched.sent()
            elif r < 0.8:
                if sched.may_yield():
                    await sched.yield_()
            else:
                await asyncio.wait([task], timeout=rnd.choice([0, 0.0002]))
                if task.done():
                    sched.settled()
        if rnd.random() < 0.7:
            task.cancel()
            if rnd.random() < 0.5:
                continue        # next round starts before this one settled
            await _settle(task)
        else:
            while not task.done():
                # Awaited: the peer produces until the operation completes.
                await produce(rnd, awaited=False)
                await asyncio.wait([task], timeout=0.0005)
        sched.settled()
        collect()
    await _settle(*[f for f, _ in line])
    collect()


def _round_seed(name, backend):
    return f"{SEED}:{name}:{backend}"


READS = ["sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into"]


def _read_call(loop, rnd, sock, method, size):
    """One read of up to `size` bytes by `method` ("mixed": any of them)."""
    if method == "mixed":
        method = rnd.choice(READS)
    if method == "sock_recv":
        return loop.sock_recv(sock, size), (method, None)
    if method == "sock_recvfrom":
        return loop.sock_recvfrom(sock, size), (method, None)
    buf = bytearray(size)
    return getattr(loop, method)(sock, buf), (method, buf)


def _read_result(ctx, result):
    """(data, address or None when the method gives none)."""
    method, buf = ctx
    if method == "sock_recv":
        return result, None
    if method == "sock_recv_into":
        return bytes(buf[:result]), None
    if method == "sock_recvfrom":
        return result
    return bytes(buf[:result[0]]), result[1]


@soak_timeout
@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "mixed"])
def test_random_cancel_stream_recv(loop, run, backend, method):
    rnd = random.Random(_round_seed(method, backend))
    a, b = socket.socketpair()
    _nb(a), _nb(b)
    sent = bytearray()
    got = bytearray()
    counter = [0]

    def start():
        return _read_call(loop, rnd, a, method, rnd.randint(1, 5))

    produce = _stream_producer(loop, b, sent, got, counter)

    def harvest(result, ctx):
        got.extend(_read_result(ctx, result)[0])

    def check():
        assert sent.startswith(got), f"got {bytes(got[-20:])!r}, sent {bytes(sent[-20:])!r}"

    async def main():
        await _drive(loop, rnd, ROUNDS, start, produce, harvest, check)
        await _collect_rest(got, sent, lambda: loop.sock_recv(a, 4096), got.extend, check,
                            "bytes")
        with pytest.raises(asyncio.TimeoutError):   # nothing left behind
            await asyncio.wait_for(loop.sock_recv(a, 1), 0.05)

    try:
        run(main(), timeout=max(30, ROUNDS / 50))
    finally:
        a.close()
        b.close()


@soak_timeout
@pytest.mark.parametrize("method", ["sock_recvfrom", "sock_recvfrom_into", "mixed"])
def test_random_cancel_datagram_recv(loop, run, backend, method):
    rnd = random.Random(_round_seed(method, backend))
    a, b = _udp_pair()
    baddr = b.getsockname()
    sent = []
    got = []

    def start():
        return _read_call(loop, rnd, a, method, 64)

    async def produce(rnd, awaited):
        if len(sent) - len(got) > BACKLOG:
            return
        data = b"%d:" % len(sent) + b"." * rnd.randint(0, 40)
        sent.append(data)
        if awaited:
            await loop.sock_sendto(b, data, a.getsockname())
        else:
            b.sendto(data, a.getsockname())

    def harvest(result, ctx):
        data, addr = _read_result(ctx, result)
        if ctx[0].startswith("sock_recvfrom"):
            # (A datagram a cancelled sock_recv took comes without its
            # address: recv(2) does not ask for it.)
            assert addr == baddr or (addr is None and method == "mixed")
        got.append(data)

    def check():
        assert got == sent[:len(got)], (got[-3:], sent[len(got) - 3:len(got)])

    async def main():
        await _drive(loop, rnd, ROUNDS, start, produce, harvest, check)
        await _collect_rest(got, sent, lambda: loop.sock_recvfrom(a, 64),
                            lambda r: harvest(r, ("sock_recvfrom", None)), check, "datagrams")

    try:
        run(main(), timeout=max(30, ROUNDS / 50))
    finally:
        a.close()
        b.close()


# Not on asyncio: its _sock_accept reader callback (3.11-3.13) accepts even
# when the future was cancelled in the same iteration, then fails to set the
# result (InvalidStateError) and the connection is dropped.
@soak_timeout
@pytest.mark.ringline_only
def test_random_cancel_accept(loop, run, backend):
    rnd = random.Random(_round_seed("accept", backend))
    lsock = _unix_listener()
    clients = []
    sent = []
    got = []

    def start():
        return loop.sock_accept(lsock), None

    async def produce(rnd, awaited):
        if len(sent) - len(got) > BACKLOG:
            return
        name = b"c%d" % len(sent)
        c = _nb(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        clients.append(c)
        if awaited:
            await loop.sock_connect(c, lsock.getsockname())
        else:
            c.connect(lsock.getsockname())
        c.send(name)
        sent.append(name)

    def harvest(result, _):
        conn, _ = result
        with conn:
            got.append(conn.recv(16))

    def check():
        assert got == sent[:len(got)], (got[-3:], sent[len(got) - 3:len(got)])
        while len(clients) > 8:
            clients.pop(0).close()

    async def main():
        await _drive(loop, rnd, ROUNDS, start, produce, harvest, check)
        await _collect_rest(got, sent, lambda: loop.sock_accept(lsock),
                            lambda r: harvest(r, None), check, "connections")

    try:
        run(main(), timeout=max(30, ROUNDS / 50))
    finally:
        lsock.close()
        for c in clients:
            c.close()


def _message(i, rnd):
    """Message i: a header byte 0x80 | i % 128, then body bytes < 0x80, so
    the receiver can split the stream into (prefixes of) messages."""
    body = bytes(rnd.randrange(128) for _ in range(rnd.choice([0, 3, 100, 1000, 8000])))
    return bytes([0x80 | (i % 128)]) + body


def _check_prefix_stream(stream, msgs, whole):
    """stream = for each message in order: all of it if whole[i] (its
    sendall returned), else any prefix of it (cancelled)."""
    segs = []
    start = 0
    for k in range(1, len(stream) + 1):
        if k == len(stream) or stream[k] >= 0x80:
            segs.append(stream[start:k])
            start = k
    assert not stream or stream[0] >= 0x80, "stream starts inside a message"
    i = 0
    for seg in segs:
        while i < len(msgs) and msgs[i][0] != seg[0]:
            assert not whole[i], f"message {i} ({len(msgs[i])} B, sent in full) is missing"
            i += 1
        assert i < len(msgs), "bytes after the last message"
        assert msgs[i].startswith(seg), f"message {i}: not a prefix (reordered or duplicated)"
        if whole[i]:
            assert len(seg) == len(msgs[i]), f"message {i} cut short"
        i += 1
    for j in range(i, len(msgs)):
        assert not whole[j], f"message {j} (sent in full) is missing at the end"


@soak_timeout
def test_random_cancel_sendall(loop, run, backend):
    rnd = random.Random(_round_seed("sendall", backend))
    a, b = socket.socketpair()
    _nb(a), _nb(b)
    _tiny_buffers(a, b)
    msgs = []
    whole = []
    stream = bytearray()

    def start():
        i = len(msgs)
        msgs.append(_message(i, rnd))
        whole.append(False)
        return loop.sock_sendall(a, msgs[i]), i

    produce = _draining_reader(loop, b, stream)

    def harvest(result, i):
        whole[i] = True

    async def main():
        await _drive(loop, rnd, ROUNDS, start, produce, harvest, lambda: None)
        a.shutdown(socket.SHUT_WR)
        stream.extend(await asyncio.wait_for(_read_to_eof(loop, b), 10))
        _check_prefix_stream(bytes(stream), msgs, whole)

    try:
        run(main(), timeout=max(30, ROUNDS / 50))
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------------------
# the runtime API's ConnCtx
# ---------------------------------------------------------------------------

async def _conn_and_peer(loop):
    import ringline
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen()
    with lsock:
        conn = await ringline.connect(lsock.getsockname(), timeout=5)
        peer, _ = lsock.accept()
    return conn, _nb(peer)


@soak_timeout
@pytest.mark.ringline_only
def test_random_cancel_conn_with_data(loop, run, backend):
    """A cancelled with_data() never ran its callback: the bytes stay
    buffered for the next one (fn runs in the task's own step)."""
    import ringline
    rnd = random.Random(_round_seed("with_data", backend))
    sent = bytearray()
    got = bytearray()
    counter = [0]

    def fn(view):
        n = len(view)
        if n == 0:
            return 0
        r = rnd.random()
        if r < 0.15 and n < 6:
            return ringline.NEED_MORE
        k = rnd.randint(1, n) if r < 0.6 else n
        got.extend(view[:k])
        return k

    async def main():
        conn, peer = await _conn_and_peer(loop)

        produce = _stream_producer(loop, peer, sent, got, counter)

        def check():
            assert sent.startswith(got), f"got {bytes(got[-20:])!r}, sent {bytes(sent[-20:])!r}"

        try:
            await _drive(loop, rnd, ROUNDS, lambda: (conn.with_data(fn), None), produce,
                         lambda result, ctx: None, check)

            def take_all(view):
                got.extend(view)
                return len(view)
            while len(got) < len(sent):
                try:
                    await asyncio.wait_for(conn.with_data(take_all), 2)
                except asyncio.TimeoutError:
                    pytest.fail(f"{len(sent) - len(got)} of {len(sent)} bytes never came")
                check()
            assert got == sent
            assert conn.buffered == 0
        finally:
            conn.abort()
            peer.close()

    run(main(), timeout=max(30, ROUNDS / 50))


@soak_timeout
@pytest.mark.ringline_only
def test_random_cancel_conn_send(loop, run, backend):
    """send() queues all of its data at the call: a cancelled send still
    goes out whole, in order, once."""
    rnd = random.Random(_round_seed("conn_send", backend))
    chunks = []
    stream = bytearray()

    async def main():
        conn, peer = await _conn_and_peer(loop)

        def start():
            chunk = _message(len(chunks), rnd)
            chunks.append(chunk)
            return conn.send(chunk), None

        produce = _draining_reader(loop, peer, stream)

        try:
            await _drive(loop, rnd, ROUNDS, start, produce, lambda result, ctx: None,
                         lambda: None)
            conn.close()            # flushes what is queued
            stream.extend(await asyncio.wait_for(_read_to_eof(loop, peer), 10))
            assert bytes(stream) == b"".join(chunks)
        finally:
            conn.abort()
            peer.close()

    run(main(), timeout=max(30, ROUNDS / 50))


# ---------------------------------------------------------------------------
# a stream transport's pause_reading / resume_reading with a receive in flight
# ---------------------------------------------------------------------------

@soak_timeout
@pytest.mark.parametrize("kind", ["protocol", "buffered"])
def test_random_pause_resume_reading(loop, run, backend, kind):
    """Pause and resume at random moments (from outside and from inside
    data_received) while the peer sends: every byte once, in order, and
    none delivered while paused."""
    rnd = random.Random(_round_seed("pause_" + kind, backend))
    a, b = socket.socketpair()
    _nb(a), _nb(b)
    sent = bytearray()
    got = bytearray()
    counter = [0]

    class Base:
        paused = False

        def connection_made(self, transport):
            self.t = transport
            self.eof = loop.create_future()

        def eof_received(self):
            self.eof.set_result(None)

        def connection_lost(self, exc):
            pass

        def took(self, data):
            assert not self.paused, "data delivered while paused"
            got.extend(data)
            if rnd.random() < 0.1:
                self.pause()
                loop.call_soon(self.resume)

        def pause(self):
            self.t.pause_reading()
            self.paused = True

        def resume(self):
            self.paused = False
            self.t.resume_reading()

    class P(Base, asyncio.Protocol):
        def data_received(self, data):
            self.took(data)

    class BP(Base, asyncio.BufferedProtocol):
        def get_buffer(self, sizehint):
            self.buf = bytearray(rnd.randint(1, 64))
            return self.buf

        def buffer_updated(self, nbytes):
            self.took(self.buf[:nbytes])

    proto = P() if kind == "protocol" else BP()

    async def main():
        transport, _ = await loop.connect_accepted_socket(lambda: proto, a)
        try:
            for _ in range(ROUNDS):
                for _ in range(rnd.randint(1, 4)):
                    r = rnd.random()
                    if r < 0.35:
                        n = rnd.choice([1, 5, 100, 3000])
                        data = bytes((counter[0] + i) % 251 for i in range(n))
                        data = _send_some(b, data)  # what fits while reading is paused
                        counter[0] += len(data)
                        sent.extend(data)
                    elif r < 0.5:
                        proto.pause()
                    elif r < 0.65:
                        proto.resume()
                    elif r < 0.95:
                        await asyncio.sleep(0)
                    else:
                        await asyncio.sleep(0.0002)
                    assert sent.startswith(got)
            proto.resume()
            b.shutdown(socket.SHUT_WR)
            await asyncio.wait_for(proto.eof, 5)
            assert got == sent
        finally:
            transport.close()

    try:
        run(main(), timeout=max(30, ROUNDS / 50))
    finally:
        b.close()
