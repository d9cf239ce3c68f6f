# The poll backend's epoll driver (Linux).  The completion emulation --
# queues, pending results, owned-fd ready bits -- is _ReadinessDriver's
# (driver/readiness.pxi); this file registers fds with epoll, waits in
# epoll_wait and hands the events on.  Off Linux the epoll calls are stubs
# that fail with ENOSYS (rl_poll.h) and backend="poll" uses kqueue.
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
# registration nobody can remove, a reused fd number) cannot arise.  The
# per-direction "maybe ready" bits are driver/readiness.pxi's.

cdef extern from "driver/rl_poll.h" nogil:
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
        RL_HAVE_EPOLL
        EPOLL_CLOEXEC
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLLIN
        EPOLLOUT
        EPOLLRDHUP
        EPOLLONESHOT
        EPOLLET


@cython.final
cdef class PollDriver(_ReadinessDriver):

    def __cinit__(self, LoopCore loop):
        self.evbuf = PyMem_Malloc(_POLL_MAX_EVENTS * sizeof(epoll_event))
        if self.evbuf == NULL:
            raise MemoryError()
        self.poller_fd = epoll_create1(EPOLL_CLOEXEC)
        if self.poller_fd < 0:
            err = errno
            raise OSError(err, "epoll_create1: " + os.strerror(err))
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            err = errno
            close(self.poller_fd)
            self.poller_fd = -1
            raise OSError(err, "eventfd: " + os.strerror(err))
        self.wake_op = WakeOp.__new__(WakeOp)
        self.wake_op.loop = loop
        self.wake_op.fd = self.wake_fd

    def __dealloc__(self):
        # A loop dropped without close(): do not leak the descriptors.
        if self.poller_fd >= 0:
            close(self.poller_fd)
            self.poller_fd = -1
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        PyMem_Free(self.evbuf)
        self.evbuf = NULL

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
        want = (rmask | wmask) & _RD_WANTABLE
        if want == 0:
            return 0
        memset(&ev, 0, sizeof(ev))
        ev.events = <uint32_t>(want | EPOLLONESHOT)
        ret = -1
        if fs.added:
            ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fs.fd
            ret = epoll_ctl(self.poller_fd, EPOLL_CTL_MOD, fs.fd, &ev)
            self.n_ctl += 1
            if ret < 0 and errno == errno_ENOENT:
                # The file we registered was closed; the number is reused.
                fs.added = False
        if not fs.added:
            fs.gen += 1
            ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fs.fd
            ret = epoll_ctl(self.poller_fd, EPOLL_CTL_ADD, fs.fd, &ev)
            self.n_ctl += 1
            if ret < 0 and errno == errno_EEXIST:
                # Registered behind our bookkeeping's back: update it.
                ret = epoll_ctl(self.poller_fd, EPOLL_CTL_MOD, fs.fd, &ev)
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

    cdef bint _register_owned(self, _PollFd fs) except -1:
        cdef epoll_event ev
        cdef int ret
        memset(&ev, 0, sizeof(ev))
        ev.events = <uint32_t>(EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)
        fs.gen += 1
        ev.data.u64 = (<uint64_t>fs.gen << 32) | <uint32_t>fs.fd
        ret = epoll_ctl(self.poller_fd, EPOLL_CTL_ADD, fs.fd, &ev)
        self.n_ctl += 1
        if ret < 0 and errno == errno_EEXIST:
            ret = epoll_ctl(self.poller_fd, EPOLL_CTL_MOD, fs.fd, &ev)
            self.n_ctl += 1
        fs.added = ret == 0
        return ret == 0

    cdef int _unregister_owned(self, _PollFd fs) except -1:
        cdef epoll_event ev
        memset(&ev, 0, sizeof(ev))
        if fs.added:
            epoll_ctl(self.poller_fd, EPOLL_CTL_DEL, fs.fd, &ev)
            self.n_ctl += 1
            fs.added = False
        return 0

    # ---- waiting -------------------------------------------------------

    cdef int _poll(self, int64_t timeout_ns) except -1:
        cdef int timeout_ms
        cdef int n
        if timeout_ns < 0:
            timeout_ms = -1
        elif timeout_ns == 0:
            timeout_ms = 0
        elif timeout_ns >= <int64_t>0x7fffffff * 1000000:
            timeout_ms = 0x7fffffff
        else:
            timeout_ms = <int>((timeout_ns + 999999) // 1000000)
        with nogil:
            n = epoll_wait(self.poller_fd, <epoll_event*>self.evbuf, _POLL_MAX_EVENTS, timeout_ms)
        self.n_wait += 1
        if n < 0:
            if errno == errno_EINTR:
                # Run Python's signal handlers now (Ctrl-C on an idle loop).
                PyErr_CheckSignals()
                return 0
            err = errno
            raise OSError(err, "epoll_wait: " + os.strerror(err))
        return n

    cdef int _dispatch(self, int n, list done, list touched) except -1:
        cdef epoll_event *events = <epoll_event*>self.evbuf
        cdef int i, fd
        cdef uint32_t gen
        cdef _PollFd fs
        for i in range(n):
            fd = <int>(events[i].data.u64 & 0xffffffff)
            gen = <uint32_t>(events[i].data.u64 >> 32)
            fs = self.fds.get(fd)
            if fs is None or fs.gen != gen:
                self.n_stale += 1
                continue        # a registration of a file since closed
            touched.append(fs)
            if not fs.et:
                fs.armed = 0    # ONESHOT: the registration is disarmed now
            self._process(fs, events[i].events, done)
        return 0

    # ---- teardown ------------------------------------------------------

    cdef int _close_poller(self, bint forked) except -1:
        # A forked child shares the parent's epoll instance: it closes its
        # descriptors and makes no epoll_ctl (none is made here anyway).
        close(self.poller_fd)
        self.poller_fd = -1
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        return 0

    def stats(self):
        return self._stats('epoll', 'epoll_wait', 'epoll_ctl')
