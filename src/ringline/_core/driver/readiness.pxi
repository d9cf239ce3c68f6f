# The poll backend (issue 4): completions emulated over readiness.  This
# file is the mechanism-independent half, _ReadinessDriver; its subclasses
# only register fds, make the wait syscall and decode its events:
#   PollDriver    (driver/epoll.pxi)    epoll, Linux
#   KqueueDriver  (driver/kqueue.pxi)  kqueue, macOS/BSD
#
# The loop and the transports speak one language: start an Op, get
# op.complete(res, flags) later, res being the syscall's result or -errno.
# io_uring does that natively.  Here it is emulated the way mio (and
# ringline's Rust runtime on top of it) does:
#
#   start(op)   tries the syscall now (op.attempt(), non-blocking).  A result
#               (data, an error, EOF) is queued in `pending`; -EAGAIN puts the
#               op at the tail of its fd's FIFO for its direction (readers:
#               recv/accept/POLLIN, writers: send/connect/POLLOUT) and makes
#               sure the kernel watches the fd for the union of what the two
#               queues need (_arm).  If the direction's queue is not empty
#               the op does not even try: it waits its turn, so two recvs on
#               one socket get the bytes in the order they were started.
#   wait(t)     first waits for readiness (_poll) -- with timeout 0 if
#               results are pending -- and, for each ready fd (_dispatch),
#               retries the queued ops from the head until one says EAGAIN
#               again; only then does it deliver `pending` (a snapshot)
#               and the retries' results, so an op that a completion starts
#               is served by the next wait() at the earliest, even if its fd
#               is ready already (see wait()).  Readiness-only ops (PollOp for
#               add_reader/add_writer, OneShotPollOp) never "attempt": they
#               complete with the revents mask, like IORING_OP_POLL_ADD, and
#               do not block the queue.  The retries of one batch all run
#               before any of their completions, so a completion that starts
#               or cancels ops on the same fd cannot reorder the queue under
#               our feet.
#   cancel(op)  takes a waiting op out of its queue and queues -ECANCELED.
#               An op whose result is already pending keeps it (as a CQE
#               that raced an ASYNC_CANCEL does): the ops know how to keep
#               data that arrived for a cancelled future.
#
# Completions are never delivered from start() or cancel(), only from
# wait(), so callers see io_uring's ordering: a result always arrives in a
# later loop iteration, never while the caller is still inside start().
#
# Two ways to watch an fd, both with the same queues:
#
# * Waited-on fds are registered one-shot (EPOLLONESHOT, EV_ONESHOT): the
#   registration fires at most once and is re-armed after the fd was handled
#   if ops still wait.  Arming re-checks the file's state, so an fd still
#   ready fires at once: readiness-only waiters get asyncio's level
#   semantics, and no wakeup between the EAGAIN and the arming is lost.
# * Owned fds (own_fd/disown_fd: the socket of a stream transport or a
#   runtime ConnCtx, held for its whole life and closed by its owner, who
#   disowns it first) are registered once, edge-triggered (EPOLLET,
#   EV_CLEAR): ONESHOT's one epoll_ctl per wait was ~1 per message on an
#   echo.  Per direction the fd keeps a "maybe ready" bit, tokio's scheme:
#   set by every edge, cleared when a syscall says EAGAIN or a TCP read
#   comes back short (drained at that instant; any byte arriving later is a
#   new edge, seen at the next wait -- AF_UNIX reads stop early at
#   ancillary data, so only TCP counts); EOF or an error reported once
#   (rclosed) keeps reads ready, as it brings no new edge.  An op tries its
#   syscall when the bit is set and its queue is empty, otherwise it waits
#   for the next edge; an edge that arrives while nobody waits just leaves
#   the bit set, so it is never lost.  The registration is trusted only
#   while the owner's socket object lives (a weakref): an owner collected
#   in a reference cycle has its fd closed by the socket's finalizer before
#   it could disown it, and the number may name another file by then.
#   Readiness-only waiters on an owned fd (add_writer during sendfile) keep
#   asyncio's level semantics by asking poll(2) first.
#
# Events reach the shared code as poll(2) bits: POLLIN/POLLPRI/RL_POLLRDHUP
# (peer shut its write side) for the read side, POLLOUT for the write side,
# POLLERR/POLLHUP for both.  epoll uses these values natively (rl_poll.h
# checks it at compile time); the kqueue driver translates its filters.

cdef extern from "driver/rl_poll.h" nogil:
    enum:
        POLLPRI
        RL_POLLRDHUP
        RL_POLL_SYSCALL_RDHUP

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "<errno.h>":
    enum:
        errno_EEXIST "EEXIST"
        errno_ENOENT "ENOENT"
        errno_EBADF "EBADF"

cdef enum:
    _POLL_MAX_EVENTS = 256

# The events a waiter can ask for, and those reported whether asked or not.
cdef int _RD_WANTABLE = POLLIN | POLLPRI | POLLOUT | RL_POLLRDHUP
cdef int _RD_ALWAYS = POLLERR | POLLHUP
# What poll(2) is asked for (POLLRDHUP exists on Linux only).
cdef int _RD_POLLABLE = POLLIN | POLLPRI | POLLOUT | RL_POLL_SYSCALL_RDHUP


cdef inline bint _is_readiness_op(Op op):
    # Ops that only wait for readiness; they complete with revents.
    return type(op) is PollOp or type(op) is OneShotPollOp


cdef inline bint _goes_to_writers(int events):
    return (events & POLLOUT) != 0 and (events & (POLLIN | POLLPRI)) == 0


# The waiters on one fd.  Kept after its queues empty (the entry is small and
# fd numbers are reused), so `added` saves a round trip next time.
@cython.final
cdef class _PollFd:

    def __cinit__(self, int fd):
        self.fd = fd
        self.readers = collections.deque()
        self.writers = collections.deque()
        self.rmask = 0
        self.wmask = 0
        self.armed = 0
        self.added = False
        self.gen = 0
        self.et = False
        self.rready = False
        self.wready = False
        self.rclosed = False
        self.owner = None

    def __repr__(self):
        return (f'<_PollFd fd={self.fd} readers={len(self.readers)} '
                f'writers={len(self.writers)} armed={self.armed:#x} et={self.et}>')


cdef class _ReadinessDriver(Driver):
    """The queues, pending results and owned-fd bits shared by the epoll and
    kqueue drivers.  Subclasses implement _arm, _register_owned,
    _unregister_owned, _poll, _dispatch, _close_poller and stats."""

    def __cinit__(self, LoopCore loop, *args, **kwargs):
        self.loop = loop
        self.name = "poll"
        self.poller_fd = -1
        self.wake_fd = -1
        self.fds = {}
        self.pending = []
        self.evbuf = NULL
        # Capabilities (base.pxi): writes are tried at once, a read that
        # found data goes on reading; no zero-copy send, no file ops (the
        # thread pool), no provided buffers.
        self.direct_send = True
        self.batched_reads = True

    cdef DriverCounters counters(self) noexcept:
        cdef DriverCounters c
        c.submitted = self.n_started
        c.completed = self.n_completed
        c.waits = self.n_wait
        return c

    def arm_wakeup(self):
        if self.wake_op is not None:
            self.start(self.wake_op)

    # ---- what a mechanism implements ------------------------------------

    cdef int _arm(self, _PollFd fs) except -1:
        """Make the kernel watch fs.fd (one-shot) for what its queues need;
        recompute fs.rmask/wmask, set fs.armed, _fail_fd on refusal."""
        raise NotImplementedError

    cdef bint _register_owned(self, _PollFd fs) except -1:
        """One persistent edge-triggered registration for both directions;
        False if the fd cannot be registered (it stays one-shot)."""
        raise NotImplementedError

    cdef int _unregister_owned(self, _PollFd fs) except -1:
        raise NotImplementedError

    cdef int _poll(self, int64_t timeout_ns) except -1:
        """Wait for events into evbuf (timeout < 0: forever); their count,
        0 after EINTR (signals checked) or a timeout."""
        raise NotImplementedError

    cdef int _dispatch(self, int n, list done, list touched) except -1:
        """For each of the n events: find its _PollFd (stale: count and
        skip), append it to `touched`, note what a one-shot event disarmed,
        and _process it with its poll(2) bits."""
        raise NotImplementedError

    cdef int _close_poller(self, bint forked) except -1:
        raise NotImplementedError

    # ---- submission ----------------------------------------------------

    cdef int start(self, Op op) except -1:
        cdef int events
        cdef int res
        cdef bint readiness
        cdef _PollFd fs
        cdef object queue
        if self.poller_fd < 0:
            raise RuntimeError("the event loop's poller is closed")
        if op.state != OP_IDLE:
            # One op, one operation at a time: a second start would attempt
            # the syscall again with the same buffers and deliver twice.
            raise RuntimeError(f"{op!r} started again while still in flight")
        events = op.poll_events()
        readiness = _is_readiness_op(op)
        fs = self.fds.get(op.fd)
        if fs is not None:
            if fs.et:
                if rl_weakref_alive(fs.owner):
                    return self._start_et(fs, op, events, readiness)
                # The owner went without disown_fd (collected with a
                # reference cycle: its socket's finalizer closed the fd
                # first).  The number may name another file now: ONESHOT.
                self._drop_stale_et(fs)
            queue = fs.writers if _goes_to_writers(events) else fs.readers
        else:
            queue = None
        op.state = OP_INFLIGHT
        self.inflight += 1
        _live.ops_inflight += 1
        self.n_started += 1
        if op.wait_first:
            # The op's last syscall drained the fd: trying again now would
            # only return EAGAIN.  Wait for readiness instead.
            op.wait_first = False
        elif not readiness and not queue:
            # Nobody ahead of us on this fd and direction: try it now.
            try:
                while True:
                    res = op.attempt()
                    if res != -errno_EINTR:
                        break
            except BaseException:
                op.state = OP_IDLE
                self.inflight -= 1
                _live.ops_inflight -= 1
                raise
            if res != -errno_EAGAIN:
                self.n_immediate += 1
                self.pending.append((op, res))
                return 0
            self.n_eagain += 1
        if (events & _RD_WANTABLE) == 0:
            op.state = OP_IDLE
            self.inflight -= 1
            _live.ops_inflight -= 1
            raise RuntimeError(f"{op!r} would block but names no poll events to wait for")
        if fs is None:
            fs = _PollFd.__new__(_PollFd, op.fd)
            self.fds[op.fd] = fs
        if _goes_to_writers(events):
            fs.writers.append(op)
            fs.wmask |= events
        else:
            fs.readers.append(op)
            fs.rmask |= events
        if (events & _RD_WANTABLE) & ~fs.armed:
            self._arm(fs)
        return 0

    cdef int _start_et(self, _PollFd fs, Op op, int events, bint readiness) except -1:
        cdef int res
        cdef pollfd pfd
        cdef bint writer = _goes_to_writers(events)
        cdef object queue = fs.writers if writer else fs.readers
        op.state = OP_INFLIGHT
        self.inflight += 1
        _live.ops_inflight += 1
        self.n_started += 1
        op.wait_first = False
        if readiness:
            # Level semantics for add_reader/add_writer: ask the file.
            pfd.fd = fs.fd
            pfd.events = <short>(events & _RD_POLLABLE)
            pfd.revents = 0
            if poll(&pfd, 1, 0) > 0 and pfd.revents:
                self.n_immediate += 1
                self.pending.append((op, pfd.revents & (events | _RD_ALWAYS)))
                return 0
        elif not queue and (fs.wready if writer else fs.rready):
            try:
                while True:
                    res = op.attempt()
                    if res != -errno_EINTR:
                        break
            except BaseException:
                op.state = OP_IDLE
                self.inflight -= 1
                _live.ops_inflight -= 1
                raise
            if res != -errno_EAGAIN:
                if op.wait_first:
                    # A short read drained the socket -- unless EOF or an
                    # error was reported, which the next read still returns
                    # and which brings no new edge (tokio keeps the closed
                    # bits for the same reason).
                    if not fs.rclosed:
                        fs.rready = False
                    op.wait_first = False
                self.n_immediate += 1
                self.pending.append((op, res))
                return 0
            self.n_eagain += 1
            if writer:
                fs.wready = False
            else:
                fs.rready = False
        if writer:
            fs.writers.append(op)
        else:
            fs.readers.append(op)
        return 0

    cdef int _drop_stale_et(self, _PollFd fs) except -1:
        fs.et = False
        fs.owner = None
        fs.added = False        # the close removed it (a new ADD bumps gen)
        fs.armed = 0
        fs.rmask = 0
        fs.wmask = 0
        return 0

    cdef int own_fd(self, int fd, object owner) except -1:
        """A transport's socket: one persistent edge-triggered registration,
        valid while `owner` (the socket object) lives."""
        cdef _PollFd fs
        cdef object ref
        if self.poller_fd < 0:
            return 0
        try:
            ref = _weakref(owner)
        except TypeError:
            return 0        # cannot tell when it goes: stay ONESHOT
        fs = self.fds.get(fd)
        if fs is None:
            fs = _PollFd.__new__(_PollFd, fd)
            self.fds[fd] = fs
        elif fs.readers or fs.writers:
            return 0        # ops already wait in ONESHOT mode: leave it so
        fs.armed = 0
        if not self._register_owned(fs):
            # Not pollable (or closed): stay in ONESHOT mode, whose error
            # paths report it to the ops.
            return 0
        fs.et = True
        fs.owner = ref
        fs.rready = True    # unknown: the first op tries its syscall
        fs.wready = True
        fs.rclosed = False
        return 0

    cdef int disown_fd(self, int fd) except -1:
        """The owner is about to close fd: remove the registration first."""
        cdef _PollFd fs
        if self.poller_fd < 0:
            return 0
        fs = self.fds.get(fd)
        if fs is None or not fs.et:
            return 0
        fs.et = False
        fs.owner = None
        fs.armed = 0
        fs.rmask = 0
        fs.wmask = 0
        self._unregister_owned(fs)
        if fs.readers or fs.writers:
            # Waiters left behind (their owner closes without cancelling):
            # back to ONESHOT so they still get their readiness.
            self._arm(fs)
        return 0

    cdef int cancel(self, Op op) except -1:
        cdef _PollFd fs
        if op.state != OP_INFLIGHT or self.poller_fd < 0:
            return 0
        fs = self.fds.get(op.fd)
        if fs is None:
            return 0        # its result is already pending: it keeps it
        if op in fs.readers:
            fs.readers.remove(op)
        elif op in fs.writers:
            fs.writers.remove(op)
        else:
            return 0        # idem
        op.state = OP_CANCELLING
        self.n_cancelled += 1
        self.pending.append((op, -errno_ECANCELED))
        if not fs.readers and not fs.writers and not fs.et:
            # The kernel may still be armed for it (it will fire once, for
            # nothing) or may have dropped the fd (closed): trust neither.
            fs.armed = 0
            fs.rmask = 0
            fs.wmask = 0
        return 0

    cdef int _fail_fd(self, _PollFd fs, int err) except -1:
        """The kernel refused to watch the fd: settle every waiter on it
        (via pending)."""
        cdef Op op
        cdef list waiters = list(fs.readers) + list(fs.writers)
        fs.readers.clear()
        fs.writers.clear()
        fs.rmask = 0
        fs.wmask = 0
        for op in waiters:
            if err == errno_EPERM and _is_readiness_op(op):
                # A regular file or directory: always ready (poll(2)).
                self.pending.append((op, op.poll_events() & (POLLIN | POLLOUT)))
            else:
                self.pending.append((op, -err))
        return 0

    # ---- waiting and delivering ----------------------------------------

    cdef int _deliver(self, Op op, int res) except -1:
        op.state = OP_IDLE
        self.inflight -= 1
        _live.ops_inflight -= 1
        self.n_completed += 1
        try:
            op.complete(res, 0)
        except BaseException as exc:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                raise
            self.loop.call_exception_handler({
                'message': f'Exception in completion of {op!r}',
                'exception': exc,
            })
        return 0

    cdef int _deliver_all(self, list first, list then) except -1:
        # `first`, then `then` (either may be None): two lists rather than
        # one joined, which cost a list per iteration.
        cdef list batch = first if first is not None else then
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n
        while batch is not None:
            n = len(batch)
            i = 0
            try:
                while i < n:
                    op, res = batch[i]
                    i += 1
                    self._deliver(<Op>op, <int>res)
            except BaseException:
                # Interrupted (KeyboardInterrupt): the rest comes first next time.
                if batch is first and then:
                    self.pending[0:0] = batch[i:] + then
                else:
                    self.pending[0:0] = batch[i:]
                raise
            batch = then if batch is first else None
        return 0

    cdef int _run_queue(self, object queue, int revents, list done) except -1:
        """Retry the ops waiting in one direction after readiness.  Results
        go to `done`; the ops that still wait stay in order in `queue`.
        Returns 2 when a syscall said EAGAIN, 1 when a read came back
        short (it drained the socket), else 0."""
        cdef Op op
        cdef int res
        cdef int mask
        cdef bint blocked = False
        cdef bint drained = False
        cdef Py_ssize_t n = len(queue)
        cdef list keep = None       # made only when an op has to wait again
        op = None
        try:
            while n > 0:
                n -= 1
                op = <Op>queue.popleft()
                if _is_readiness_op(op):
                    mask = revents & (op.poll_events() | _RD_ALWAYS)
                    if mask:
                        done.append((op, mask))
                        op = None
                        continue
                elif not blocked:
                    while True:
                        res = op.attempt()
                        if res != -errno_EINTR:
                            break
                    if res != -errno_EAGAIN:
                        if op.wait_first:
                            drained = True
                        done.append((op, res))
                        op = None
                        continue
                    self.n_eagain += 1
                    blocked = True
                if keep is None:
                    keep = []
                keep.append(op)
                op = None
        finally:
            # Normally `op` is None here; after an exception in attempt() it
            # is the op that raised, which keeps its place in line.
            if op is not None:
                queue.appendleft(op)
            if keep:
                queue.extendleft(reversed(keep))
        return 2 if blocked else (1 if drained else 0)

    cdef int _process(self, _PollFd fs, uint32_t revents, list done) except -1:
        """Readiness on fs (poll(2) bits): retry what waits on it.  For a
        one-shot fd the caller has already noted what the event disarmed."""
        cdef int k
        if fs.et:
            # An edge: note it, then let whoever waits try.
            if revents & (RL_POLLRDHUP | _RD_ALWAYS):
                fs.rclosed = True
            if revents & (POLLIN | POLLPRI | RL_POLLRDHUP | _RD_ALWAYS):
                fs.rready = True
                if fs.readers:
                    k = self._run_queue(fs.readers, revents, done)
                    if k == 2 or (k == 1 and not fs.rclosed):
                        fs.rready = False
            if revents & (POLLOUT | _RD_ALWAYS):
                fs.wready = True
                if fs.writers and self._run_queue(fs.writers, revents, done) == 2:
                    fs.wready = False
            return 0
        if fs.readers and revents & (fs.rmask | _RD_ALWAYS):
            self._run_queue(fs.readers, revents, done)
        if fs.writers and revents & (fs.wmask | _RD_ALWAYS):
            self._run_queue(fs.writers, revents, done)
        return 0

    cdef int wait(self, int64_t timeout_ns) except -1:
        cdef int n
        cdef list batch
        cdef list done
        cdef list touched
        cdef _PollFd fs
        if self.poller_fd < 0:
            raise RuntimeError("the event loop's poller is closed")
        # 1. Readiness first, results after (2, 3).  Delivering `pending`
        # before polling let one wait() also complete an op that one of
        # those completions had just started: a transport's recv, re-armed
        # after data_received, found the FIN the peer had sent in answer
        # and delivered EOF in the same iteration as the data -- an
        # iteration ahead of asyncio (one read per fd per iteration) and of
        # io_uring (an SQE goes in at the next io_uring_enter).  Code that
        # counts iterations broke: in CPython's test_connect_accepted_socket
        # connection_lost's call_soon(loop.stop) then ran in the same batch
        # as run_until_complete's stop, inside run_until_complete, and the
        # test's run_forever() waited forever.  Polled first, an op started
        # by a completion waits for the next wait() even if its fd is ready
        # by now; nothing is lost: the edge stays in epoll's ready list
        # until the next epoll_wait (epoll(7)), a one-shot re-arm re-checks.
        if self.pending:
            timeout_ns = 0      # results to deliver: do not block
        if timeout_ns != 0:
            # Handle a signal that came since Python last looked before blocking.
            PyErr_CheckSignals()
        n = self._poll(timeout_ns)
        # 2. Results from earlier start()/cancel() calls.
        batch = None
        if self.pending:
            batch = self.pending
            self.pending = []
        if n <= 0:
            if batch is not None:
                self._deliver_all(batch, None)
            return 0
        self.n_events += n
        # 3. Retry what waited on the ready fds, then complete in order,
        # the earlier results first.
        done = []
        touched = []
        try:
            self._dispatch(n, done, touched)
        except BaseException:
            # Results already taken from the kernel must not be lost.
            self.pending[0:0] = (batch or []) + done
            batch = None
            done = None
            raise
        finally:
            try:
                if batch is not None or done:
                    self._deliver_all(batch, done)
            finally:
                # 4. Re-arm what still waits (completions may have armed
                # already); also after an exception, or those fds would
                # never wake again.
                for fs in touched:
                    if fs.et:
                        continue        # registered for good
                    if fs.readers or fs.writers:
                        if (fs.rmask | fs.wmask) & _RD_WANTABLE & ~fs.armed:
                            self._arm(fs)
                    else:
                        fs.rmask = 0
                        fs.wmask = 0
        return 0

    # ---- teardown ------------------------------------------------------

    cdef int shutdown(self, bint forked) except -1:
        cdef Op op
        cdef _PollFd fs
        if self.poller_fd < 0:
            return 0
        # Nothing is in the kernel's hands: waiting ops are simply dropped
        # (their completions do not run, as with the ring's shutdown), and
        # the references the queues held go with them.  In a forked child
        # the subclass touches nothing of the parent's (_close_poller).
        for item in self.pending:
            op = <Op>item[0]
            op.state = OP_IDLE
        self.pending = []
        for fs in self.fds.values():
            for op in fs.readers:
                op.state = OP_IDLE
            for op in fs.writers:
                op.state = OP_IDLE
            fs.readers.clear()
            fs.writers.clear()
        self.fds.clear()
        _live.ops_inflight -= self.inflight
        self.inflight = 0
        self.wake_op = None     # a closed loop keeps no op alive (live_counts)
        self._close_poller(forked)
        return 0

    cdef dict _stats(self, str mechanism, str wait_key, str ctl_key):
        return {
            'backend': 'poll',
            'mechanism': mechanism,
            wait_key: self.n_wait,
            ctl_key: self.n_ctl,
            'events': self.n_events,
            'stale_events': self.n_stale,
            'ops_started': self.n_started,
            'ops_immediate': self.n_immediate,
            'ops_completed': self.n_completed,
            'ops_cancelled': self.n_cancelled,
            'attempts_eagain': self.n_eagain,
            'inflight': self.inflight,
            'pending': len(self.pending),
            'fds': len(self.fds),
        }
