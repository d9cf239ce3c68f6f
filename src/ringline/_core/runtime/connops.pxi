# The connection's ops: multishot receive, gathered send, SEND_ZC.

# Receive and gathered send are the shared transport core's ops
# (transport/common.pxi); these add what the connection does with them.
cdef class ConnRecvOp(BufRecvOp):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        BufRecvOp.prep(self, sqe)
        if self.core.direct:
            sqe.flags |= IOSQE_FIXED_FILE   # fd is a slot (transport/direct.pxi)
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef ConnCore core = self.core
        cdef bint more = (flags & IORING_CQE_F_MORE) != 0
        cdef bint single = self.single
        cdef int bid
        cdef char *buf
        cdef Driver d
        if not more:
            self.single = False
        if flags & IORING_CQE_F_BUFFER and self.loop._driver.pbuf.bundle:
            if res > 0:
                _conn_bundle(core, self.loop._driver, res, flags)
        elif flags & IORING_CQE_F_BUFFER:
            d = self.loop._driver
            bid = flags >> IORING_CQE_BUFFER_SHIFT
            buf = _pbuf_piece(d, res, flags)
            try:
                if res > 0:
                    core.on_kbuf(bid, buf, res)
            finally:
                rl_pbuf_cqe_done(d.pbuf, bid, flags)
        elif res > 0 and self.buf != NULL:
            buf = _recv_filled(self, res)
            try:
                core.on_bytes(buf, res)
            finally:
                _recv_give(self, buf)
        elif single:
            _recv_drop_buf(self)
        if not more:
            core.recv_ended(res)
        return 0


cdef int _conn_bundle(ConnCore core, Driver d, int res, uint32_t flags) except -1:
    # A recv bundle (uring.h rl_pbuf_bundle_next): each buffer's piece
    # becomes a KBuf of its own, in order, no copy.  Every piece is walked
    # even if one raises: the mirrored head must stay right.
    cdef unsigned left = <unsigned>res, bid = 0, n = 0
    cdef char *ptr = NULL
    cdef int done = 0, r, first = 1
    err = None
    while True:
        r = rl_pbuf_bundle_next(d.pbuf, &left, flags, first, &bid, &ptr, &n, &done)
        if r == 1:
            break
        if r < 0:
            raise _bundle_mismatch(flags)
        first = 0
        RL_KERNEL_WROTE(ptr, n)
        try:
            if err is None:
                core.on_kbuf(bid, ptr, n)
        except BaseException as exc:
            err = exc
        if done:
            rl_pbuf_put(d.pbuf, bid)
    if err is not None:
        raise err
    return 0


cdef class ConnSendOp(GatherSendOp):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        GatherSendOp.prep(self, sqe)
        if self.core.direct:
            sqe.flags |= IOSQE_FIXED_FILE
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.core.on_sent(res)
        return 0


# SEND_ZC: the kernel reads the caller's pages in place.  The first CQE says
# how many bytes it took (the connection moves on); the buffer stays held by
# this op until the notification CQE says the kernel is done with it.
cdef class ZcSendOp(ZcSendBase):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        ZcSendBase.prep(self, sqe)
        if self.core.direct:
            sqe.flags = IOSQE_FIXED_FILE
        return 0

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
