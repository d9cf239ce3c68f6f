# Socket operations as driver ops.  Each op owns what the kernel touches
# (buffers, sockaddr, msghdr) for as long as it is in flight, and turns the
# completion into its future's result.
#
# Cancellation: the op is registered as a done-callback of its future only
# to notice cancel(); it removes itself before setting a result, so the
# normal path schedules no extra callback.  A cancelled op asks the driver
# to cancel it in the kernel.  What the kernel delivered anyway goes to the
# loop's stash for the next call on that socket: io_uring still posts the
# op's own result when its completion won the race with ASYNC_CANCEL, and
# the poll backend keeps a result it already holds.  So does a result that
# reached the future after its task was cancelled but before the task
# resumed (Task.cancel() then throws CancelledError over it): the sock_*
# coroutine puts it back (_lane_unclaimed).
#
# Lanes: the sock_* ops of one socket run one at a time per direction, in
# call order (reads: recv, recv_into, recvfrom(_into), accept; writes:
# sendall).  An op leaves its lane after its final completion -- so what a
# cancelled read got is in the stash before the next read looks there, and
# a cancelled send's kernel op is over before the next send starts -- and,
# when its coroutine may still want the result, once that coroutine took
# it or put it back.

cdef enum:
    OP_IDLE = 0
    OP_INFLIGHT = 1
    OP_CANCELLING = 2

cdef enum:
    LANE_READ = 1
    LANE_WRITE = 2


cdef class Op:

    def __cinit__(self, *args, **kwargs):
        _live.ops += 1

    def __dealloc__(self):
        _live.ops -= 1

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        raise NotImplementedError

    cdef int attempt(self) except? -1:
        raise NotImplementedError

    cdef int poll_events(self):
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0:
            return self.fail(-res)
        return self.finish(res)

    cdef int finish(self, object result) except -1:
        cdef object fut = self.fut
        self.fut = None
        if fut is None or fut.done():
            self.held = False
            return 0
        fut.remove_done_callback(self)
        fut.set_result(result)
        return 0

    cdef int fail(self, int err) except -1:
        cdef object fut = self.fut
        self.fut = None
        self.held = False
        if fut is None or fut.done():
            return 0
        fut.remove_done_callback(self)
        if err == errno_ECANCELED:
            fut.cancel()
        else:
            fut.set_exception(_os_error(err))
        return 0

    cdef inline int bind(self, LoopCore loop, object fut, int fd, object owner=None) except -1:
        self.loop = loop
        self.fut = fut
        self.fd = fd
        self.owner = owner
        fut.add_done_callback(self)
        return 0

    cdef int drop(self) except -1:
        # Never to run (cancelled in its lane): let go of its buffers.
        return 0

    cdef int take_kept(self) except -1:
        # Served from the stash: 1, else 0.
        return 0

    cdef int keep_unclaimed(self, object result, object buf) except -1:
        # The result reached the future, its task did not take it: stash it.
        return 0

    cdef int quiet(self, int res, uint32_t flags) except -1:
        # Its final completion, reaped while the loop closes: no callback
        # runs then; an op whose result must outlive the loop keeps it.
        return 0

    def __call__(self, fut):
        # Done-callback: only reached when the future was cancelled (or
        # completed by someone else) while we were in flight.
        if self.state == OP_INFLIGHT and self.loop._driver is not None:
            self.loop._driver.cancel(self)

    def __repr__(self):
        return f'<{type(self).__name__} fd={self.fd} state={self.state}>'


cdef object _os_error(int err):
    exc_type = _errno_exc.get(err, OSError)
    return exc_type(err, os.strerror(err))


_errno_exc = {
    errno_mod.ECONNREFUSED: ConnectionRefusedError,
    errno_mod.ECONNRESET: ConnectionResetError,
    errno_mod.ECONNABORTED: ConnectionAbortedError,
    errno_mod.EPIPE: BrokenPipeError,
    errno_mod.ESHUTDOWN: BrokenPipeError,
    errno_mod.ETIMEDOUT: TimeoutError,
    errno_mod.EAGAIN: BlockingIOError,
    errno_mod.EINPROGRESS: BlockingIOError,
    errno_mod.EALREADY: BlockingIOError,
    errno_mod.EINTR: InterruptedError,
    errno_mod.ENOENT: FileNotFoundError,
    errno_mod.EEXIST: FileExistsError,
    errno_mod.EACCES: PermissionError,
    errno_mod.EPERM: PermissionError,
    errno_mod.EBADF: OSError,
}


# The stash: results the kernel delivered that no caller took, kept for the
# next operation of the same kind on the same socket object: 'recv' (every
# read: (bytes, address, whether the socket keeps message boundaries)) or
# 'accept' ((socket, address)).  Keyed by fd for lookup, but each entry
# remembers (weakly) which socket it came from, so a new socket that reuses
# the fd number never sees another connection's bytes.
cdef inline int _stash_put(LoopCore loop, int fd, object owner, object kind, object value) except -1:
    q = loop._stash.get(fd)
    if q is None:
        q = loop._stash[fd] = collections.deque()
    q.append((_weakref(owner) if owner is not None else None, kind, value))
    return 0


cdef inline int _stash_front(LoopCore loop, int fd, object owner, object kind, object value) except -1:
    q = loop._stash.get(fd)
    if q is None:
        q = loop._stash[fd] = collections.deque()
    q.appendleft((_weakref(owner), kind, value))
    return 0


cdef object _stash_take(LoopCore loop, int fd, object owner, object kind):
    q = loop._stash.get(fd)
    if q is None:
        return None
    # Entries of a socket that no longer exists (or another object on this
    # fd number) are stale: drop them.
    while q and (q[0][0] is None or q[0][0]() is not owner):
        q.popleft()
    result = None
    if q and q[0][1] == kind:
        result = q.popleft()[2]
    if not q:
        del loop._stash[fd]
    return result


cdef int _keep_read(Op op, object data, object addr, bint front) except -1:
    # Bytes a read got: a stream's chunk, or one datagram (seqpacket
    # message) -- a later, shorter read truncates it as recv(2) would.
    cdef bint message = op.owner is not None and op.owner.type != SOCK_STREAM
    if not data and not message:
        return 0        # EOF: the socket says it again
    if front:
        return _stash_front(op.loop, op.fd, op.owner, 'recv', (data, addr, message))
    return _stash_put(op.loop, op.fd, op.owner, 'recv', (data, addr, message))


cdef object _kept_read(Op op, Py_ssize_t limit):
    """(bytes, address) the stash has for a read of up to `limit` bytes, or
    None.  A stream's bytes past the limit stay first in line."""
    entry = _stash_take(op.loop, op.fd, op.owner, 'recv')
    if entry is None:
        return None
    data, addr, message = entry
    if len(data) > limit:
        if not message:
            _stash_front(op.loop, op.fd, op.owner, 'recv', (data[limit:], addr, False))
        data = data[:limit]
    return data, addr


cdef inline object _no_addr(Op op):
    # What recvfrom() says when the kernel gives no address (a stream).
    return _decode_sockaddr(NULL, 0, op.owner)


cdef bytes _copy_out(object buf, Py_ssize_t n):
    # The first n bytes of a caller's buffer (a recv_into's result).
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        return PyBytes_FromStringAndSize(<char*>view.buf, min(n, view.len))
    finally:
        PyBuffer_Release(&view)


# ---- lanes ---------------------------------------------------------------------

cdef inline object _lane_key(Op op):
    return (op.fd << 1) | (op.lane - 1)


cdef int _lane_join(LoopCore loop, Op op, int lane) except -1:
    """Start a sock_* op behind the ops of its socket and direction."""
    cdef Op tail
    cdef dict lanes = loop._lanes
    op.lane = lane
    key = _lane_key(op)
    tail = lanes.get(key)
    lanes[key] = op
    if tail is not None and tail.owner is op.owner:
        tail.successor = op
        return 0
    # (A tail of another socket object that had this fd number: not ours.)
    return _lane_run(loop, op, False)


cdef int _lane_run(LoopCore loop, Op op, bint waited) except -1:
    """op is first in its lane: serve it from the stash or start it; go on
    with the next while the lane need not wait for anyone."""
    cdef object fut
    while op is not None:
        fut = op.fut
        if fut is None or fut.done():
            # Cancelled while it waited for its turn.
            op.fut = None
            op.held = False
            op.drop()
        elif not (loop._stash and op.take_kept()):
            try:
                if waited and op.owner.fileno() != op.fd:
                    # Closed while it waited: the number may name another file.
                    raise _os_error(errno_mod.EBADF)
                loop._driver.start(op)
                return 0
            except Exception as exc:
                op.fut = None
                op.held = False
                op.drop()
                fut.remove_done_callback(op)
                fut.set_exception(exc)
        op.over = True
        if op.held:
            return 0        # its coroutine moves the lane on (_lane_claimed)
        op = _lane_pop(op)
        waited = True
    return 0


cdef Op _lane_pop(Op op):
    """op leaves its lane; the op behind it, if any."""
    cdef Op nxt = op.successor
    cdef dict lanes
    op.successor = None
    if nxt is None:
        lanes = op.loop._lanes
        key = _lane_key(op)
        if lanes.get(key) is op:
            del lanes[key]
    op.lane = 0
    return nxt


cdef int _lane_over(Op op) except -1:
    """op's final completion came (its result is in its future or stashed)."""
    op.over = True
    if op.lane and not op.held:
        _lane_run(op.loop, _lane_pop(op), True)
    return 0


cdef int _lane_claimed(Op op) except -1:
    """The coroutine awaiting op is done with it."""
    op.held = False
    if op.lane and op.over:
        _lane_run(op.loop, _lane_pop(op), True)
    return 0


cdef int _lane_unclaimed(Op op, object fut, object buf) except -1:
    """The coroutine awaiting op ends with an exception (its task was
    cancelled): a result the future already has goes back to the stash,
    first in line; an op still pending is cancelled."""
    if op.loop._closed:
        # The coroutine is closed by the GC after its loop was (its task
        # never resumed): the ring gave every op back at close, nothing is
        # left to hand on, and cancelling the future would raise "Event loop
        # is closed" out of a finalizer, where asyncio raises nothing.
        op.held = False
        return 0
    try:
        if not fut.done():
            fut.cancel()
        elif op.held and not fut.cancelled() and fut.exception() is None:
            op.keep_unclaimed(fut.result(), buf)
    finally:
        _lane_claimed(op)
    return 0


# recv(n) -> bytes.  The bytes object is allocated at its maximum size and
# the kernel writes into it; it is shrunk in place on completion while the
# op holds its only reference (_PyBytes_Resize's rule), so the data is
# copied zero times.
@cython.final
cdef class RecvOp(Op):
    cdef PyObject *buf          # owned reference, refcount 1 until completion
    cdef Py_ssize_t nbytes
    cdef int flags

    cdef int alloc(self, Py_ssize_t nbytes) except -1:
        data = PyBytes_FromStringAndSize(NULL, nbytes)
        Py_INCREF(data)
        self.buf = <PyObject*>data
        self.nbytes = nbytes
        return 0

    cdef inline object take(self, Py_ssize_t n):
        cdef object result
        if n != self.nbytes:
            if _PyBytes_Resize(&self.buf, n) < 0:
                self.buf = NULL
                raise MemoryError()
        result = <object>self.buf
        Py_DECREF(result)
        self.buf = NULL
        return result

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_RECV
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>PyBytes_AS_STRING(<object>self.buf)
        sqe.len = <uint32_t>self.nbytes
        sqe.msg_flags = self.flags
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n = recv(self.fd, PyBytes_AS_STRING(<object>self.buf), self.nbytes,
                              self.flags | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int drop(self) except -1:
        if self.buf != NULL:
            Py_XDECREF(self.buf)
            self.buf = NULL
        return 0

    cdef int take_kept(self) except -1:
        kept = _kept_read(self, self.nbytes)
        if kept is None:
            return 0
        self.drop()
        self.finish(kept[0])
        return 1

    cdef int keep_unclaimed(self, object result, object buf) except -1:
        return _keep_read(self, result, _no_addr(self), True)

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef object data
        try:
            if res < 0:
                return self.fail(-res)
            if res > 0:
                RL_KERNEL_WROTE(PyBytes_AS_STRING(<object>self.buf), res)
            data = self.take(res) if res > 0 else b''
            if self.fut is None or self.fut.done():
                # Cancelled after the kernel already took the bytes: keep them.
                _keep_read(self, data, _no_addr(self), False)
                self.fut = None
                self.held = False
                return 0
            return self.finish(data)
        finally:
            _lane_over(self)

    def __dealloc__(self):
        if self.buf != NULL:
            Py_XDECREF(self.buf)
            self.buf = NULL


# recv_into(buf) -> int.  The kernel writes straight into the caller's buffer,
# which stays exported (PyObject_GetBuffer) until the final completion.
@cython.final
cdef class RecvIntoOp(Op):
    cdef Py_buffer view
    cdef bint has_view
    cdef int flags

    cdef int set_buffer(self, object buf, Py_ssize_t nbytes) except -1:
        PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
        self.has_view = True
        if nbytes <= 0 or nbytes > self.view.len:
            nbytes = self.view.len
        self.view.len = nbytes
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_RECV
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>self.view.buf
        sqe.len = <uint32_t>self.view.len
        sqe.msg_flags = self.flags
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n = recv(self.fd, self.view.buf, self.view.len, self.flags | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int drop(self) except -1:
        self._release()
        return 0

    cdef int take_kept(self) except -1:
        cdef Py_ssize_t n
        kept = _kept_read(self, self.view.len)
        if kept is None:
            return 0
        data = kept[0]
        n = len(data)
        memcpy(self.view.buf, PyBytes_AS_STRING(data), n)
        self._release()
        self.finish(n)
        return 1

    cdef int keep_unclaimed(self, object result, object buf) except -1:
        return _keep_read(self, _copy_out(buf, result), _no_addr(self), True)

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef object data
        try:
            if res > 0 and self.has_view:
                RL_KERNEL_WROTE(self.view.buf, res)
            if res > 0 and (self.fut is None or self.fut.done()):
                # Cancelled after the kernel filled the buffer: keep a copy.
                data = PyBytes_FromStringAndSize(<char*>self.view.buf, res)
                _keep_read(self, data, _no_addr(self), False)
            self._release()
            return Op.complete(self, res, flags)
        finally:
            _lane_over(self)

    cdef _release(self):
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


# sendall(data): resubmits the remainder after a short send, so bytes go out
# in order; resolves when the kernel has taken all of them.  Cancelled, it
# stops after the kernel's last short send: a prefix went out, and the next
# send of its lane starts only then.
@cython.final
cdef class SendOp(Op):
    cdef Py_buffer view
    cdef bint has_view
    cdef Py_ssize_t offset
    cdef int flags

    cdef int set_buffer(self, object data) except -1:
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        self.offset = 0
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_SEND
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>(<char*>self.view.buf + self.offset)
        sqe.len = <uint32_t>min(self.view.len - self.offset, 0x7fffffff)
        sqe.msg_flags = self.flags | MSG_NOSIGNAL
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n = send(self.fd, <char*>self.view.buf + self.offset,
                              self.view.len - self.offset,
                              self.flags | MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT

    cdef int drop(self) except -1:
        self._release()
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res >= 0:
            self.offset += res
            if self.offset < self.view.len and self.fut is not None and not self.fut.done():
                self.loop._driver.start(self)
                return 0
        try:
            self._release()
            if res < 0:
                return self.fail(-res)
            return self.finish(None)
        finally:
            _lane_over(self)

    cdef _release(self):
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


# accept() -> (socket, address).  accept4 flags make the new fd non-blocking
# and close-on-exec in the same step.
@cython.final
cdef class AcceptOp(Op):
    cdef sockaddr_storage addr
    cdef socklen_t addrlen
    cdef object sock

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        self.addrlen = sizeof(sockaddr_storage)
        sqe.opcode = IORING_OP_ACCEPT
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.addr
        sqe.addr2 = <uint64_t><uintptr_t>&self.addrlen
        sqe.accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC
        return 0

    cdef int attempt(self) except? -1:
        self.addrlen = sizeof(sockaddr_storage)
        cdef int r = accept4(self.fd, <sockaddr*>&self.addr, &self.addrlen,
                             SOCK_NONBLOCK | SOCK_CLOEXEC)
        return r if r >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int drop(self) except -1:
        self.sock = None
        return 0

    cdef int take_kept(self) except -1:
        item = _stash_take(self.loop, self.fd, self.owner, 'accept')
        if item is None:
            return 0
        self.sock = None
        self.finish(item)
        return 1

    cdef int keep_unclaimed(self, object result, object buf) except -1:
        return _stash_front(self.loop, self.fd, self.owner, 'accept', result)

    cdef int complete(self, int res, uint32_t flags) except -1:
        try:
            if res < 0:
                return self.fail(-res)
            lsock = self.sock
            self.sock = None
            conn = socket_mod.socket(lsock.family, lsock.type, lsock.proto, fileno=res)
            conn.setblocking(False)
            addr = _decode_sockaddr(<sockaddr*>&self.addr, self.addrlen, conn)
            if self.fut is None or self.fut.done():
                _stash_put(self.loop, self.fd, self.owner, 'accept', (conn, addr))
                self.fut = None
                self.held = False
                return 0
            return self.finish((conn, addr))
        finally:
            _lane_over(self)


# connect(address), address already encoded as a sockaddr.
@cython.final
cdef class ConnectOp(Op):
    cdef sockaddr_storage addr
    cdef socklen_t addrlen
    cdef bint connecting

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_CONNECT
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.addr
        sqe.off = self.addrlen
        return 0

    cdef int attempt(self) except? -1:
        # Poll backend.  The first connect() starts the connection
        # (EINPROGRESS: wait for POLLOUT); after POLLOUT, connect() is called
        # again, as IORING_OP_CONNECT does in the kernel: it returns 0 once
        # established, EALREADY while still in progress, or the error -- and
        # then resets the socket to unconnected, so that a later connect()
        # on it starts afresh (reading SO_ERROR instead would leave it
        # "connecting" and make that retry fail with ECONNABORTED).  AF_UNIX
        # says EAGAIN when the listener's backlog is full: tried again too.
        cdef int err
        if connect(self.fd, <sockaddr*>&self.addr, self.addrlen) == 0:
            self.connecting = False
            return 0
        err = errno
        if err == errno_EINPROGRESS or err == errno_EALREADY or err == errno_EINTR:
            self.connecting = True
            return -errno_EAGAIN
        if err == errno_EISCONN and self.connecting:
            self.connecting = False
            return 0
        self.connecting = False
        return -err

    cdef int poll_events(self):
        return POLLOUT


# recvmsg for recvfrom / recvfrom_into: the data lands in a bytes object
# (recvfrom) or the caller's buffer (recvfrom_into); the peer address in
# the op's sockaddr_storage.
@cython.final
cdef class RecvMsgOp(Op):
    cdef msghdr msg
    cdef iovec iov
    cdef sockaddr_storage addr
    cdef object data
    cdef Py_buffer view
    cdef bint has_view
    cdef object sock
    cdef int flags

    cdef int setup(self, object sock, object buf, Py_ssize_t nbytes) except -1:
        self.sock = sock
        if buf is None:
            self.data = PyBytes_FromStringAndSize(NULL, nbytes)
            self.iov.iov_base = PyBytes_AS_STRING(self.data)
            self.iov.iov_len = nbytes
        else:
            PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
            self.has_view = True
            if nbytes <= 0 or nbytes > self.view.len:
                nbytes = self.view.len
            self.iov.iov_base = self.view.buf
            self.iov.iov_len = nbytes
        memset(&self.msg, 0, sizeof(msghdr))
        self.msg.msg_name = &self.addr
        self.msg.msg_namelen = sizeof(sockaddr_storage)
        self.msg.msg_iov = &self.iov
        self.msg.msg_iovlen = 1
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        self.msg.msg_namelen = sizeof(sockaddr_storage)
        sqe.opcode = IORING_OP_RECVMSG
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.msg
        sqe.len = 1
        sqe.msg_flags = self.flags
        return 0

    cdef int attempt(self) except? -1:
        self.msg.msg_namelen = sizeof(sockaddr_storage)
        cdef ssize_t n = recvmsg(self.fd, <msghdr_t*>&self.msg, self.flags | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int drop(self) except -1:
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        self.data = None
        self.sock = None
        return 0

    cdef int take_kept(self) except -1:
        cdef Py_ssize_t n
        kept = _kept_read(self, self.iov.iov_len)
        if kept is None:
            return 0
        data, addr = kept
        if self.data is None:
            n = len(data)
            memcpy(self.iov.iov_base, PyBytes_AS_STRING(data), n)
            data = n
        self.drop()
        self.finish((data, addr))
        return 1

    cdef int keep_unclaimed(self, object result, object buf) except -1:
        data, addr = result
        if buf is not None:
            data = _copy_out(buf, data)
        return _keep_read(self, data, addr, True)

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef object kept
        try:
            if res > 0 and (self.has_view or self.data is not None):
                RL_KERNEL_WROTE(self.iov.iov_base, res)
            if res >= 0 and (self.fut is None or self.fut.done()):
                # Cancelled after the kernel took the datagram: keep it.
                addr = _decode_sockaddr(<sockaddr*>&self.addr, self.msg.msg_namelen, self.sock)
                if self.data is not None:
                    kept = self.data[:res]
                else:
                    kept = PyBytes_FromStringAndSize(<char*>self.iov.iov_base, res)
                _keep_read(self, kept, addr, False)
            if self.has_view:
                self.has_view = False
                PyBuffer_Release(&self.view)
            if res < 0:
                self.data = None
                return self.fail(-res)
            addr = _decode_sockaddr(<sockaddr*>&self.addr, self.msg.msg_namelen, self.sock)
            self.sock = None
            if self.data is not None:
                data = self.data
                self.data = None
                return self.finish((data[:res] if res != len(data) else data, addr))
            return self.finish((res, addr))
        finally:
            _lane_over(self)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


# sendto(data, address) -> int, via sendmsg with msg_name set.
@cython.final
cdef class SendMsgOp(Op):
    cdef msghdr msg
    cdef iovec iov
    cdef sockaddr_storage addr
    cdef Py_buffer view
    cdef bint has_view

    cdef int setup(self, object data, socklen_t addrlen) except -1:
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        self.iov.iov_base = self.view.buf
        self.iov.iov_len = self.view.len
        memset(&self.msg, 0, sizeof(msghdr))
        self.msg.msg_name = &self.addr if addrlen else NULL
        self.msg.msg_namelen = addrlen
        self.msg.msg_iov = &self.iov
        self.msg.msg_iovlen = 1
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_SENDMSG
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.msg
        sqe.len = 1
        sqe.msg_flags = MSG_NOSIGNAL
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n = sendmsg(self.fd, <msghdr_t*>&self.msg, MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT

    cdef int complete(self, int res, uint32_t flags) except -1:
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        return Op.complete(self, res, flags)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


# One-shot poll for add_reader/add_writer and for connect's fallback path.
# One-shot (re-armed after the callback ran) rather than multishot, because
# io_uring's poll is edge-triggered unless IORING_POLL_ADD_LEVEL is given and
# asyncio's reader semantics are level-triggered: a callback that leaves data
# unread must be called again.  Re-arming re-checks readiness at once
# (vfs_poll at arm time), which gives exactly that.
@cython.final
cdef class PollOp(Op):
    cdef int events
    cdef Handle handle
    cdef bint active
    cdef bint queued

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_POLL_ADD
        sqe.fd = self.fd
        sqe.poll32_events = self.events
        return 0

    cdef int attempt(self) except? -1:
        return -errno_EAGAIN

    cdef int poll_events(self):
        return self.events

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef LoopCore loop = self.loop
        if not self.active:
            return 0
        if res == -errno_ECANCELED:
            return 0
        # Any other error (EBADF...) is reported as readiness, as a selector
        # does: the callback's own syscall will see it.
        if self.handle is not None and not self.handle._cancelled:
            loop._ready.append(self.handle)
        if not self.queued:
            self.queued = True
            loop._rearm.append(self)
        return 0


# ---- addresses -------------------------------------------------------------

cdef object _decode_sockaddr(sockaddr *sa, socklen_t salen, object sock):
    """The Python address of the salen-byte sockaddr at sa, read no further
    than salen (or a sockaddr_storage: callers hand the length the kernel
    reported, which is the whole name even when its buffer truncated it).
    A sockaddr too short for its family -- no kernel gives one -- is None."""
    cdef char buf[64]
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef Py_ssize_t n
    cdef sockaddr_storage aligned
    if salen > sizeof(sockaddr_storage):
        salen = sizeof(sockaddr_storage)
    if salen == 0:
        if sock is not None and sock.family == AF_UNIX:
            return '' if sock.type != SOCK_DGRAM else None
        return None
    if (<uintptr_t>sa) & 7:
        # Kernel names sit in sockaddr_storage or 8-aligned ring buffers;
        # only the fuzz hooks hand an odd address.  Reading its fields in
        # place would be undefined (UBSan: misaligned access): decode an
        # aligned copy of its salen bytes.
        memset(&aligned, 0, sizeof(aligned))
        memcpy(&aligned, sa, salen)
        sa = <sockaddr*>&aligned
    if salen < sizeof(sa.sa_family):
        return None
    if sa.sa_family == AF_INET:
        if salen < sizeof(sockaddr_in):
            return None
        sin = <sockaddr_in*>sa
        inet_ntop(AF_INET, &sin.sin_addr, buf, sizeof(buf))
        return (buf.decode(), ntohs(sin.sin_port))
    if sa.sa_family == AF_INET6:
        if salen < sizeof(sockaddr_in6):
            return None
        sin6 = <sockaddr_in6*>sa
        inet_ntop(AF_INET6, &sin6.sin6_addr, buf, sizeof(buf))
        return (buf.decode(), ntohs(sin6.sin6_port), ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    if sa.sa_family == AF_UNIX:
        sun = <sockaddr_un*>sa
        n = <Py_ssize_t>salen - <Py_ssize_t>offsetof_sun_path()
        if n > <Py_ssize_t>sizeof(sun.sun_path):
            n = sizeof(sun.sun_path)
        if n <= 0:
            return ''
        if sun.sun_path[0] == 0:
            # Linux abstract namespace: bytes, as the socket module gives.
            return PyBytes_FromStringAndSize(sun.sun_path, n)
        raw = PyBytes_FromStringAndSize(sun.sun_path, n)
        raw = raw.split(b'\0', 1)[0]
        return os.fsdecode(raw)
    if sock is None:
        # Another family, nothing to ask: (family, the rest), as the
        # socket module gives for a family it does not know.
        return (sa.sa_family, PyBytes_FromStringAndSize(<char*>sa + sizeof(sa.sa_family),
                                                        salen - sizeof(sa.sa_family)))
    try:
        return sock.getpeername()
    except OSError:
        return None


cdef int _encode_sockaddr(int family, object address, sockaddr_storage *ss,
                          socklen_t *sl) except -1:
    """Fill ss from a resolved address; return 1 on success, 0 when the
    family or form is one we leave to the socket module (which then raises
    for what is invalid, with its own message).  What is encoded here is
    byte for byte what the socket module would build."""
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef bytes host
    cdef bytes path
    memset(ss, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            return 0
        h, port = address
        if not isinstance(h, str) or not isinstance(port, int) or not 0 <= port <= 65535:
            return 0
        if '\0' in h:              # inet_pton would stop there; the socket module refuses it
            return 0
        host = h.encode('ascii', 'replace')
        sin = <sockaddr_in*>ss
        if inet_pton(AF_INET, host, &sin.sin_addr) != 1:
            return 0
        sin.sin_family = AF_INET
        sin.sin_port = htons(port)
        sl[0] = sizeof(sockaddr_in)
        return 1
    if family == AF_INET6:
        if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            return 0
        h = address[0]
        port = address[1]
        if not isinstance(h, str) or not isinstance(port, int) or not 0 <= port <= 65535 or '%' in h:
            return 0
        if '\0' in h:
            return 0
        # flowinfo is 20 bits, scope_id 32: anything else is the socket
        # module's to refuse (or, for its unchecked 'I' conversions, to read
        # its own way).
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        if (not isinstance(flowinfo, int) or not 0 <= flowinfo <= 0xFFFFF or
                not isinstance(scope_id, int) or not 0 <= scope_id <= 0xFFFFFFFF):
            return 0
        host = h.encode('ascii', 'replace')
        sin6 = <sockaddr_in6*>ss
        if inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1:
            return 0
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = htons(port)
        sin6.sin6_flowinfo = htonl(<uint32_t>flowinfo)
        sin6.sin6_scope_id = <uint32_t>scope_id
        sl[0] = sizeof(sockaddr_in6)
        return 1
    if family == AF_UNIX:
        if isinstance(address, str):
            path = os.fsencode(address)
        elif isinstance(address, (bytes, bytearray, memoryview)):
            path = bytes(address)
        else:
            return 0
        sun = <sockaddr_un*>ss
        # As the socket module: an empty name (autobind) or an abstract one
        # (leading NUL) may fill sun_path; a path needs room for its NUL.
        if len(path) == 0 or path[0] == 0:
            if len(path) > sizeof(sun.sun_path):
                raise OSError(errno_mod.ENAMETOOLONG, "AF_UNIX path too long")
        elif len(path) >= sizeof(sun.sun_path):
            raise OSError(errno_mod.ENAMETOOLONG, "AF_UNIX path too long")
        sun.sun_family = AF_UNIX
        memcpy(sun.sun_path, <char*>path, len(path))
        sl[0] = offsetof_sun_path() + len(path)
        return 1
    return 0
