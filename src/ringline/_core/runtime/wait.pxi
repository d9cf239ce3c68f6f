# The awaitable with_data()/send() return.

cdef enum:
    AW_DATA = 0
    AW_BYTES = 1
    AW_SEND = 2
    AW_RAW = 3
    AW_DRAIN = 4


# What a handler's task waits on: an asyncio future of the loop, resolved
# by the completion (the task then retries the step).  A custom future-like
# object resumed straight from the completion was measured too: no gain in
# CPU per request over asyncio's C Future, so asyncio's own is used.
cdef inline object _new_waiter(LoopCore loop):
    cdef object f = loop._new_future()
    f._asyncio_future_blocking = True
    return f


cdef inline int _wake_waiter(object w) except -1:
    if not w.done():
        w.set_result(None)
    return 0


cdef inline int _wake_any(object w) except -1:
    # A waiter future, or the DirectCoro of a handler waiting directly.
    if type(w) is DirectCoro:
        return (<DirectCoro>w).schedule()
    return _wake_waiter(w)


cdef inline DirectCoro _direct_waiter(object conn, LoopCore loop):
    # The DirectCoro to register instead of a future: the one running the
    # awaiting coroutine now, if any (never in debug mode: see direct.pxi).
    cdef DirectCoro dc = _direct_current
    if dc is None or dc.loop is not loop or loop._debug:
        return None
    dc.wait_target = conn
    return dc


# am_send for _ConnAwait: `await conn.with_data(fn)` finishing without a
# StopIteration (PyIter_Send asks am_send first; tp_iternext stays for
# tracing and explicit iteration).
cdef extern from *:
    """
    static PyObject *(*rl_aw_step)(PyObject *, int *) = NULL;
    static PySendResult rl_aw_am_send(PyObject *self, PyObject *arg, PyObject **result) {
        int done = 0;
        PyObject *r = rl_aw_step(self, &done);
        *result = r;
        if (r == NULL)
            return PYGEN_ERROR;
        return done ? PYGEN_RETURN : PYGEN_NEXT;
    }
    static int rl_aw_install(PyObject *t, void *step) {
        PyTypeObject *tp = (PyTypeObject *)t;
        if (tp->tp_as_async == NULL)
            return 0;
        rl_aw_step = (PyObject *(*)(PyObject *, int *))step;
        tp->tp_as_async->am_send = rl_aw_am_send;
        return 1;
    }
    """
    int rl_aw_install(object t, void *step)


@cython.freelist(32)
cdef class _ConnAwait:
    """What with_data()/send() return: done at the first step when it can
    be, else it yields a waiter the task waits on, and retries when woken."""

    def __await__(self):
        return self

    def __iter__(self):
        return self

    def __next__(self):
        cdef int done = 0
        r = _aw_step(self, &done)
        if done:
            raise StopIteration(r)
        return r

    def send(self, value):
        return self.__next__()


cdef object _aw_step(_ConnAwait self, int *done):
    cdef ConnCore c = self.conn
    cdef Py_ssize_t r
    if self.kind <= AW_BYTES:
        r = c._step(self.fn, self.kind)
        if r != WAIT:
            self.fn = None
            done[0] = 1
            return r
        return c._recv_waiter()
    if self.kind == AW_SEND:
        if c.bytes_taken >= self.target:
            done[0] = 1
            return None
        if c.sexc is not None:
            raise c.sexc
        if c.closed:
            raise ConnectionAbortedError(errno_mod.ECONNABORTED,
                                         'connection closed before the data was sent')
        return c._send_waiter(self.target)
    if self.kind == AW_DRAIN:
        if c.qbytes <= self.limit or c.closed:
            done[0] = 1
            return None
        if c.sexc is not None:
            raise c.sexc
        return c._send_waiter(c.bytes_queued - <uint64_t>self.limit)
    # AW_RAW: wait for any input (TLS handshake).
    if c.raw_seen or c.eof or c.rexc is not None or c.closing:
        c.raw_seen = False
        done[0] = 1
        return None
    return c._recv_waiter()


rl_aw_install(_ConnAwait, <void*>_aw_step)
