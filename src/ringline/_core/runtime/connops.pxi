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
        if flags & IORING_CQE_F_BUFFER:
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
