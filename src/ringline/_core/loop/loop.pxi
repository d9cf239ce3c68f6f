# Layer: loop (_core/loop/).  It owns LoopCore -- the ready queue, timers,
# one driver wait per iteration, the cross-thread call path -- and what every
# face shares on top of the driver: Op and the socket ops with their per-
# socket lanes (ops.pxi), Handle/TimerHandle and the timer heap (handles.pxi),
# and the read buffers lent per read (bufpool.pxi).  It chooses and owns the
# driver but may not depend on one: io_uring and the poll backend run the
# same code here.  It may not know transports (transport/) or the runtime
# API's connection (runtime/); they are built on it.
#
# The loop core: ready queue, timer heap, one driver wait per iteration.
#
# ringline.EventLoop (in ringline/aio/_loop.py) is
#     class EventLoop(LoopCore, asyncio.BaseEventLoop)
# so asyncio's own code provides everything that is not on the hot path
# (tasks, exception handler, executor, async generators, create_connection
# and friends on top of our sock_* and transports), and this class replaces
# what is: callbacks, timers, the iteration, socket operations.


cdef enum:
    RBUF_SIZE = 262144      # one recv: a large message in one read (uvloop reads 256 KiB too)
    # Direct resumes run per iteration at most (Resumable, handles.pxi): a
    # burst of ready connections cannot hold back the timers and callbacks.
    DIRECT_BUDGET = 256


cdef class LoopCore:

    def __cinit__(self, *args, **kwargs):
        self._rbufs = BufPool(RBUF_SIZE)

    def _core_init(self, backend):
        self._ready = []
        self._ready_spare = []
        self._direct = []
        self._direct_spare = []
        self._direct_budget = DIRECT_BUDGET
        self._timers = TimerHeap()
        self._readers = {}
        self._writers = {}
        self._rearm = []
        self._stash = {}
        self._lanes = {}
        self._future_type = _Future
        self._fork_gen = _fork_generation
        self._clock_resolution = 1e-9
        self.slow_callback_duration = 0.1
        self._driver = _make_driver(self, backend)
        self._driver.arm_wakeup()

    # ---- checks ----------------------------------------------------------

    cdef inline int _check_closed_c(self) except -1:
        if self._closed:
            raise RuntimeError('Event loop is closed')
        if self._fork_gen != _fork_generation:
            self._check_fork()
        return 0

    cdef int _check_fork(self) except -1:
        if self._fork_gen != _fork_generation:
            raise RuntimeError(
                'this ringline event loop was created in a parent process and '
                'cannot be used after fork(); create a new event loop in the child')
        return 0

    def _check_closed(self):
        self._check_closed_c()

    # ---- time and callbacks ---------------------------------------------

    def time(self):
        return rl_monotonic_ns() * 1e-9

    def get_debug(self):
        # Compiled: every asyncio Future created on this loop asks for it.
        return self._debug

    def create_future(self):
        # BaseEventLoop.create_future, compiled: asyncio's streams create
        # one per read that has to wait (StreamReader._wait_for_data).
        return _Future(loop=self)

    cdef inline Handle _call_soon_c(self, object callback, tuple args, object context):
        cdef Handle h = Handle.__new__(Handle)
        h._init(callback, args, self, context)
        self._ready.append(h)
        return h

    def call_soon(self, callback, *args, context=None):
        self._check_closed_c()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, 'call_soon')
        h = self._call_soon_c(callback, args, context)
        return h

    def _call_soon(self, callback, args, context):
        return self._call_soon_c(callback, args, context)

    def call_soon_threadsafe(self, callback, *args, context=None):
        self._check_closed_c()
        if self._debug:
            self._check_callback(callback, 'call_soon_threadsafe')
        h = self._call_soon_c(callback, args, context)
        self._write_to_self()
        return h

    def _write_to_self(self):
        # One eventfd write per sleep is enough: the flag is cleared by the
        # loop when it reads the eventfd, before it runs the ready queue.
        cdef Driver d = self._driver
        if not self._wake_pending and d is not None and d.wake_fd >= 0:
            self._wake_pending = True
            with nogil:
                d.wake()

    def call_later(self, delay, callback, *args, context=None):
        if delay is None:
            raise TypeError('delay must not be None')
        cdef double d = delay
        if d != d:
            raise ValueError('delay must not be NaN')
        timer = self._call_at(self.time() + d, callback, args, context, 'call_later')
        return timer

    def call_at(self, when, callback, *args, context=None):
        if when is None:
            raise TypeError('when cannot be None')
        cdef double w = when
        if w != w:
            raise ValueError('when must not be NaN')
        return self._call_at(w, callback, args, context, 'call_at')

    cdef TimerHandle _call_at(self, double when, object callback, tuple args,
                              object context, str method):
        self._check_closed_c()
        if self._debug:
            self._check_thread()
            self._check_callback(callback, method)
        cdef TimerHandle t = TimerHandle.__new__(TimerHandle)
        t._init(callback, args, self, context)
        t._when = when
        t._heap_index = -1
        self._timers.push(t)
        return t

    def _timer_handle_cancelled(self, handle):
        pass

    @property
    def _scheduled(self):
        return self._timers.items

    # ---- the iteration ---------------------------------------------------

    cdef int _run_once_c(self) except -1:
        cdef list ready = self._ready
        cdef TimerHeap timers = self._timers
        cdef int64_t timeout_ns, trim_ns
        cdef double dt
        cdef list expired = None
        cdef bint ran_first = False

        if len(ready) or self._stopping or PyList_GET_SIZE(self._direct):
            timeout_ns = 0
            # asyncio runs what was queued before an iteration's poll ahead
            # of the I/O callbacks that poll produces (its handles go to the
            # back of the ready queue), then the timers due at the poll.
            # Completions here run their callbacks as they are reaped, so the
            # earlier queue runs first; the timers due now are taken before
            # it runs (a timer it creates waits for the next iteration).
            if len(ready):
                if len(timers.items):     # (a call and a None less per iteration)
                    expired = self._pop_expired()
                self._run_ready()
                ran_first = True
        elif len(timers.items):
            dt = (<TimerHandle>timers.items[0])._when - rl_monotonic_ns() * 1e-9
            if dt <= 0:
                timeout_ns = 0
            elif dt > 86400.0:
                timeout_ns = 86400 * 1000000000
            else:
                # Round up so we never wake just before the deadline.
                timeout_ns = <int64_t>(dt * 1e9) + 1
        else:
            timeout_ns = -1
        if self._rbufs.nfree > self._rbufs.idle_keep:
            trim_ns = self._rbufs.trim(rl_monotonic_ns())
            if trim_ns >= 0 and (timeout_ns < 0 or timeout_ns > trim_ns):
                timeout_ns = trim_ns + 1

        self._driver.wait(timeout_ns)
        if PyList_GET_SIZE(self._direct):     # (never None: a macro, no check)
            self._run_direct()

        if ran_first:
            if expired is not None:
                self._run_handles(expired)
        else:
            # Expired timers next, ahead of what the I/O callbacks queued
            # (asyncio: [I/O, timers], then the next iteration).
            if len(timers.items):
                expired = self._pop_expired()
                if expired is not None:
                    self._ready[0:0] = expired
        if not ran_first and len(self._ready):
            # What the I/O callbacks queued runs in this iteration (one
            # io_uring_enter fewer per message for streams; asyncio runs it
            # after its next poll, which finds nothing new in between).
            self._run_ready()

        if self._rearm:
            rearm = self._rearm
            self._rearm = []
            for op in rearm:
                (<PollOp>op).queued = False
                if (<PollOp>op).active and (<PollOp>op).state == OP_IDLE:
                    self._driver.start(<PollOp>op)
        if self._iter_hook is not None:
            # The runtime API's per-iteration work (metrics, on_tick).
            self._iter_hook()
        return 0

    cdef list _pop_expired(self):
        # The timers due now (asyncio: _when < time() + clock resolution).
        cdef TimerHeap timers = self._timers
        cdef double end
        cdef list expired
        if not len(timers.items):
            return None
        end = rl_monotonic_ns() * 1e-9 + self._clock_resolution
        if (<TimerHandle>timers.items[0])._when >= end:
            return None
        expired = []
        while len(timers.items) and (<TimerHandle>timers.items[0])._when < end:
            expired.append(timers.pop())
        return expired

    cdef int _run_ready(self) except -1:
        # Run what is ready now; callbacks scheduled meanwhile go to the
        # other list and run next time (asyncio's ntodo snapshot).
        cdef list todo = self._ready
        self._ready = self._ready_spare
        try:
            self._run_handles(todo)
        finally:
            rl_list_reset(todo)
            self._ready_spare = todo
        return 0

    cdef int _run_direct(self) except -1:
        # The Resumables the poll queued, in order, up to the budget; the
        # rest stay queued (ahead of new ones) for the next iteration.
        cdef list todo = self._direct
        cdef Py_ssize_t i, n = len(todo)
        if n > self._direct_budget:
            self._direct = todo[self._direct_budget:]
            del todo[self._direct_budget:]
            self.direct_deferred += n - self._direct_budget
            n = self._direct_budget
        else:
            self._direct = self._direct_spare
        try:
            for i in range(n):
                (<Resumable>todo[i]).resume()
        finally:
            rl_list_reset(todo)
            self._direct_spare = todo
            if self._direct_task_in:
                # The last direct step's task stays current until here (the
                # next step replaces it in place: no delete and insert per step).
                self._direct_task_in = False
                rl_dict_discard(_current_tasks, self)
        self.direct_steps += n
        return 0

    cdef int _run_handles(self, list todo) except -1:
        cdef Py_ssize_t i = 0, ntodo = len(todo)
        cdef Handle handle = None
        cdef double t0, dt
        try:
            if self._debug:
                while i < ntodo:
                    handle = <Handle?>todo[i]
                    # Dropped as it runs, as asyncio's popleft() does: what a
                    # callback held (a finished task) goes before the next.
                    todo[i] = None
                    i += 1
                    if handle._cancelled:
                        continue
                    try:
                        self._current_handle = handle
                        t0 = self.time()
                        handle.run()
                        dt = self.time() - t0
                        if dt >= self.slow_callback_duration:
                            _compat.logger.warning(
                                'Executing %s took %.3f seconds',
                                _compat.format_handle(handle), dt)
                    finally:
                        self._current_handle = None
            else:
                while i < ntodo:
                    handle = <Handle?>todo[i]
                    todo[i] = None
                    i += 1
                    if not handle._cancelled:
                        handle.run()
        finally:
            handle = None
            if i < ntodo:
                # Interrupted (KeyboardInterrupt, SystemExit): what did
                # not run stays first in line.
                self._ready[0:0] = todo[i:]
        return 0

    def _run_once(self):
        self._run_once_c()

    def _run_forever_inner(self):
        # The body of run_forever; the setup around it is asyncio's.
        self._check_fork()
        self._driver.enter_thread()
        try:
            while True:
                self._run_once_c()
                if self._stopping:
                    break
        finally:
            if self._driver is not None:
                self._driver.leave_thread()

    def _core_close(self):
        cdef bint forked = self._fork_gen != _fork_generation
        self._ready.clear()
        self._direct.clear()
        self._timers.clear()
        for op in list(self._readers.values()) + list(self._writers.values()):
            (<PollOp>op).active = False
        self._readers.clear()
        self._writers.clear()
        if self._driver is not None:
            self._driver.shutdown(forked)
        self._stash.clear()
        self._lanes.clear()
        self._rbufs.release()   # ops hold theirs until their final CQE

    def _flush(self):
        """Hand queued SQEs (e.g. cancels) to the kernel now.  Used where
        asyncio's effect is synchronous: a listening socket closed by
        Server.close() must refuse connections at once, which it does only
        once the ring has dropped the accept's file reference."""
        if self._driver is not None:
            self._driver.flush()

    def _driver_stats(self):
        d = self._driver.stats() if self._driver is not None else {}
        d['direct_steps'] = self.direct_steps
        d['direct_deferred'] = self.direct_deferred
        return d

    def _set_direct_budget(self, Py_ssize_t n):
        """Direct resumes per iteration at most (tests); returns the old."""
        if n < 1:
            raise ValueError(f"direct budget must be at least 1, got {n}")
        old, self._direct_budget = self._direct_budget, n
        return old

    @property
    def _backend(self):
        return self._driver.name

    # ---- futures ------------------------------------------------------------

    cdef object _new_future(self):
        return self._future_type(loop=self)

    # ---- readers and writers ----------------------------------------------

    def add_reader(self, fd, callback, *args):
        self._ensure_fd_no_transport(fd)
        self._add_poller(fd, POLLIN, self._readers, callback, args, 'add_reader')

    def add_writer(self, fd, callback, *args):
        self._ensure_fd_no_transport(fd)
        self._add_poller(fd, POLLOUT, self._writers, callback, args, 'add_writer')

    def remove_reader(self, fd):
        self._ensure_fd_no_transport(fd)
        return self._remove_poller(fd, self._readers)

    def remove_writer(self, fd):
        self._ensure_fd_no_transport(fd)
        return self._remove_poller(fd, self._writers)

    def _add_reader(self, fd, callback, *args):
        self._add_poller(fd, POLLIN, self._readers, callback, args, 'add_reader')

    def _add_writer(self, fd, callback, *args):
        self._add_poller(fd, POLLOUT, self._writers, callback, args, 'add_writer')

    def _remove_reader(self, fd):
        return self._remove_poller(fd, self._readers)

    def _remove_writer(self, fd):
        return self._remove_poller(fd, self._writers)

    def _poller_events(self, int fd):
        """selectors.EVENT_READ | EVENT_WRITE for fd's registered pollers."""
        mask = 0
        if fd in self._readers:
            mask |= 1
        if fd in self._writers:
            mask |= 2
        return mask

    cdef _add_poller(self, object fd, int events, dict table, object callback,
                     tuple args, str method):
        cdef int fdn = _fileobj_to_fd(fd)
        cdef PollOp op
        self._check_closed_c()
        if self._debug:
            self._check_callback(callback, method)
        handle = Handle.__new__(Handle)
        (<Handle>handle)._init(callback, args, self, None)
        op = table.get(fdn)
        if op is not None:
            if op.handle is not None:
                op.handle.cancel()
            op.handle = handle
            if op.state == OP_IDLE and not op.queued:
                op.active = True
                self._driver.start(op)
            return
        op = PollOp.__new__(PollOp)
        op.loop = self
        op.fd = fdn
        op.events = events
        op.handle = handle
        op.active = True
        table[fdn] = op
        self._driver.start(op)

    cdef bint _remove_poller(self, object fd, dict table) except -1:
        cdef int fdn = _fileobj_to_fd(fd)
        cdef PollOp op
        if self._closed:
            return False
        op = table.pop(fdn, None)
        if op is None:
            return False
        op.active = False
        if op.handle is not None:
            op.handle.cancel()
            op.handle = None
        if op.state == OP_INFLIGHT:
            self._driver.cancel(op)
        return True

    # ---- socket operations in the ring ------------------------------------

    cdef int _sock_fd(self, object sock) except -1:
        self._check_closed_c()
        if _ssl_socket_type is not None and isinstance(sock, _ssl_socket_type):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        cdef int fd = sock.fileno()
        if fd < 0:
            raise OSError(errno_mod.EBADF, 'Bad file descriptor')
        return fd

    # The public sock_* are coroutines, as asyncio's are (callers may pass
    # them to create_task); each awaits the future of one op in the ring.
    # A read's coroutine tells its lane when it is done with the result
    # (ops.pxi): cancelled after the future got it, it puts it back.
    async def sock_recv(self, sock, n):
        cdef Op op
        fut = self._new_future()
        op = _recv_op(self, fut, sock, n)
        if op is None:
            return b''
        try:
            result = await fut
        except BaseException:
            _lane_unclaimed(op, fut, None)
            raise
        _lane_claimed(op)
        return result

    async def sock_recv_into(self, sock, buf):
        cdef Op op
        fut = self._new_future()
        op = _recv_into_op(self, fut, sock, buf)
        try:
            result = await fut
        except BaseException:
            _lane_unclaimed(op, fut, buf)
            raise
        _lane_claimed(op)
        return result

    async def sock_recvfrom(self, sock, bufsize):
        cdef Op op
        fut = self._new_future()
        op = _recvmsg_op(self, fut, sock, None, bufsize)
        try:
            result = await fut
        except BaseException:
            _lane_unclaimed(op, fut, None)
            raise
        _lane_claimed(op)
        return result

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        cdef Op op
        if not nbytes:
            nbytes = len(buf)
        fut = self._new_future()
        op = _recvmsg_op(self, fut, sock, buf, nbytes)
        try:
            result = await fut
        except BaseException:
            _lane_unclaimed(op, fut, buf)
            raise
        _lane_claimed(op)
        return result

    async def sock_accept(self, sock):
        cdef Op op
        fut = self._new_future()
        op = _accept_op(self, fut, sock)
        try:
            result = await fut
        except BaseException:
            _lane_unclaimed(op, fut, None)
            raise
        _lane_claimed(op)
        return result

    async def sock_sendall(self, sock, data):
        fut = self._new_future()
        if _sendall_op(self, fut, sock, data) is None:
            return None
        return await fut

    def _sock_connect_ring(self, sock, address):
        """Connect in the ring when the address encodes directly; else return
        None and let the caller use the socket module's path."""
        cdef int fd = self._sock_fd(sock)
        cdef ConnectOp op = ConnectOp.__new__(ConnectOp)
        if not _encode_sockaddr(sock.family, address, &op.addr, &op.addrlen):
            return None
        fut = self._new_future()
        op.bind(self, fut, fd, sock)
        self._driver.start(op)
        # asyncio calls connect() before sock_connect first yields, and
        # callers rely on it (a blocking accept() right after one
        # iteration): hand this SQE to the kernel now, not next iteration.
        self._driver.flush()
        return fut

    def _sock_sendmsg(self, sock, data, address):
        cdef int fd = self._sock_fd(sock)
        cdef SendMsgOp op = SendMsgOp.__new__(SendMsgOp)
        cdef socklen_t addrlen = 0
        if address is not None:
            if not _encode_sockaddr(sock.family, address, &op.addr, &addrlen):
                return None
        op.setup(data, addrlen)
        fut = self._new_future()
        op.bind(self, fut, fd, sock)
        self._driver.start(op)
        return fut

    def _poll_once(self, fd, int events):
        """A future resolved when fd is ready for events (POLLIN/POLLOUT)."""
        self._check_closed_c()
        cdef OneShotPollOp op = OneShotPollOp.__new__(OneShotPollOp)
        op.events = events
        fut = self._new_future()
        op.bind(self, fut, _fileobj_to_fd(fd))
        self._driver.start(op)
        return fut

    def _wait_child(self, pidfd):
        """(op, future) reaping the child behind pidfd in the ring
        (IORING_OP_WAITID, waitid.pxi), or None where this loop cannot."""
        self._check_closed_c()
        return _waitid_start(self, _fileobj_to_fd(pidfd))


# The ops of the sock_* coroutines, started in their socket's lane (ops.pxi).
cdef Op _recv_op(LoopCore loop, object fut, object sock, object n):
    cdef int fd = loop._sock_fd(sock)
    cdef Py_ssize_t nbytes = n
    cdef RecvOp op
    if nbytes < 0:
        raise ValueError('negative buffersize in recv')
    if nbytes == 0:
        return None
    op = RecvOp.__new__(RecvOp)
    op.alloc(nbytes)
    op.bind(loop, fut, fd, sock)
    op.held = True
    _lane_join(loop, op, LANE_READ)
    return op


cdef Op _recv_into_op(LoopCore loop, object fut, object sock, object buf):
    cdef int fd = loop._sock_fd(sock)
    cdef RecvIntoOp op = RecvIntoOp.__new__(RecvIntoOp)
    op.set_buffer(buf, 0)
    op.bind(loop, fut, fd, sock)
    op.held = True
    _lane_join(loop, op, LANE_READ)
    return op


cdef Op _recvmsg_op(LoopCore loop, object fut, object sock, object buf, Py_ssize_t nbytes):
    cdef int fd = loop._sock_fd(sock)
    cdef RecvMsgOp op
    if buf is None and nbytes < 0:
        raise ValueError('negative buffersize in recvfrom')
    op = RecvMsgOp.__new__(RecvMsgOp)
    op.setup(sock, buf, nbytes)
    op.bind(loop, fut, fd, sock)
    op.held = True
    _lane_join(loop, op, LANE_READ)
    return op


cdef Op _accept_op(LoopCore loop, object fut, object sock):
    cdef int fd = loop._sock_fd(sock)
    cdef AcceptOp op = AcceptOp.__new__(AcceptOp)
    op.sock = sock
    op.bind(loop, fut, fd, sock)
    op.held = True
    _lane_join(loop, op, LANE_READ)
    return op


cdef Op _sendall_op(LoopCore loop, object fut, object sock, object data):
    cdef int fd = loop._sock_fd(sock)
    cdef SendOp op = SendOp.__new__(SendOp)
    op.set_buffer(data)
    if op.view.len == 0:
        op._release()
        return None
    op.bind(loop, fut, fd, sock)
    _lane_join(loop, op, LANE_WRITE)
    return op


# A poll that resolves a future once (connect fallback, sock_* fallbacks).
@cython.final
cdef class OneShotPollOp(Op):
    cdef int events

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_POLL_ADD
        sqe.fd = self.fd
        sqe.poll32_events = self.events
        return 0

    cdef int attempt(self) except? -1:
        return -errno_EAGAIN    # readiness only (the poll driver knows)

    cdef int poll_events(self):
        return self.events


cdef int _fileobj_to_fd(object fileobj) except -1:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


def pollers():
    """The readiness mechanisms compiled into this build for the poll
    backend: epoll on Linux, kqueue on macOS/BSD (or a libkqueue build)."""
    return tuple(name for name, ok in (('epoll', RL_HAVE_EPOLL), ('kqueue', RL_HAVE_KQUEUE)) if ok)


def poller():
    """The mechanism a poll-backend loop uses here: the first one compiled
    in (epoll on Linux), or ``RINGLINE_POLLER`` where a build has both."""
    compiled = pollers()
    requested = os.environ.get('RINGLINE_POLLER') or None
    if requested is None:
        if not compiled:
            raise RuntimeError("no poller (epoll or kqueue) is compiled into this build of ringline")
        return compiled[0]
    if requested not in ('epoll', 'kqueue'):
        raise ValueError(f"unknown RINGLINE_POLLER {requested!r}: expected one of epoll, kqueue")
    if requested not in compiled:
        raise RuntimeError(
            f"the {requested} poller is not compiled into this build of ringline "
            f"(compiled: {', '.join(compiled) or 'none'})")
    return requested


cdef Driver _make_driver(LoopCore loop, backend):
    if backend is None or backend == 'io_uring':
        return UringDriver(loop, _sq_entries_default, _cq_entries_default)
    if backend == 'poll':
        return PollDriver(loop) if poller() == 'epoll' else KqueueDriver(loop)
    raise ValueError(f"unknown ringline backend {backend!r} (expected 'io_uring' or 'poll')")
