# A received kernel buffer (KBuf) and the hold on a buffer send() queued.

@cython.freelist(64)
cdef class KBuf:
    """One provided buffer the kernel filled, out of the ring until every
    holder (the connection, each exported view) let go of it."""

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if flags & PyBUF_WRITABLE:
            raise BufferError("a received kernel buffer is read-only")
        if self.ptr == NULL:
            raise BufferError("this receive buffer was already given back to the kernel")
        buffer.buf = self.ptr
        buffer.obj = self
        buffer.len = self.n
        buffer.readonly = 1
        buffer.itemsize = 1
        if flags & PyBUF_FORMAT:
            buffer.format = _fmt_B
        else:
            buffer.format = NULL
        buffer.ndim = 1
        if flags & PyBUF_ND:
            buffer.shape = &self.n
        else:
            buffer.shape = NULL
        if (flags & PyBUF_STRIDES) == PyBUF_STRIDES:
            buffer.strides = &self.itemsize
        else:
            buffer.strides = NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self.refs += 1
        _live.kbuf_views += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        _live.kbuf_views -= 1
        self.put()

    cdef inline void put(self) noexcept:
        self.refs -= 1
        if self.refs == 0:
            if self.d is not None:
                self.d.pbuf_out -= 1
                _live.pbufs_out -= 1
                if self.d.provided_buffers:
                    rl_pbuf_put(self.d.pbuf, self.bid)
                self.d = None
            self.ptr = NULL

    def __cinit__(self):
        _live.kbufs += 1

    def __dealloc__(self):
        # Dropped while still counted (a connection collected without
        # close()): no view can exist any more (each holds a reference), so
        # the buffer goes back to the ring.
        _live.kbufs -= 1
        if self.d is not None:
            self.d.pbuf_out -= 1
            _live.pbufs_out -= 1
            if self.d.provided_buffers:
                rl_pbuf_put(self.d.pbuf, self.bid)
            self.d = None

    def __repr__(self):
        return f'<KBuf bid={self.bid} len={self.n} refs={self.refs}>'


cdef KBuf _kbuf_of_bytes(bytes data):
    # Input that arrived while a callback runs (a completion delivered
    # re-entrantly) and must queue behind the buffer it is looking at.
    cdef KBuf kb = KBuf.__new__(KBuf)
    kb.owner = data
    kb.ptr = PyBytes_AS_STRING(data)
    kb.n = len(data)
    kb.itemsize = 1
    kb.refs = 1
    return kb


cdef inline KBuf _kbuf_new(Driver d, int bid, char *ptr, Py_ssize_t n):
    # ptr: the piece of buffer bid the CQE filled (the whole buffer's start
    # unless the ring is consumed incrementally); one hold on the buffer.
    cdef KBuf kb = KBuf.__new__(KBuf)
    kb.d = d
    kb.bid = bid
    kb.ptr = ptr
    rl_pbuf_hold(d.pbuf, bid)
    kb.n = n
    kb.itemsize = 1
    kb.refs = 1
    d.pbuf_out += 1
    _live.pbufs_out += 1
    return kb


# Holds a buffer export of an object send() queued, until the kernel took it.
@cython.freelist(32)
cdef class _BufHold:

    cdef int hold(self, object data) except -1:
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        _live.buf_holds += 1
        return 0

    def __dealloc__(self):
        if self.has_view:
            self.has_view = False
            _live.buf_holds -= 1
            PyBuffer_Release(&self.view)
