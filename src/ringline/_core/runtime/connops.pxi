# The connection's ops: multishot receive, gathered send, SEND_ZC.

cdef class ConnRecvOp(Op):

    def __dealloc__(self):
        if self.buf != NULL:    # never completed (loop torn down)
            _live.rbufs_out -= 1        # the pool's, freed instead of given back
            PyMem_Free(self.buf)
            self.buf = NULL

    cdef int _drop_buf(self) except -1:
        if self.buf != NULL:
            self.core.env.bufs.give(self.buf)
            self.buf = NULL
        return 0

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        cdef Driver d = self.loop._driver
        if self.single or not d.provided_buffers:
            if self.buf == NULL:    # first: if it raises, the SQE stays a NOP
                self.buf = self.core.env.bufs.take()
            self.single = True
            sqe.opcode = IORING_OP_RECV
            sqe.fd = self.fd
            sqe.addr = <uint64_t><uintptr_t>self.buf
            sqe.len = <uint32_t>self.core.env.own_size
        else:
            sqe.opcode = IORING_OP_RECV
            sqe.fd = self.fd
            sqe.ioprio = IORING_RECV_MULTISHOT
            sqe.flags = IOSQE_BUFFER_SELECT
            sqe.buf_group = d.pbuf.bgid
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n
        cdef int err
        cdef Py_ssize_t size = self.core.env.own_size
        self.single = True
        if self.buf == NULL:
            self.buf = self.core.env.bufs.take()
        n = recv(self.fd, self.buf, size, MSG_DONTWAIT)
        if n <= 0:
            err = errno
            self._drop_buf()    # nothing to hand up: hold no buffer while waiting
            return <int>n if n == 0 else -err
        if n < size and self.core.tcp:
            self.wait_first = True      # drained: wait for the next edge (TCP only, see stream.pxi)
        return <int>n

    cdef int poll_events(self):
        return POLLIN

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef ConnCore core = self.core
        cdef bint more = (flags & IORING_CQE_F_MORE) != 0
        cdef bint single = self.single
        cdef int bid
        cdef char *buf
        if not more:
            self.single = False
        if flags & IORING_CQE_F_BUFFER:
            bid = flags >> IORING_CQE_BUFFER_SHIFT
            if res > 0:
                core.on_kbuf(bid, res)
            else:
                rl_pbuf_recycle(self.loop._driver.pbuf, bid)
        elif res > 0 and self.buf != NULL:
            buf = self.buf
            RL_KERNEL_WROTE(buf, res)
            self.buf = NULL             # detached: a re-arm inside takes its own
            try:
                core.on_bytes(buf, res)
            finally:
                self.core.env.bufs.give(buf)
        elif single:
            self._drop_buf()
        if not more:
            core.recv_ended(res)
        return 0


cdef class ConnSendOp(Op):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.fd = self.fd
        if self.niov == 1:
            sqe.opcode = IORING_OP_SEND
            sqe.addr = <uint64_t><uintptr_t>self.iov[0].iov_base
            sqe.len = <uint32_t>self.iov[0].iov_len
        else:
            memset(&self.msg, 0, sizeof(msghdr))
            self.msg.msg_iov = &self.iov[0]
            self.msg.msg_iovlen = self.niov
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
            memset(&self.msg, 0, sizeof(msghdr))
            self.msg.msg_iov = &self.iov[0]
            self.msg.msg_iovlen = self.niov
            n = sendmsg(self.fd, <msghdr_t*>&self.msg, MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.core.on_sent(res)
        return 0


# SEND_ZC: the kernel reads the caller's pages in place.  The first CQE says
# how many bytes it took (the connection moves on); the buffer stays held by
# this op until the notification CQE says the kernel is done with it.
cdef class ZcSendOp(Op):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = RL_OP_SEND_ZC
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>self.ptr
        sqe.len = <uint32_t>min(self.n, 0x7fffffff)
        sqe.msg_flags = MSG_NOSIGNAL
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t r = send(self.fd, self.ptr, self.n, MSG_NOSIGNAL | MSG_DONTWAIT)
        return <int>r if r >= 0 else -errno

    cdef int poll_events(self):
        return POLLOUT

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef ConnCore core
        if flags & IORING_CQE_F_NOTIF:
            self.hold = None
            return 0
        if not (flags & IORING_CQE_F_MORE):
            self.hold = None
        core = self.core
        self.core = None
        if core is not None:
            core.on_sent(res)
        return 0
