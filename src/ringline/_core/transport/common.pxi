# The shared transport core.  Both faces' stream connections receive and
# send with its ops (StreamCore, stream.pxi; ConnCore, runtime/conn.pxi),
# and the asyncio face's two transport cores (StreamCore; DgramCore,
# dgram.pxi) are TransportCores, instead of each keeping a copy.  Like the
# rest of transport/ it is built on loop/ and the driver interface only;
# it refers to neither face's classes.
#
#   GatherSendOp   one SEND (one iovec) or SENDMSG (up to IOV_BATCH,
#                  gathered) per op; StreamSendOp and ConnSendOp add only
#                  their completion.
#   ZcSendBase     one SEND_ZC from a held object; ZcSendOp (the runtime's
#                  send()) and StreamZcOp (zcsend.pxi) add their completion.
#   BufRecvOp      the stream receive: multishot over the driver's provided-
#                  buffer ring, a single shot into a buffer of a BufPool on
#                  ENOBUFS or without a ring, recv() for the poll backend,
#                  and what follows the end of a receive (_recv_ended()).
#                  StreamRecvOp and ConnRecvOp add only their completion.
#   TransportCore  what an asyncio transport's core keeps (StreamCore,
#                  DgramCore): protocol, flow control, fatal errors, the
#                  data held while reading is paused, the protocol's context.
#
# (GatherSendOp and BufRecvOp are declared in core.pxd: the runtime's ops
# subclass them.)  The subclasses are @cython.final, so their own methods
# are direct calls; what they call here per message is inline (_recv_*,
# _enter/_leave) or a method of Op's they override anyway (prep, attempt).

cdef extern from "<sys/socket.h>":
    ssize_t c_sendto "sendto"(int fd, const void *buf, size_t n, int flags,
                              const sockaddr *addr, socklen_t addrlen)

cdef enum:
    LOG_THRESHOLD_FOR_CONNLOST_WRITES = 5

# What _recv_ended() says comes next.
cdef enum:
    RECV_AGAIN = 0      # re-arm (over with data, or cancelled)
    RECV_EMPTY = 1      # the ring was empty: re-arm, single shot first
    RECV_EOF = 2
    RECV_ERROR = 3


cdef object _logger = None


cdef object _get_logger():
    global _logger
    if _logger is None:
        _logger = _compat.logger
    return _logger


cdef object _data_arg(object data):
    """A write's data as bytes, for what is not bytes already: bytearray and
    memoryview are copied (asyncio copies mutable data at write(): the
    caller may reuse it, and what is queued must not change under us)."""
    if not isinstance(data, (bytearray, memoryview)):
        raise TypeError(f'data argument must be a bytes-like object, '
                        f'not {type(data).__name__!r}')
    return bytes(data)


cdef inline ssize_t _send_now(int fd, const char *ptr, size_t n,
                              const sockaddr *sa, socklen_t salen) noexcept:
    """sendto(2) without blocking (send(2) when sa is NULL), retried on
    EINTR: the bytes the kernel took, or -errno."""
    cdef ssize_t r
    while True:
        r = c_sendto(fd, ptr, n, MSG_NOSIGNAL | MSG_DONTWAIT, sa, salen)
        if r >= 0:
            return r
        if errno != errno_EINTR:
            return -errno


# ---- the ops -----------------------------------------------------------------

cdef inline void _gather(GatherSendOp op) noexcept:
    # SENDMSG's msghdr over the op's iovecs.
    memset(&op.msg, 0, sizeof(msghdr))
    op.msg.msg_iov = &op.iov[0]
    op.msg.msg_iovlen = op.niov


cdef class GatherSendOp(Op):
    # The owner fills iov[:niov] with what the kernel is to send, in order.

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.fd = self.fd
        if self.niov == 1:
            sqe.opcode = IORING_OP_SEND
            sqe.addr = <uint64_t><uintptr_t>self.iov[0].iov_base
            sqe.len = <uint32_t>self.iov[0].iov_len
        else:
            _gather(self)
            sqe.opcode = IORING_OP_SENDMSG
            sqe.addr = <uint64_t><uintptr_t>&self.msg
            sqe.len = 1
        sqe.msg_flags = MSG_NOSIGNAL
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n
        if self.niov == 1:
            n = send(self.fd, self.iov[0].iov_base, self.iov[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT)
        else:
            _gather(self)
            n = sendmsg(self.fd, <msghdr_t*>&self.msg, MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT


cdef class ZcSendBase(Op):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = RL_OP_SEND_ZC
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>self.ptr
        sqe.len = <uint32_t>min(self.n, 0x7fffffff)
        sqe.msg_flags = MSG_NOSIGNAL
        return 0

    cdef int attempt(self) except? -1:
        # The poll driver never has zero_copy_send; a plain send if it did.
        cdef ssize_t r = send(self.fd, self.ptr, self.n, MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>r if r >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT


cdef class BufRecvOp(Op):
    # bufs lends the single shot's buffer (size bytes each); with own_size,
    # a kernel without a buffer ring gets a buffer of the op's own instead.
    # (The helpers its subclasses call per message are the _recv_*
    # functions below: plain inline functions, so the calls are direct.)

    def __dealloc__(self):
        if self.buf != NULL:    # never completed (loop torn down), or owned
            if not self.owned:
                _live.rbufs_out -= 1    # the pool's, freed instead of given back
            PyMem_Free(self.buf)
            self.buf = NULL

    cdef int init(self, LoopCore loop, int fd, BufPool bufs, Py_ssize_t size,
                  Py_ssize_t own_size, bint tcp) except -1:
        self.loop = loop
        self.fd = fd
        self.bufs = bufs
        self.size = size
        self.own_size = own_size
        self.tcp = tcp
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        cdef Driver d = self.loop._driver
        if self.single or not d.provided_buffers:
            # Buffer first: if that raises, the SQE stays the NOP get_sqe()
            # zeroed.
            if self.buf == NULL:
                if d.provided_buffers or self.own_size == 0:
                    self.buf = self.bufs.take()
                else:
                    # Without a buffer ring (kernel < 5.19) every armed recv
                    # waits in the kernel with its buffer: a small one of the
                    # op's own instead of tying up a large pooled one.
                    self.buf = <char*>PyMem_Malloc(self.own_size)
                    if self.buf == NULL:
                        raise MemoryError()
                    self.owned = True
            self.single = True
            sqe.opcode = IORING_OP_RECV
            sqe.fd = self.fd
            sqe.addr = <uint64_t><uintptr_t>self.buf
            sqe.len = <uint32_t>(self.own_size if self.owned else self.size)
        else:
            sqe.opcode = IORING_OP_RECV
            sqe.fd = self.fd
            sqe.ioprio = IORING_RECV_MULTISHOT
            if d.pbuf.bundle:
                sqe.ioprio |= IORING_RECVSEND_BUNDLE
            sqe.flags = IOSQE_BUFFER_SELECT
            sqe.buf_group = d.pbuf.bgid
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n
        cdef int err
        cdef Py_ssize_t size
        self.single = True
        if self.buf == NULL:
            self.buf = self.bufs.take()
        size = self.own_size if self.owned else self.size
        n = recv(self.fd, self.buf, size, MSG_DONTWAIT)
        if n <= 0:
            err = errno
            _recv_drop_buf(self)
            return <int>n if n == 0 else -err
        if n < size and self.tcp:
            # A short read drained the socket: the poll driver waits for the
            # next readiness edge instead of a recv bound to say EAGAIN.  Only
            # TCP: AF_UNIX stops a read early at a message carrying ancillary
            # data, with more queued and no new edge.
            self.wait_first = True
        return <int>n

    cdef int poll_events(self):
        return POLLIN


cdef inline char *_pbuf_piece(Driver d, int res, uint32_t flags) except NULL:
    """Where a buffer-ring CQE's bytes are (uring.h rl_pbuf_piece: with
    incremental consumption, not at the buffer's start).  Once per CQE."""
    cdef char *ptr = rl_pbuf_piece(d.pbuf, flags >> IORING_CQE_BUFFER_SHIFT,
                                   <unsigned>res if res > 0 else 0, flags)
    if ptr == NULL:
        raise RuntimeError(f"io_uring completion names buffer {flags >> IORING_CQE_BUFFER_SHIFT} "
                           f"with {res} bytes, outside the buffer ring")
    RL_KERNEL_WROTE(ptr, res if res > 0 else 0)
    return ptr


cdef object _bundle_mismatch(uint32_t flags):
    return RuntimeError(f"io_uring recv bundle names buffer {flags >> IORING_CQE_BUFFER_SHIFT}, "
                        f"not the buffer ring's head: the ring's order was lost")


cdef inline void _recv_drop_buf(BufRecvOp op) noexcept:
    # Nothing to hand up: hold no lent buffer while waiting.
    if op.buf != NULL and not op.owned:
        op.bufs.give(op.buf)
        op.buf = NULL


cdef inline char *_recv_filled(BufRecvOp op, int res) noexcept:
    """The single shot's buffer, res bytes in it, detached (unless it is the
    op's own) before the data is handed on: a re-arm from inside takes a
    buffer of its own instead of this one."""
    cdef char *ptr = op.buf
    RL_KERNEL_WROTE(ptr, res)
    if not op.owned:
        op.buf = NULL
    return ptr


cdef inline void _recv_give(BufRecvOp op, char *ptr) noexcept:
    # _recv_filled()'s buffer, done with.
    if not op.owned:
        op.bufs.give(ptr)


cdef inline int _recv_ended(BufRecvOp op, int res) noexcept:
    """The receive is over (a multishot the kernel ended, or a single shot);
    res: > 0 over with data, 0 EOF, else -errno.  Returns what comes next
    (RECV_*)."""
    if res > 0 or res == -errno_ECANCELED:
        return RECV_AGAIN
    if res == -errno_ENOBUFS:
        # Ring empty: one single-shot recv into a lent buffer, then
        # multishot again.  Progress without spinning on ENOBUFS.
        op.single = True
        return RECV_EMPTY
    return RECV_EOF if res == 0 else RECV_ERROR


# ---- the asyncio face's transport cores ---------------------------------------

cdef class TransportCore:
    # The Python transport (ringline.aio._coretransport.CoreTransport and
    # its subclasses) reads and sets the public ones.
    cdef LoopCore loop
    cdef public object transport     # the asyncio transport that owns us
    cdef public object protocol
    cdef public object sock
    cdef public int fd
    cdef public Py_ssize_t wsize     # queued and not yet taken by the kernel
    cdef public Py_ssize_t high_water
    cdef public Py_ssize_t low_water
    cdef public bint protocol_paused
    cdef public bint closing
    cdef public int conn_lost
    cdef public bint paused          # pause_reading()
    cdef object pending              # what arrived while paused, for resume_reading()
    # A copy of the creating context, entered around the completions that
    # reach the protocol: it sees what asyncio's reader callback would (one
    # copy per transport, taken when it registers its reader).  in_context:
    # entered now, so a completion run re-entrantly (get_sqe's reap) does
    # not enter it again.
    cdef object context
    cdef bint in_context

    def __cinit__(self):
        self.high_water = 64 * 1024
        self.low_water = 16 * 1024

    cdef int _bind(self, LoopCore loop, object transport, object sock) except -1:
        self.loop = loop
        self.transport = transport
        self.sock = sock
        self.fd = sock.fileno()
        self.context = PyContext_CopyCurrent()
        return 0

    cdef int _unbind(self) except -1:
        # After connection_lost: drop what refers back to the user's objects.
        self.protocol = None
        self.transport = None
        self.pending = None
        self.context = None
        return 0

    # ---- the protocol's context ----------------------------------------------

    cdef inline object _enter(self):
        """Enter the protocol's context unless it is entered (or there is
        none): the context to _leave(), else None.  The caller's reference
        keeps it alive until then: a callback run inside may close the
        transport, which lets go of its own."""
        cdef object ctx = self.context
        if self.in_context or ctx is None:
            return None
        PyContext_Enter(ctx)
        self.in_context = True
        return ctx

    cdef inline int _leave(self, object ctx) except -1:
        if ctx is not None:
            self.in_context = False
            PyContext_Exit(ctx)
        return 0

    def _deliver_pending(self):
        # What a completion kept while paused: delivered in the protocol's
        # context too.
        cdef object ctx = self._enter()
        try:
            self._deliver_pending_c()
        finally:
            self._leave(ctx)

    cdef int _deliver_pending_c(self) except -1:
        return 0

    cdef int _debug_reading(self, str what) except -1:
        if self.loop._debug:
            _get_logger().debug("%r %s reading", self.transport, what)
        return 0

    def is_reading(self):
        return not self.closing and not self.paused

    # ---- writing ---------------------------------------------------------------

    cdef int _write_after_lost(self) except -1:
        # A write on a lost connection: dropped, and logged after a few, as
        # asyncio does.
        if self.conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            _get_logger().warning('socket.send() raised exception.')
        self.conn_lost += 1
        return 0

    cdef int _pause_protocol(self) except -1:
        self.protocol_paused = True
        try:
            self.protocol.pause_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._protocol_failed('protocol.pause_writing() failed', exc)
        return 0

    cdef int _resume_protocol(self) except -1:
        self.protocol_paused = False
        try:
            self.protocol.resume_writing()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._protocol_failed('protocol.resume_writing() failed', exc)
        return 0

    cdef int _protocol_failed(self, str message, object exc) except -1:
        self.loop.call_exception_handler({
            'message': message,
            'exception': exc,
            'transport': self.transport,
            'protocol': self.protocol,
        })
        return 0

    def maybe_pause_protocol(self):
        if self.wsize > self.high_water and not self.protocol_paused:
            self._pause_protocol()

    def maybe_resume_protocol(self):
        if self.protocol_paused and self.wsize <= self.low_water:
            self._resume_protocol()

    # ---- closing ---------------------------------------------------------------

    cpdef fatal_error(self, exc, message='Fatal error on transport'):
        # Logged (OSError, in debug mode) or reported, then force_close():
        # the subclass's, which schedules connection_lost.
        if isinstance(exc, OSError):
            if self.loop._debug:
                _get_logger().debug("%r: %s", self.transport, message, exc_info=True)
        else:
            self._protocol_failed(message, exc)
        self.force_close(exc)
