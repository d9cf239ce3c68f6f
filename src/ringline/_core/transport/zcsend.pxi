# SEND_ZC for the asyncio face's large queued writes (stream transports).
#
# Off unless set_stream_send_zc() gives a threshold: a queued chunk of at
# least that many bytes goes out alone with IORING_OP_SEND_ZC instead of the
# copying SEND/SENDMSG.  The kernel pins the chunk's pages and posts two
# CQEs (io_send_zc, io_uring/net.c): the first says how many bytes it took,
# with IORING_CQE_F_MORE while a notification is to follow; the second
# (IORING_CQE_F_NOTIF) says it is done with the pages.  The transport moves
# on at the first (the bytes count as sent, flow control and the next send
# go on); the op keeps the chunk (an immutable bytes object: write() copies
# anything mutable) alive until the second.  The driver keeps the op until
# its last CQE, and a loop closed before then leaks it rather than free the
# pages under the kernel (uring.pxi shutdown).
#
# Used only where it can work: the driver has the opcode (zero_copy_send,
# probed) and the socket is TCP -- AF_UNIX sockets lack SOCK_SUPPORT_ZC and
# the kernel answers EOPNOTSUPP; should any socket still refuse, the
# transport stops asking and sends that chunk the copying way.
#
# Measured on loopback (README, io_uring table): a loss, as expected -- the
# loopback device has no zero-copy transmit, so the pages are copied when
# the skb is delivered to the receiving socket anyway, and each send costs a
# second CQE and the page pinning.  It pays on a NIC with scatter-gather
# DMA, where nothing copies the payload.

cdef Py_ssize_t _stream_zc_threshold = 0
cdef unsigned long long _stream_zc_sends = 0


def set_stream_send_zc(threshold):
    """Send queued stream-transport writes of at least `threshold` bytes
    with IORING_OP_SEND_ZC on io_uring loops (0 = never, the default;
    without the opcode, on the poll backend and on AF_UNIX sockets it has no
    effect).  Returns the old threshold."""
    global _stream_zc_threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise TypeError(f"set_stream_send_zc() threshold must be an int, not {type(threshold).__name__}")
    if threshold < 0:
        raise ValueError(f"set_stream_send_zc() threshold must be 0 (never) or a byte count, not {threshold}")
    old = _stream_zc_threshold
    _stream_zc_threshold = min(threshold, 0x7fffffffffffffff)
    return old


def stream_send_zc_count():
    """How many SEND_ZC ops the stream transports have started in this
    process (tests and benchmarks: did the switch take effect)."""
    return _stream_zc_sends


@cython.final
cdef class StreamZcOp(ZcSendBase):
    cdef StreamCore core         # until the first CQE
    cdef bint counted            # hold is counted in _live.zc_holds

    def __dealloc__(self):
        # A loop's shutdown reaps the last CQEs without complete().
        if self.counted:
            _live.zc_holds -= 1

    cdef inline void _release(self) noexcept:
        self.hold = None
        if self.counted:
            self.counted = False
            _live.zc_holds -= 1

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef StreamCore core
        if flags & IORING_CQE_F_NOTIF:
            self._release()
            return 0
        if not (flags & IORING_CQE_F_MORE):
            self._release()     # no notification follows (refused, cancelled early)
        core = self.core
        self.core = None
        if core is None:
            return 0
        core.zc_busy = False
        core.zop = None
        if res == -errno_EOPNOTSUPP and not core.conn_lost:
            # A socket without SOCK_SUPPORT_ZC: nothing was sent; go on
            # without SEND_ZC on this transport.
            core.zc_ok = False
            if core.wbuf:
                core._start_send()
            return 0
        if res < 0 or core.protocol_paused or core.closing:
            return core.on_sent_in_context(res)
        return core.on_sent(res)


cdef int _stream_zc_start(StreamCore core, bytes chunk, Py_ssize_t off) except -1:
    global _stream_zc_sends
    cdef StreamZcOp op = StreamZcOp.__new__(StreamZcOp)
    op.loop = core.loop
    op.fd = core.fd
    op.core = core
    op.hold = chunk
    op.counted = True
    _live.zc_holds += 1
    op.ptr = PyBytes_AS_STRING(chunk) + off
    op.n = len(chunk) - off
    core.zc_busy = True
    core.zop = op
    try:
        core.loop._driver.start(op)
    except BaseException:
        core.zc_busy = False
        core.zop = None
        op.core = None
        op._release()
        raise
    _stream_zc_sends += 1
    return 0
