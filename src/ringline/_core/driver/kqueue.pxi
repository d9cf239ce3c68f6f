# The poll backend's kqueue driver (macOS, FreeBSD, NetBSD, OpenBSD,
# DragonFly).  The completion emulation -- queues, pending results, owned-fd
# ready bits -- is _ReadinessDriver's (driver/readiness.pxi), shared with
# the epoll driver; this file registers fds with kevent() changes, waits in
# kevent() and translates its events into poll(2) bits.
#
# NOT RUN ANYWHERE YET.  On Linux kq.h replaces kqueue()/kevent() by stubs
# that fail with ENOSYS: the class is compiled and type-checked there, and
# constructing it raises OSError(ENOSYS).  It has never executed against a
# real kqueue (see the README's "Backends").
#
# kqueue keys a registration (a knote) by (ident, filter): one filter per
# direction, EVFILT_READ and EVFILT_WRITE, each registered, fired and
# deleted on its own -- there is no event mask to merge as with epoll.
#
# Waited-on fds: EV_ADD|EV_ONESHOT per direction.  The knote fires once and
# is deleted when the event is retrieved (kqueue(2)); _dispatch clears that
# direction's bits in fs.armed and the shared wait() re-arms what still has
# waiters.  EV_ADD both creates and modifies, so unlike epoll there is no
# ENOENT/EEXIST dance, and a fresh knote evaluates the filter at once
# (FreeBSD kqueue_register calls f_event after attaching; XNU's f_attach
# returns the current state): an fd still ready fires at once, which gives
# add_reader its level semantics and loses no wakeup between EAGAIN and
# arming.  EV_DISPATCH (disable instead of delete) would save the knote's
# allocation but needs EV_ENABLE, i.e. a knote known to exist -- the
# bookkeeping EV_ONESHOT does without.
#
# Owned fds (a transport's socket): both filters EV_ADD|EV_CLEAR once, the
# edge-triggered mode: EV_CLEAR resets the knote's state when the event is
# retrieved, so it fires again only when the socket's buffer changes.
#
# kqueue's traps, and what we do about them:
#
# * EV_ADD on an existing knote updates udata, fflags and data but not its
#   EV_ONESHOT/EV_CLEAR flags (FreeBSD kqueue_register).  A knote armed
#   one-shot (a waiter was cancelled before it fired; fs.added says it may
#   exist) is deleted before the fd is registered edge-triggered, and
#   disown_fd deletes the EV_CLEAR knotes before any one-shot re-arm.
# * close(fd) deletes every knote on that fd, in every kqueue (kqueue(2)),
#   even when the file lives on through dup() -- unlike epoll, which keeps
#   the registration with the open file description.  There are no zombie
#   registrations, so no generation tag: after close() and reuse of the
#   number an event can only be about the new file.  disown_fd still
#   deletes the knotes itself (one kevent() call), because it is not the
#   close: the owner closes right after, but nothing forces it to.
# * Errors in a changelist come back as EV_ERROR entries in the event list
#   (errno in `data`) -- or, with no room there, as kevent() == -1 after
#   the first failing change, the rest unapplied.  Changes are applied with
#   EV_RECEIPT and an event list as long as the changelist (kq.h
#   rl_kq_apply): every change reports, and kevent() returns without
#   taking pending events, which would be lost.  Without EV_RECEIPT, one
#   change per call.  The wait call itself passes no changes.
# * EV_EOF in flags: EVFILT_READ -- the peer shut its side (reads return
#   0 once the buffer is empty) -> POLLIN|RL_POLLRDHUP, so the shared code
#   marks the read side closed; EVFILT_WRITE -- writing can no longer
#   succeed (peer gone, or our own shutdown(SHUT_WR)) -> POLLOUT: the
#   writers retry and see EPIPE themselves.  With EV_EOF, fflags holds the
#   socket's pending error (ECONNRESET, a failed connect's ECONNREFUSED):
#   nonzero -> POLLERR too, which retries both directions as epoll's
#   EPOLLERR does.  EVFILT_READ cannot tell urgent data apart: POLLPRI is
#   reported with every read event (a POLLPRI waiter wakes spuriously
#   rather than never).
# * Regular files are always readable to poll(2) and epoll refuses them
#   (EPERM, reported as always ready); kqueue accepts them and EVFILT_READ
#   fires only while the offset is before EOF -- as asyncio's
#   KqueueSelector behaves on macOS.  ringline's file ops never wait here
#   (they run on the thread pool on the poll backend).
# * The timeout is a timespec: nanoseconds, no rounding up as with
#   epoll_wait's milliseconds.  Very long ones are capped to epoll's
#   ~24.8 days (XNU turns the timeout into an absolute deadline).
# * fork(): the kqueue is not inherited by the child (kqueue(2)).  The
#   child's copy of our fd number refers to nothing -- or, once reused, to
#   some other file -- so a forked child never closes it (shutdown, dealloc);
#   the wakeup pipe, if any, is inherited and is closed.
# * The wakeup: EVFILT_USER (ident 0, EV_CLEAR), triggered with
#   NOTE_TRIGGER from any thread by wake(), no fd of its own (wake_fd is
#   the kqueue fd, so the loop's "can wake" test holds).  Where EVFILT_USER
#   is missing (older OpenBSD, NetBSD < 10): a non-blocking pipe read by the
#   same WakeOp as the epoll driver's eventfd.

cdef extern from "driver/kq.h" nogil:
    ctypedef struct kevent_t "struct kevent":
        uintptr_t ident
        int filter
        unsigned int flags
        unsigned int fflags
        int64_t data
    ctypedef struct timespec_t "struct timespec":
        long tv_sec
        long tv_nsec
    int kqueue()
    int kevent(int kq, const kevent_t *changes, int nchanges,
               kevent_t *events, int nevents, const timespec_t *timeout)
    void rl_kev_set(kevent_t *ev, uintptr_t ident, int filter, unsigned flags, unsigned fflags)
    int rl_kq_apply(int kq, kevent_t *changes, int n, int *errs)
    int rl_kq_trigger(int kq)
    int rl_pipe_nb(int *fds)
    enum:
        RL_HAVE_KQUEUE
        RL_HAVE_EVFILT_USER
        RL_EVFILT_USER
        RL_KQ_WAKE_IDENT
        EVFILT_READ
        EVFILT_WRITE
        EV_ADD
        EV_DELETE
        EV_ONESHOT
        EV_CLEAR
        EV_ERROR
        EV_EOF

# What one knote covers, in the poll(2) bits of driver/readiness.pxi.
cdef int _KQ_READ_BITS = POLLIN | POLLPRI | RL_POLLRDHUP
cdef int _KQ_WRITE_BITS = POLLOUT


cdef int _kq_apply(KqueueDriver d, kevent_t *ch, int n, int *errs) except -1:
    cdef int calls = rl_kq_apply(d.poller_fd, ch, n, errs)
    if calls < 0:
        err = errno
        raise OSError(err, "kevent: " + os.strerror(err))
    d.n_ctl += <uint64_t>calls
    return 0


@cython.final
cdef class KqueueDriver(_ReadinessDriver):

    def __cinit__(self, LoopCore loop):
        cdef kevent_t ch[1]
        cdef int errs[1]
        cdef int pipefds[2]
        self.wake_rfd = -1
        self.fork_gen = _fork_generation
        self.evbuf = PyMem_Malloc(_POLL_MAX_EVENTS * sizeof(kevent_t))
        if self.evbuf == NULL:
            raise MemoryError()
        self.poller_fd = kqueue()
        if self.poller_fd < 0:
            err = errno
            raise OSError(err, "kqueue: " + os.strerror(err))
        if RL_HAVE_EVFILT_USER:
            rl_kev_set(&ch[0], RL_KQ_WAKE_IDENT, RL_EVFILT_USER, EV_ADD | EV_CLEAR, 0)
            errs[0] = 0
            err = errno if rl_kq_apply(self.poller_fd, ch, 1, errs) < 0 else errs[0]
            if err:
                self._close_poller(False)
                raise OSError(err, "kevent(EVFILT_USER): " + os.strerror(err))
            self.user_wake = True
            self.wake_fd = self.poller_fd
        else:
            if rl_pipe_nb(pipefds) < 0:
                err = errno
                self._close_poller(False)
                raise OSError(err, "pipe: " + os.strerror(err))
            self.wake_rfd = pipefds[0]
            self.wake_fd = pipefds[1]
            self.wake_op = WakeOp.__new__(WakeOp)
            self.wake_op.loop = loop
            self.wake_op.fd = self.wake_rfd

    def __dealloc__(self):
        # A loop dropped without close(): do not leak the descriptors (and
        # do not close, in a forked child, a kqueue it never inherited).
        if self.poller_fd >= 0:
            self._close_poller(self.fork_gen != _fork_generation)
        PyMem_Free(self.evbuf)
        self.evbuf = NULL

    cdef int wake(self) noexcept nogil:
        cdef uint64_t one = 1
        if self.user_wake:
            return rl_kq_trigger(self.poller_fd)
        return <int>write(self.wake_fd, &one, 8)

    # ---- kqueue registration -------------------------------------------

    cdef int _arm(self, _PollFd fs) except -1:
        """Make the kernel watch fs.fd for what its queues need: one
        EV_ONESHOT knote per direction not armed yet."""
        cdef kevent_t ch[2]
        cdef int errs[2]
        cdef int bits[2]
        cdef int n = 0
        cdef int i
        cdef int err = 0
        cdef int want
        cdef int need
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
        need = want & ~fs.armed
        if need & _KQ_READ_BITS:
            rl_kev_set(&ch[n], <uintptr_t>fs.fd, EVFILT_READ, EV_ADD | EV_ONESHOT, 0)
            bits[n] = _KQ_READ_BITS
            n += 1
        if need & _KQ_WRITE_BITS:
            rl_kev_set(&ch[n], <uintptr_t>fs.fd, EVFILT_WRITE, EV_ADD | EV_ONESHOT, 0)
            bits[n] = _KQ_WRITE_BITS
            n += 1
        if n == 0:
            return 0
        _kq_apply(self, ch, n, errs)
        for i in range(n):
            if errs[i] == 0:
                fs.armed |= bits[i]
                fs.added = True
            elif err == 0:
                err = errs[i]
        if err:
            # EBADF (closed), EINVAL (a filter this kind of file lacks)...
            fs.armed = 0
            self._fail_fd(fs, err)
        return 0

    cdef bint _register_owned(self, _PollFd fs) except -1:
        cdef kevent_t ch[4]
        cdef int errs[4]
        cdef int n = 0
        cdef int first
        if fs.added:
            # A one-shot knote may be left (a cancelled waiter): EV_ADD would
            # keep its EV_ONESHOT.  ENOENT when there is none.
            rl_kev_set(&ch[0], <uintptr_t>fs.fd, EVFILT_READ, EV_DELETE, 0)
            rl_kev_set(&ch[1], <uintptr_t>fs.fd, EVFILT_WRITE, EV_DELETE, 0)
            n = 2
            fs.added = False
        first = n
        rl_kev_set(&ch[n], <uintptr_t>fs.fd, EVFILT_READ, EV_ADD | EV_CLEAR, 0)
        rl_kev_set(&ch[n + 1], <uintptr_t>fs.fd, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0)
        n += 2
        _kq_apply(self, ch, n, errs)
        if errs[first] == 0 and errs[first + 1] == 0:
            return True
        if errs[first] == 0 or errs[first + 1] == 0:
            # Half registered (a file without one of the filters): undo it
            # and stay one-shot, whose error paths tell the ops.
            self._unregister_owned(fs)
        return False

    cdef int _unregister_owned(self, _PollFd fs) except -1:
        cdef kevent_t ch[2]
        cdef int errs[2]
        rl_kev_set(&ch[0], <uintptr_t>fs.fd, EVFILT_READ, EV_DELETE, 0)
        rl_kev_set(&ch[1], <uintptr_t>fs.fd, EVFILT_WRITE, EV_DELETE, 0)
        _kq_apply(self, ch, 2, errs)      # ENOENT/EBADF: nothing was left
        fs.added = False
        return 0

    # ---- waiting -------------------------------------------------------

    cdef int _poll(self, int64_t timeout_ns) except -1:
        cdef timespec_t ts
        cdef timespec_t *tsp = NULL
        cdef int n
        if timeout_ns >= 0:
            if timeout_ns >= <int64_t>0x7fffffff * 1000000:
                timeout_ns = <int64_t>0x7fffffff * 1000000
            ts.tv_sec = <long>(timeout_ns // 1000000000)
            ts.tv_nsec = <long>(timeout_ns % 1000000000)
            tsp = &ts
        with nogil:
            n = kevent(self.poller_fd, NULL, 0, <kevent_t*>self.evbuf, _POLL_MAX_EVENTS, tsp)
        self.n_wait += 1
        if n < 0:
            if errno == errno_EINTR:
                # Run Python's signal handlers now (Ctrl-C on an idle loop).
                PyErr_CheckSignals()
                return 0
            err = errno
            raise OSError(err, "kevent: " + os.strerror(err))
        return n

    cdef int _dispatch(self, int n, list done, list touched) except -1:
        cdef kevent_t *events = <kevent_t*>self.evbuf
        cdef int i, fd, filt
        cdef unsigned int flags
        cdef uint32_t revents
        cdef _PollFd fs
        for i in range(n):
            filt = events[i].filter
            if self.user_wake and filt == RL_EVFILT_USER:
                # Cleared before the ready queue runs, as WakeOp does.
                self.loop._wake_pending = False
                continue
            fd = <int>events[i].ident
            fs = self.fds.get(fd)
            if fs is None:
                self.n_stale += 1
                continue
            flags = events[i].flags
            if filt == EVFILT_READ:
                revents = POLLIN | POLLPRI
                if flags & EV_EOF:
                    revents |= RL_POLLRDHUP
                if not fs.et:
                    fs.armed &= ~_KQ_READ_BITS      # the one-shot knote is gone
            elif filt == EVFILT_WRITE:
                revents = POLLOUT
                if not fs.et:
                    fs.armed &= ~_KQ_WRITE_BITS
            else:
                self.n_stale += 1
                continue
            if flags & EV_ERROR:
                # Only changes report EV_ERROR and this call made none; if
                # one shows up anyway, let the ops find the error themselves.
                revents |= POLLERR
            elif flags & EV_EOF and events[i].fflags != 0:
                revents |= POLLERR
            touched.append(fs)
            self._process(fs, revents, done)
        return 0

    # ---- teardown ------------------------------------------------------

    cdef int _close_poller(self, bint forked) except -1:
        # A forked child never inherited the kqueue: its number is not ours
        # to close there.  The pipe ends were inherited: close them.
        if not forked and self.poller_fd >= 0:
            close(self.poller_fd)
        self.poller_fd = -1
        if self.user_wake:
            self.wake_fd = -1       # it was the kqueue fd
        elif self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        if self.wake_rfd >= 0:
            close(self.wake_rfd)
            self.wake_rfd = -1
        return 0

    def stats(self):
        return self._stats('kqueue', 'kevent_wait', 'kevent_changes')
