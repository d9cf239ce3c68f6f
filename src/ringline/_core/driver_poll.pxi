# The poll backend (issue 4): completions emulated over readiness, on epoll.
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
#               sure epoll watches the fd for the union of what the two
#               queues need.  If the direction's queue is not empty the op
#               does not even try: it waits its turn, so two recvs on one
#               socket get the bytes in the order they were started.
#   wait(t)     first delivers `pending` (a snapshot: results that come from
#               completions run now go to the next iteration), then calls
#               epoll_wait -- with timeout 0 if anything was delivered or is
#               still pending, since completions schedule callbacks the loop
#               has not seen yet -- and, for each ready fd, retries the
#               queued ops from the head until one says EAGAIN again.
#               Readiness-only ops (PollOp for add_reader/add_writer,
#               OneShotPollOp) never "attempt": they complete with the
#               revents mask, like IORING_OP_POLL_ADD, and do not block the
#               queue.  The retries of one fd all run before any of their
#               completions, so a completion that starts or cancels ops on
#               the same fd cannot reorder the queue under our feet.
#   cancel(op)  takes a waiting op out of its queue and queues -ECANCELED.
#               An op whose result is already pending keeps it (as a CQE
#               that raced an ASYNC_CANCEL does): the ops know how to keep
#               data that arrived for a cancelled future.
#
# Completions are never delivered from start() or cancel(), only from
# wait(), so callers see io_uring's ordering: a result always arrives in a
# later loop iteration, never while the caller is still inside start().
#
# EPOLLONESHOT, not level- or edge-triggered.  Every registration fires at
# most once, then sits disarmed in the interest list until we EPOLL_CTL_MOD
# it again, which we do after handling the fd if ops still wait on it (one
# epoll_ctl per wakeup per still-interested fd; trio makes the same choice).
# Why not level-triggered: an idle fd would have to be EPOLL_CTL_MOD'ed (or
# DEL'ed) as soon as its last waiter went, or it would wake every
# epoll_wait; and a registration we can no longer remove (below) would
# spin the loop forever.  Why not edge-triggered (mio's choice): it needs
# every reader to drain to EAGAIN before it may wait again, and a
# readiness-only waiter (add_reader) has asyncio's level semantics -- a
# callback that leaves data unread is called again -- which re-arming gives
# for free: EPOLL_CTL_MOD re-polls the file, so an fd that is still ready
# fires at once.  Arming also never loses a wakeup that happened between the
# EAGAIN and the epoll_ctl, for the same reason.
#
# The kernel's traps, and what we do about them:
#
# * epoll registers the open file description (the struct file), keyed by
#   (file, fd number) -- not the fd.  close(fd) removes the registration
#   only when it drops the last reference to the file.  If the file lives on
#   (dup()/dup2(), socket.dup(), fork()'s copies in a child, SCM_RIGHTS),
#   the registration stays, keeps reporting events under the old fd number,
#   and can no longer be removed: EPOLL_CTL_DEL needs an fd that refers to
#   that file.  With ONESHOT such a zombie fires at most once more.  We also
#   tag each registration with a generation (epoll_data.u64 = fd | gen<<32,
#   bumped on every EPOLL_CTL_ADD), so an event from an older registration
#   of a reused fd number is recognised and dropped without touching the
#   new file's waiters.
# * A closed fd whose number is reused: our bookkeeping says "registered",
#   the kernel has forgotten (last reference closed).  EPOLL_CTL_MOD then
#   fails with ENOENT and we EPOLL_CTL_ADD; ADD failing with EEXIST falls
#   back to MOD.  We trust our "armed" mask only while ops keep waiting on
#   the fd; when its queues empty, it is forgotten and the next waiter
#   re-arms explicitly.  Closing a socket while an op still waits on it is
#   the caller's bug (as with asyncio's selector loops): the op waits until
#   it is cancelled, and an epoll_ctl failing with EBADF fails the fd's
#   waiters with EBADF.
# * epoll cannot watch regular files or directories (EPERM).  They are
#   always ready, as poll(2) says: readiness ops complete at once with
#   their mask; anything else fails with EPERM.
# * EPOLLERR and EPOLLHUP are reported whether asked for or not: both
#   queues are retried (the ops then see the error or EOF themselves), and
#   readiness ops get POLLERR/POLLHUP in their mask, as a selector reports
#   an fd error as readiness in both directions.
# * EPOLLEXCLUSIVE is irrelevant: it spreads one wakeup among several epoll
#   instances waiting on the same file (one listening socket shared by
#   worker processes), and it cannot be combined with ONESHOT nor MODed.
#   Here each fd sits in one epoll instance; a worker that loses the race
#   for a connection just gets EAGAIN from accept4 and waits again.  Per-
#   worker listening sockets (SO_REUSEPORT) are the real fix for the herd.
# * fork(): the child's epoll fd is the parent's instance, not a copy.  A
#   child must never epoll_ctl on it (it would change the parent's interest
#   list): shutdown(forked=True) only closes the child's descriptors.
# * epoll_wait's timeout is in milliseconds: we round up, so the loop never
#   wakes just before a timer's deadline and spins.
#
# Owned fds: edge-triggered, registered once.  ONESHOT costs one
# epoll_ctl per wakeup, and a stream transport waits on its socket after
# every message: on the 1 KiB echo that was ~1 epoll_ctl per request, the
# largest cost left next to recv and send.  A transport owns its socket for
# its whole life and closes it itself, so it registers the fd once with
# EPOLLIN|EPOLLOUT|EPOLLRDHUP|EPOLLET (own_fd) and removes it before the
# close (disown_fd) -- the two conditions ONESHOT guards against (a
# registration nobody can remove, a reused fd number) cannot arise.  Per
# direction the fd keeps a "maybe ready" bit, tokio's scheme: set by every
# edge, cleared when a syscall says EAGAIN or a read comes back short (the
# socket was drained at that instant; any byte arriving later is a new
# edge, seen at the next epoll_wait).  An op tries its syscall when the bit
# is set and its queue is empty, otherwise it waits for the next edge; an
# edge that arrives while nobody waits just leaves the bit set, so it is
# never lost.  Readiness-only waiters on an owned fd (add_writer during
# sendfile) keep asyncio's level semantics by asking poll(2) first.
#
# kqueue (macOS/BSD) would slot in behind the same scheme (EV_ONESHOT,
# EV_CLEAR); it is not written yet.

cdef extern from "<sys/epoll.h>" nogil:
    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum:
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLLIN
        EPOLLPRI
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLLONESHOT
        EPOLLET

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

# The events epoll can be asked for (poll(2) and epoll share the values).
cdef int _EPOLL_WANTABLE = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP
cdef int _EPOLL_ALWAYS = EPOLLERR | EPOLLHUP


cdef inline bint _is_readiness_op(Op op):
    # Ops that only wait for readiness; they complete with revents.
    return type(op) is PollOp or type(op) is OneShotPollOp


cdef inline bint _goes_to_writers(int events):
    return (events & POLLOUT) != 0 and (events & (POLLIN | EPOLLPRI)) == 0


# The waiters on one fd.  Kept after its queues empty (the entry is small and
# fd numbers are reused), so `added` saves an EEXIST round trip next time.
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

    def __repr__(self):
        return (f'<_PollFd fd={self.fd} readers={len(self.readers)} '
                f'writers={len(self.writers)} armed={self.armed:#x} et={self.et}>')


@cython.final
cdef class PollDriver(Driver):

    def __cinit__(self, LoopCore loop):
        self.loop = loop
        self.name = "poll"
        self.epfd = -1
        self.wake_fd = -1
        self.fds = {}
        self.pending = []
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            err = errno
            raise OSError(err, "epoll_create1: " + os.strerror(err))
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            err = errno
            close(self.epfd)
            self.epfd = -1
            raise OSError(err, "eventfd: " + os.strerror(err))
        self.wake_op = WakeOp.__new__(WakeOp)
        self.wake_op.loop = loop
        self.wake_op.fd = self.wake_fd

    def __dealloc__(self):
        # A loop dropped without close(): do not leak the descriptors.
        if self.epfd >= 0:
            close(self.epfd)
            self.epfd = -1
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1

    def arm_wakeup(self):
        self.start(self.wake_op)

    # ---- submission ----------------------------------------------------

    cdef int start(self, Op op) except -1:
        cdef int events
        cdef int res
        cdef bint readiness
        cdef _PollFd fs
        cdef object queue
        if self.epfd < 0:
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
                return self._start_et(fs, op, events, readiness)
            queue = fs.writers if _goes_to_writers(events) else fs.readers
        else:
            queue = None
        op.state = OP_INFLIGHT
        self.inflight += 1
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
                raise
            if res != -errno_EAGAIN:
                self.n_immediate += 1
                self.pending.append((op, res))
                return 0
            self.n_eagain += 1
        if (events & _EPOLL_WANTABLE) == 0:
            op.state = OP_IDLE
            self.inflight -= 1
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
        if (events & _EPOLL_WANTABLE) & ~fs.armed:
            self._arm(fs)
        return 0

    cdef int _start_et(self, _PollFd fs, Op op, int events, bint readiness) except -1:
        cdef int res
        cdef pollfd pfd
        cdef bint writer = _goes_to_writers(events)
        cdef object queue = fs.writers if writer else fs.readers
        op.state = OP_INFLIGHT
        self.inflight += 1
        self.n_started += 1
        op.wait_first = False
        if readiness:
            # Level semantics for add_reader/add_writer: ask the file.
            pfd.fd = fs.fd
            pfd.events = <short>(events & _EPOLL_WANTABLE)
            pfd.revents = 0
            if poll(&pfd, 1, 0) > 0 and pfd.revents:
                self.n_immediate += 1
                self.pending.append((op, pfd.revents & (events | _EPOLL_ALWAYS)))
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

    cdef int own_fd(self, int fd) except -1:
        """A transport's socket: one persistent edge-triggered registration."""
        cdef epoll_event ev
        cdef int ret
        cdef _PollFd fs
        if self.epfd < 0:
            return 0
        fs = self.fds.get(fd)
        if fs is None:
            fs = _PollFd.__new__(_PollFd, fd)
            self.fds[fd] = fs
        elif fs.readers or fs.writers:
            return 0        # ops already wait in ONESHOT mode: leave it so
        memset(&ev, 0, sizeof(ev))
        ev.events = <uint32_t>(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
        fs.gen += 1
        ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fd
        ret = epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev)
        self.n_ctl += 1
        if ret < 0 and errno == errno_EEXIST:
            ret = epoll_ctl(self.epfd, EPOLL_CTL_MOD, fd, &ev)
            self.n_ctl += 1
        if ret < 0:
            # Not pollable (or closed): stay in ONESHOT mode, whose error
            # paths report it to the ops.
            fs.added = False
            fs.armed = 0
            return 0
        fs.added = True
        fs.armed = 0
        fs.et = True
        fs.rready = True    # unknown: the first op tries its syscall
        fs.wready = True
        fs.rclosed = False
        return 0

    cdef int disown_fd(self, int fd) except -1:
        """The owner is about to close fd: remove the registration first."""
        cdef epoll_event ev
        cdef _PollFd fs
        if self.epfd < 0:
            return 0
        fs = self.fds.get(fd)
        if fs is None or not fs.et:
            return 0
        fs.et = False
        fs.armed = 0
        fs.rmask = 0
        fs.wmask = 0
        memset(&ev, 0, sizeof(ev))
        if fs.added:
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, &ev)
            self.n_ctl += 1
            fs.added = False
        if fs.readers or fs.writers:
            # Waiters left behind (their owner closes without cancelling):
            # back to ONESHOT so they still get their readiness.
            self._arm(fs)
        return 0

    cdef int cancel(self, Op op) except -1:
        cdef _PollFd fs
        if op.state != OP_INFLIGHT or self.epfd < 0:
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

    # ---- epoll registration --------------------------------------------

    cdef int _arm(self, _PollFd fs) except -1:
        """Make the kernel watch fs.fd for what its queues need (ONESHOT)."""
        cdef epoll_event ev
        cdef int want = 0
        cdef int ret
        cdef int err
        cdef int rmask = 0
        cdef int wmask = 0
        cdef Op op
        for op in fs.readers:
            rmask |= op.poll_events()
        for op in fs.writers:
            wmask |= op.poll_events()
        fs.rmask = rmask
        fs.wmask = wmask
        want = (rmask | wmask) & _EPOLL_WANTABLE
        if want == 0:
            return 0
        memset(&ev, 0, sizeof(ev))
        ev.events = <uint32_t>(want | EPOLLONESHOT)
        ret = -1
        if fs.added:
            ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fs.fd
            ret = epoll_ctl(self.epfd, EPOLL_CTL_MOD, fs.fd, &ev)
            self.n_ctl += 1
            if ret < 0 and errno == errno_ENOENT:
                # The file we registered was closed; the number is reused.
                fs.added = False
        if not fs.added:
            fs.gen += 1
            ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fs.fd
            ret = epoll_ctl(self.epfd, EPOLL_CTL_ADD, fs.fd, &ev)
            self.n_ctl += 1
            if ret < 0 and errno == errno_EEXIST:
                # Registered behind our bookkeeping's back: update it.
                ret = epoll_ctl(self.epfd, EPOLL_CTL_MOD, fs.fd, &ev)
                self.n_ctl += 1
            if ret == 0:
                fs.added = True
        if ret == 0:
            fs.armed = want
            return 0
        err = errno
        fs.armed = 0
        self._fail_fd(fs, err)
        return 0

    cdef int _fail_fd(self, _PollFd fs, int err) except -1:
        """epoll refused the fd: settle every waiter on it (via pending)."""
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

    cdef int _deliver_all(self, list batch) except -1:
        cdef Py_ssize_t i = 0
        cdef Py_ssize_t n = len(batch)
        try:
            while i < n:
                op, res = batch[i]
                i += 1
                self._deliver(<Op>op, <int>res)
        finally:
            if i < n:
                # Interrupted (KeyboardInterrupt): the rest comes first next time.
                self.pending[0:0] = batch[i:]
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
        cdef list keep = []
        op = None
        try:
            while n > 0:
                n -= 1
                op = <Op>queue.popleft()
                if _is_readiness_op(op):
                    mask = revents & (op.poll_events() | _EPOLL_ALWAYS)
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
        cdef int k
        if fs.et:
            # An edge: note it, then let whoever waits try.
            if revents & (EPOLLRDHUP | _EPOLL_ALWAYS):
                fs.rclosed = True
            if revents & (EPOLLIN | EPOLLPRI | EPOLLRDHUP | _EPOLL_ALWAYS):
                fs.rready = True
                if fs.readers:
                    k = self._run_queue(fs.readers, revents, done)
                    if k == 2 or (k == 1 and not fs.rclosed):
                        fs.rready = False
            if revents & (EPOLLOUT | _EPOLL_ALWAYS):
                fs.wready = True
                if fs.writers and self._run_queue(fs.writers, revents, done) == 2:
                    fs.wready = False
            return 0
        fs.armed = 0        # ONESHOT: the registration is disarmed now
        if fs.readers and revents & (fs.rmask | _EPOLL_ALWAYS):
            self._run_queue(fs.readers, revents, done)
        if fs.writers and revents & (fs.wmask | _EPOLL_ALWAYS):
            self._run_queue(fs.writers, revents, done)
        return 0

    cdef int wait(self, int64_t timeout_ns) except -1:
        cdef epoll_event events[_POLL_MAX_EVENTS]
        cdef int timeout_ms
        cdef int n, i, fd
        cdef uint32_t gen
        cdef list batch
        cdef list done
        cdef list touched
        cdef _PollFd fs
        if self.epfd < 0:
            raise RuntimeError("the event loop's poller is closed")
        # 1. Results from earlier start()/cancel() calls.
        if self.pending:
            batch = self.pending
            self.pending = []
            self._deliver_all(batch)
            timeout_ns = 0      # their callbacks are in the ready queue now
        if self.pending:
            timeout_ns = 0
        # 2. Readiness.
        if timeout_ns < 0:
            timeout_ms = -1
        elif timeout_ns == 0:
            timeout_ms = 0
        elif timeout_ns >= <int64_t>0x7fffffff * 1000000:
            timeout_ms = 0x7fffffff
        else:
            timeout_ms = <int>((timeout_ns + 999999) // 1000000)
        if timeout_ms != 0:
            # Handle a signal that came since Python last looked before blocking.
            PyErr_CheckSignals()
        with nogil:
            n = epoll_wait(self.epfd, events, _POLL_MAX_EVENTS, timeout_ms)
        self.n_wait += 1
        if n < 0:
            if errno == errno_EINTR:
                # Run Python's signal handlers now (Ctrl-C on an idle loop).
                PyErr_CheckSignals()
                return 0
            err = errno
            raise OSError(err, "epoll_wait: " + os.strerror(err))
        if n == 0:
            return 0
        self.n_events += n
        # 3. Retry what waited on the ready fds, then complete in order.
        done = []
        touched = []
        try:
            for i in range(n):
                fd = <int>(events[i].data.u64 & 0xffffffff)
                gen = <uint32_t>(events[i].data.u64 >> 32)
                fs = self.fds.get(fd)
                if fs is None or fs.gen != gen:
                    self.n_stale += 1
                    continue        # a registration of a file since closed
                touched.append(fs)
                self._process(fs, events[i].events, done)
        except BaseException:
            # Results already taken from the kernel must not be lost.
            self.pending[0:0] = done
            done = []
            raise
        finally:
            try:
                if done:
                    self._deliver_all(done)
            finally:
                # 4. Re-arm what still waits (completions may have armed
                # already); also after an exception, or those fds would
                # never wake again.
                for fs in touched:
                    if fs.et:
                        continue        # registered for good
                    if fs.readers or fs.writers:
                        if (fs.rmask | fs.wmask) & _EPOLL_WANTABLE & ~fs.armed:
                            self._arm(fs)
                    else:
                        fs.rmask = 0
                        fs.wmask = 0
        return 0

    # ---- teardown ------------------------------------------------------

    cdef int shutdown(self, bint forked) except -1:
        cdef Op op
        cdef _PollFd fs
        if self.epfd < 0:
            return 0
        # Nothing is in the kernel's hands: waiting ops are simply dropped
        # (their completions do not run, as with the ring's shutdown), and
        # the references the queues held go with them.  In a forked child
        # the epoll instance is the parent's: close our descriptor, nothing
        # else (no epoll_ctl).
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
        self.inflight = 0
        close(self.epfd)
        self.epfd = -1
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        return 0

    def stats(self):
        return {
            'backend': 'poll',
            'mechanism': 'epoll',
            'epoll_wait': self.n_wait,
            'epoll_ctl': self.n_ctl,
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
