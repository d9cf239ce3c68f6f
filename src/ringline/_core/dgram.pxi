# Datagram receive and send in the ring (UDP, Unix datagram).
#
# Receive: one multishot RECVMSG per endpoint over a second provided-buffer
# ring (group 1) sized for whole datagrams.  Each buffer the kernel fills
# starts with struct io_uring_recvmsg_out {namelen, controllen, payloadlen,
# flags}, then the space reserved for the peer address (msg_namelen of the
# msghdr in the SQE), then the control space (none here), then the payload
# (io_uring_prep_recvmsg_multishot(3)).  The payload is copied into a bytes
# object for datagram_received and the buffer recycled at once.  A datagram
# larger than a buffer arrives truncated with MSG_TRUNC set, as recvfrom
# with a short buffer gives it; buffers hold the largest UDP payload.
# ENOBUFS or a kernel without multishot RECVMSG: single-shot recvmsg into
# the endpoint's own buffer, then multishot again.
#
# Send: one SENDMSG in flight per endpoint, the rest queued in order.

cdef extern from *:
    """
    struct rl_recvmsg_out { uint32_t namelen, controllen, payloadlen, flags; };
    """
    struct rl_recvmsg_out:
        uint32_t namelen
        uint32_t controllen
        uint32_t payloadlen
        uint32_t flags

cdef enum:
    DGRAM_MAX = 65536
    DGRAM_BUF = 65536 + 16 + 128    # payload + recvmsg_out + sockaddr_storage
    DGRAM_RING_ENTRIES = 32
    DGRAM_BGID = 1


@cython.final
cdef class DgramRecvOp(Op):
    cdef object transport           # the asyncio DatagramTransport
    cdef object sock
    cdef msghdr msg
    cdef iovec iov
    cdef sockaddr_storage addr
    cdef char *own
    cdef bint single
    cdef public bint active

    def __dealloc__(self):
        if self.own != NULL:
            PyMem_Free(self.own)
            self.own = NULL

    cdef char *own_buf(self) except NULL:
        if self.own == NULL:
            self.own = <char*>PyMem_Malloc(DGRAM_MAX)
            if self.own == NULL:
                raise MemoryError()
        return self.own

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        cdef UringDriver d = <UringDriver>self.loop._driver
        memset(&self.msg, 0, sizeof(msghdr))
        sqe.opcode = IORING_OP_RECVMSG
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.msg
        sqe.len = 1
        if not self.single and d.dgram_ring() :
            self.msg.msg_namelen = sizeof(sockaddr_storage)
            sqe.ioprio = IORING_RECV_MULTISHOT
            sqe.flags = IOSQE_BUFFER_SELECT
            sqe.buf_group = DGRAM_BGID
        else:
            self.single = True
            self._single_msg()
        return 0

    cdef void _single_msg(self):
        self.iov.iov_base = self.own
        self.iov.iov_len = DGRAM_MAX
        memset(&self.msg, 0, sizeof(msghdr))
        self.msg.msg_name = &self.addr
        self.msg.msg_namelen = sizeof(sockaddr_storage)
        self.msg.msg_iov = &self.iov
        self.msg.msg_iovlen = 1

    cdef int attempt(self) except? -1:
        self.single = True
        self.own_buf()
        self._single_msg()
        cdef ssize_t n = recvmsg(self.fd, <msghdr_t*>&self.msg, MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef UringDriver d
        cdef char *buf
        cdef rl_recvmsg_out *out
        cdef unsigned bid
        cdef bint more = (flags & IORING_CQE_F_MORE) != 0
        cdef bint single = self.single
        if not more:
            self.single = False
        if res >= 0 and (flags & IORING_CQE_F_BUFFER):
            d = <UringDriver>self.loop._driver
            bid = flags >> IORING_CQE_BUFFER_SHIFT
            buf = rl_pbuf_addr(&d.dpbuf, bid)
            out = <rl_recvmsg_out*>buf
            try:
                data = PyBytes_FromStringAndSize(
                    buf + sizeof(rl_recvmsg_out) + sizeof(sockaddr_storage),
                    min(out.payloadlen, DGRAM_MAX))
                addr = _decode_sockaddr(<sockaddr*>(buf + sizeof(rl_recvmsg_out)),
                                        out.namelen, self.sock)
            finally:
                rl_pbuf_recycle(&d.dpbuf, bid)
            self._deliver(data, addr)
        elif res >= 0 and single:
            data = PyBytes_FromStringAndSize(self.own, res)
            addr = _decode_sockaddr(<sockaddr*>&self.addr, self.msg.msg_namelen, self.sock)
            self._deliver(data, addr)
        elif res < 0 and res != -errno_ECANCELED and res != -errno_ENOBUFS:
            if res == -errno_EINVAL and not single:
                # No multishot RECVMSG here: single-shot from now on.
                self.single = True
            elif self.active:
                exc = _os_error(-res)
                try:
                    self.transport._protocol.error_received(exc)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as e:
                    self.transport._fatal_error(e, 'Fatal read error on datagram transport')
                    return 0
        if res == -errno_ENOBUFS:
            self.single = True
        if not more and self.active:
            self.loop._driver.start(self)
        return 0

    cdef int _deliver(self, object data, object addr) except -1:
        if not self.active:
            return 0
        try:
            self.transport._protocol.datagram_received(data, addr)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.transport._fatal_error(exc, 'Fatal read error on datagram transport')
        return 0

    def stop(self):
        self.active = False
        if self.state == OP_INFLIGHT:
            self.loop._driver.cancel(self)

    def start(self):
        if self.active:
            return
        self.active = True
        if self.state == OP_IDLE:
            self.own_buf()
            self.loop._driver.start(self)


def _dgram_receiver(LoopCore loop, transport, sock):
    cdef DgramRecvOp op = DgramRecvOp.__new__(DgramRecvOp)
    op.loop = loop
    op.transport = transport
    op.sock = sock
    op.fd = sock.fileno()
    return op


# One datagram per SENDMSG; the transport keeps the queue and calls send()
# again from on_sent.
@cython.final
cdef class DgramSendOp(Op):
    cdef object transport
    cdef msghdr msg
    cdef iovec iov
    cdef sockaddr_storage addr
    cdef socklen_t addrlen
    cdef object data
    cdef public object fallback_addr    # an address only the socket module can send to

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

    def send(self, bytes data, addr, int family):
        """Start sending one datagram; False if addr needs the socket module."""
        self.addrlen = 0
        if addr is not None:
            if not _encode_sockaddr(family, addr, &self.addr, &self.addrlen):
                return False
        self.data = data
        self.iov.iov_base = PyBytes_AS_STRING(data)
        self.iov.iov_len = len(data)
        memset(&self.msg, 0, sizeof(msghdr))
        self.msg.msg_name = &self.addr if self.addrlen else NULL
        self.msg.msg_namelen = self.addrlen
        self.msg.msg_iov = &self.iov
        self.msg.msg_iovlen = 1
        self.loop._driver.start(self)
        return True

    @property
    def busy(self):
        return self.state != OP_IDLE

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.data = None
        self.transport._on_sent(res)
        return 0


def _dgram_sender(LoopCore loop, transport, sock):
    cdef DgramSendOp op = DgramSendOp.__new__(DgramSendOp)
    op.loop = loop
    op.transport = transport
    op.fd = sock.fileno()
    return op
