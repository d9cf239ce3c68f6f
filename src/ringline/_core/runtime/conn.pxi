# Layer: runtime (_core/runtime/).  It owns the compiled half of the runtime
# face: the connection (ConnCore, this file; its ops in connops.pxi, its
# kernel buffers in kbuf.pxi, its awaitable in wait.pxi), the send pool
# (sendpool.pxi), the per-worker metrics block (metrics.pxi) and what a
# worker sets for its connections (env.pxi).  Its
# Python half is ringline/runtime/.  Like transport/ it is built on loop/
# and the driver interface, and on the shared transport core
# (transport/common.pxi: its receive and send ops are BufRecvOp and
# GatherSendOp); it may not use the asyncio face's transports (stream.pxi,
# dgram.pxi, tls.pxi), and they do not use it.
#
# ConnCtx's compiled half: the runtime API's connection over the driver.
# (Class declarations: core.pxd.)
#
# ringline.ConnCtx (ringline/runtime/_conn.py) subclasses ConnCore; the per-message
# work is here.  It talks to the driver directly, not through an asyncio
# transport, so with_data() can hand the handler the kernel's own buffer.
#
# Receive.  One multishot RECV per connection over the driver's provided-
# buffer ring (io_uring).  A completion names the buffer the kernel filled;
# the core keeps it -- no copy -- as a KBuf in `seg1`/`segs` until the handler's
# with_data(fn) runs, then fn gets a read-only memoryview exported by the
# KBuf itself.  When fn returns, the view is released and the buffer goes
# back to the ring (a view fn kept alive -- a slice stored somewhere, or a
# forward_recv_buf() send in flight -- keeps the buffer out of the ring
# until it is released: the kernel never writes a buffer someone can read).
# Bytes fn did not consume, or all of them when it says NEED_MORE, are
# copied into the accumulator `acc` (a bytearray) and the buffer recycled;
# while acc holds anything, fn sees acc (with the newer buffers appended),
# so the stream stays in order.  A connection never holds more than
# MAX_HELD ring buffers: beyond that they are copied into acc (a slow
# handler cannot drain the ring for everyone), and above RECV_HIGH bytes
# buffered the recv is cancelled until the handler catches up.  ENOBUFS
# (ring empty) ends the multishot; one single-shot recv into the
# connection's own buffer follows (progress, never a spin), then multishot
# again.  The poll backend recv()s into the own buffer and copies into acc.
#
# Send.  send_nowait() copies into the worker's send pool (fixed slots,
# malloc'd once; exhausted pool = SendPoolExhausted, never unbounded
# growth); send()/send_parts() queue the caller's buffer itself (held until
# the kernel took it; large ones go out with SEND_ZC and stay alive until
# the kernel's notification); forward_recv_buf() queues a slice of a
# received kernel buffer (held, then recycled).  One SEND/SENDMSG (gathering
# up to IOV_BATCH queue entries) is in flight per connection, so bytes leave
# in order; a short send leaves the rest at the head of the queue.
#
# Waiting.  with_data()/send() return a small awaitable (_ConnAwait) that
# completes without a future when it can; otherwise it yields one asyncio
# future (the task waits on it like on any future, and cancellation is
# asyncio's) that the completion resolves, and retries when the task
# resumes -- fn always runs in the handler's task, never in a completion.

from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.ref cimport Py_REFCNT
from cpython.buffer cimport PyBUF_FORMAT, PyBUF_ND, PyBUF_STRIDES
from cpython.bytearray cimport PyByteArray_Resize, PyByteArray_AS_STRING, PyByteArray_GET_SIZE

cdef extern from "<sys/socket.h>":
    int shutdown_c "shutdown"(int fd, int how)
    enum:
        SHUT_WR_C "SHUT_WR"

cdef extern from "<stdlib.h>":
    void *malloc_c "malloc"(size_t n)
    void *realloc_c "realloc"(void *p, size_t n)
    void free_c "free"(void *p)

cdef extern from "<string.h>":
    void *memmove(void *dst, const void *src, size_t n)

cdef enum:
    MAX_HELD = 16
    WAIT = -2
    SE_POOL = 1
    SE_KBUF = 2
    SE_ZC = 4

NEED_MORE = -1

cdef char *_fmt_B = 'B'


# ---- the connection --------------------------------------------------------------

cdef class ConnCore:

    def __cinit__(self):
        self.q = NULL
        self.fd = -1
        self.acc = bytearray()
        self.segs = collections.deque()
        self.send_waiters = collections.deque()

    cdef int _disown(self) except -1:
        # Never raises: the socket must be closed regardless.
        if self.direct:
            return 0
        if self.fd >= 0 and self.drv is not None:
            fd, self.fd = self.fd, -1
            try:
                self.drv.disown_fd(fd)
            except Exception:
                pass
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.direct and not self.closed and self.fd >= 0:
            # Dropped unclosed: free the slot (best effort; a closed ring
            # took its table with it).
            try:
                _fixed_close(self.loop, self.fd)
            except BaseException:
                pass
        elif not self.closed and self.fd >= 0 and self.drv is not None:
            # Dropped unclosed: best effort (collected with a cycle, the
            # socket's finalizer has closed the fd already and drv may be
            # cleared; the poll driver then notices the dead owner itself).
            try:
                self._disown()
            except BaseException:
                pass
        if self.q != NULL:
            # Normally empty by now; entries left (a connection dropped without
            # close) give their slots back and drop their holds.
            for i in range(self.qhead, self.qhead + self.qlen):
                if self.q[i].slot >= 0 and self.pool is not None:
                    self.pool.give(self.q[i].slot)
                if self.q[i].hold != NULL:
                    if self.q[i].flags & SE_KBUF:
                        (<KBuf>self.q[i].hold).put()
                    Py_XDECREF(self.q[i].hold)
            free_c(self.q)
            self.q = NULL

    def _setup(self, LoopCore loop, sock, ConnEnv env, bint outbound=False):
        if self.loop is not None:
            raise RuntimeError("connection already set up")
        if loop._driver is None:
            raise TypeError("a ringline event loop is needed")
        self.loop = loop
        self.drv = loop._driver
        self.env = env
        self.pool = env.pool
        self.m = env.metrics
        self.sock = sock
        self.fd = sock.fileno()
        self.drv.own_fd(self.fd, sock)  # poll backend: one edge-triggered registration
        self.tcp = sock.family in (socket_mod.AF_INET, socket_mod.AF_INET6)
        self.is_outbound = outbound
        self.m.p[M_OUTBOUND if outbound else M_ACCEPTED] += 1
        self.counted = True

    def _setup_direct(self, LoopCore loop, int slot, int family, ConnEnv env):
        """An accepted connection that lives in slot `slot` of the loop's
        direct-descriptor table (no fd, no socket object; every op on it
        carries IOSQE_FIXED_FILE, and it is closed in the ring)."""
        if self.loop is not None:
            raise RuntimeError("connection already set up")
        if loop._driver is None or slot < 0 or <unsigned>slot >= loop._driver.fixed_files:
            raise ValueError(f"slot {slot} is not in the loop's direct-descriptor table")
        self.loop = loop
        self.drv = loop._driver
        self.env = env
        self.pool = env.pool
        self.m = env.metrics
        self.sock = None
        self.fd = slot
        self.direct = True
        self.tcp = family in (socket_mod.AF_INET, socket_mod.AF_INET6)
        self.is_outbound = False
        self.m.p[M_ACCEPTED] += 1
        self.counted = True

    def _direct_names(self):
        """(peer, local) addresses of a direct connection, read through a
        real fd made for a moment (FIXED_FD_INSTALL, 6.8): a multishot
        ACCEPT writes every connection's address into the one buffer, so
        it cannot say whose it is.  None when closed or refused."""
        cdef int fd
        if not self.direct or self.closed or self.drv is None:
            return None
        fd = self.drv.fixed_install(self.fd)
        if fd < 0:
            return None
        s = socket_mod.socket(fileno=fd)
        try:
            return (s.getpeername(), s.getsockname())
        except OSError:
            return None
        finally:
            s.close()

    def _start(self):
        """Start receiving (after the TLS setup, if any)."""
        if self.rop is None:
            self.rop = ConnRecvOp.__new__(ConnRecvOp)
            self.rop.core = self
            self.rop.init(self.loop, self.fd, self.env.bufs, self.env.own_size, 0, self.tcp)
        self._arm()

    # ---- receive: completions -----------------------------------------------

    cdef int _arm(self) except -1:
        if self.closing or self.eof or self.rexc is not None or self.recv_paused:
            return 0
        if self.rop.state != OP_IDLE:
            return 0
        self.drv.start(self.rop)
        return 0

    cdef int on_kbuf(self, int bid, char *ptr, Py_ssize_t n) except -1:
        cdef KBuf kb = _kbuf_new(self.drv, bid, ptr, n)
        self.m.p[M_BYTES_IN] += n
        if self.closing:
            kb.put()
            return 0
        if self.tls_obj is not None:
            try:
                self._tls_feed(kb.ptr, n)
            finally:
                kb.put()
            return 0
        if len(self.acc) == 0 and not self.in_step and self.nsegs >= MAX_HELD:
            self._flatten()
        if len(self.acc) and not self.nsegs and not self.in_step:
            # Leftover bytes come first: append behind them, give the buffer back.
            self._acc_append(kb.ptr, n)
            kb.put()
        else:
            self._seg_push(kb)
            self.seg_bytes += n
        self._after_input()
        return 0

    cdef int on_bytes(self, char *ptr, Py_ssize_t n) except -1:
        cdef KBuf kb
        self.m.p[M_BYTES_IN] += n
        if self.closing:
            return 0
        if self.tls_obj is not None:
            return self._tls_feed(ptr, n)
        if self.nsegs:
            if self.in_step:
                kb = _kbuf_of_bytes(PyBytes_FromStringAndSize(ptr, n))
                self._seg_push(kb)
                self.seg_bytes += n
                self._after_input()
                return 0
            self._flatten()
        self._acc_append(ptr, n)
        self._after_input()
        return 0

    cdef inline int _seg_push(self, KBuf kb) except -1:
        if self.nsegs:
            self.segs.append(kb)
        else:
            self.seg1 = kb
        self.nsegs += 1
        return 0

    cdef inline KBuf _seg_pop(self):
        # The first held buffer (there is one).
        cdef KBuf kb = self.seg1
        self.nsegs -= 1
        self.seg1 = <KBuf>self.segs.popleft() if self.nsegs else None
        return kb

    cdef int _acc_append(self, const char *ptr, Py_ssize_t n) except -1:
        cdef Py_ssize_t old = PyByteArray_GET_SIZE(self.acc)
        try:
            PyByteArray_Resize(self.acc, old + n)
        except BufferError:
            # A view of the accumulator outlived its callback: it keeps the
            # old bytearray, we go on with a copy.
            self.acc = bytearray(self.acc)
            PyByteArray_Resize(self.acc, old + n)
        memcpy(PyByteArray_AS_STRING(self.acc) + old, ptr, n)
        return 0

    cdef int _flatten(self) except -1:
        # Move every held buffer into the accumulator (in order).
        cdef KBuf kb
        while self.nsegs:
            kb = self._seg_pop()
            self.seg_bytes -= kb.n
            self._acc_append(kb.ptr, kb.n)
            kb.put()
        return 0

    cdef int _after_input(self) except -1:
        self.raw_seen = True
        if len(self.acc) + self.seg_bytes >= self.env.recv_high and not self.recv_paused:
            # The handler is behind: stop asking the kernel for more.
            self.recv_paused = True
            if self.rop is not None and self.rop.state == OP_INFLIGHT:
                self.drv.cancel(self.rop)
        self._wake()
        return 0

    cdef int recv_ended(self, int res) except -1:
        # The recv op is over (multishot ended, or a single-shot completed).
        cdef int what
        if self.closing:
            return 0
        what = _recv_ended(self.rop, res)
        if what == RECV_AGAIN or what == RECV_EMPTY:
            if what == RECV_EMPTY:
                self.m.p[M_RING_EMPTY] += 1
            self._arm()
            return 0
        if what == RECV_EOF:
            self.eof = True
        else:
            self.rexc = _os_error(-res)
        self._wake()
        return 0

    cdef inline int _wake(self) except -1:
        cdef object w = self.waiter
        if w is not None:
            self.waiter = None
            _wake_any(w)
        return 0

    cdef object _recv_waiter(self):
        cdef object w = self.waiter
        if w is not None:
            if type(w) is DirectCoro:
                if (w is not _direct_current and (<DirectCoro>w).wait_target is self
                        and (<DirectCoro>w).waiter is not None):
                    raise RuntimeError('another task is already waiting to receive on this connection')
            elif not w.done():
                raise RuntimeError('another task is already waiting to receive on this connection')
        w = _direct_waiter(self, self.loop)
        if w is not None:
            self.waiter = w
            return _DIRECT_WAIT
        w = _new_waiter(self.loop)
        self.waiter = w
        return w

    # ---- receive: the handler's side ------------------------------------------

    cdef Py_ssize_t _check(self, object r, Py_ssize_t n) except? -3:
        cdef Py_ssize_t k
        try:
            k = r
        except TypeError:
            raise TypeError(f'the with_data() callback must return the number of bytes '
                            f'it consumed or ringline.NEED_MORE, not {type(r).__name__}') from None
        if k == -1 or (k == 0 and n > 0):
            return -1
        if k < 0 or k > n:
            raise ValueError(f'the with_data() callback returned {k}: expected 0..{n} '
                             f'bytes consumed or ringline.NEED_MORE')
        return k

    cdef object _view_of(self, KBuf kb):
        # A memoryview over kb: the loop's idle one re-pointed (pycompat.h),
        # else a new one.  Taken out of the loop while fn runs, so a nested
        # step makes its own.
        cdef object mv = self.loop._view_spare
        if mv is not None:
            self.loop._view_spare = None
            if rl_view_repoint(mv, kb):
                return mv
        return PyMemoryView_FromObject(kb)

    cdef Py_ssize_t _step(self, object fn, int mode) except? -3:
        """One attempt: call fn on what is buffered.  Returns the count fn
        consumed, 0 at EOF, or WAIT when the task has to wait for input."""
        cdef KBuf kb
        cdef Py_ssize_t r, n
        cdef object mv
        if self.loop is None:
            raise RuntimeError('connection is not set up')
        while True:
            if len(self.acc) == 0 and self.nsegs:
                kb = self.seg1
                n = kb.n
                self.in_step = True
                try:
                    if mode == AW_DATA:
                        mv = self._view_of(kb)
                        try:
                            r = self._check(fn(mv), n)
                        finally:
                            if Py_REFCNT(mv) > 1:
                                # fn kept the view: end it now.  (Slices or
                                # exports it made keep the buffer out of the
                                # ring until they go.)
                                try:
                                    mv.release()
                                except BufferError:
                                    pass
                            elif rl_view_park(mv):
                                # Nobody else can see it: the next step re-points it.
                                self.loop._view_spare = mv
                            mv = None
                    else:
                        r = self._check(fn(PyBytes_FromStringAndSize(kb.ptr, n)), n)
                finally:
                    self.in_step = False
                if self.closing:
                    # fn closed the connection: what is buffered goes.
                    self._stop_recv()
                    return r if r >= 0 else 0
                self._seg_pop()
                self.seg_bytes -= n
                if r < 0:
                    # NEED_MORE: keep the bytes, give the buffer back.
                    self._acc_append(kb.ptr, n)
                    kb.put()
                    if self.nsegs or self.eof or self.rexc is not None:
                        continue
                    self._maybe_resume()
                    return WAIT
                if r < n:
                    self._acc_append(kb.ptr + r, n - r)
                kb.put()
                self._maybe_resume()
                return r
            if len(self.acc):
                if self.nsegs:
                    self._flatten()
                n = len(self.acc)
                self.in_step = True
                try:
                    if mode == AW_DATA:
                        mv = memoryview(self.acc)
                        try:
                            r = self._check(fn(mv), n)
                        finally:
                            try:
                                mv.release()
                            except BufferError:
                                pass
                            mv = None
                    else:
                        r = self._check(fn(bytes(self.acc)), n)
                finally:
                    self.in_step = False
                if r >= 0:
                    try:
                        del self.acc[:r]
                    except BufferError:
                        # fn kept a view of the accumulator: leave it that one.
                        self.acc = bytearray(memoryview(self.acc)[r:])
                    self._maybe_resume()
                    return r
                if not (self.eof or self.closing):
                    if self.rexc is not None:
                        raise self.rexc
                    self._maybe_resume()
                    return WAIT
                # EOF with an incomplete message left: fall through.
            if self.eof or self.closing:
                if mode == AW_DATA:
                    fn(memoryview(b''))     # (its own: fn may release it)
                else:
                    fn(b'')
                return 0
            if self.rexc is not None:
                raise self.rexc
            return WAIT

    cdef inline int _maybe_resume(self) except -1:
        if self.recv_paused and len(self.acc) + self.seg_bytes < self.env.recv_high // 2:
            self.recv_paused = False
            if self.rop is not None:
                self._arm()
        return 0

    def with_data(self, fn):
        """await conn.with_data(fn): fn(view) gets a memoryview over the
        received bytes (the kernel's buffer itself when nothing is left over
        from before) and returns how many it consumed, or NEED_MORE; resolves
        to that count, or 0 at EOF (fn then sees an empty view).  The view is
        valid only while fn runs."""
        cdef _ConnAwait aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.fn = fn
        aw.kind = AW_DATA
        return aw

    def with_bytes(self, fn):
        """As with_data(), but fn gets a bytes object it may keep."""
        cdef _ConnAwait aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.fn = fn
        aw.kind = AW_BYTES
        return aw

    def try_with_data(self, fn):
        """with_data() without waiting: None when nothing is buffered."""
        cdef Py_ssize_t r = self._step(fn, AW_DATA)
        return None if r == WAIT else r

    @property
    def buffered(self):
        """Bytes received and not yet consumed."""
        return len(self.acc) + self.seg_bytes

    # ---- send -------------------------------------------------------------------

    cdef int _check_send(self) except -1:
        if self.sexc is not None:
            raise self.sexc
        if self.closing:
            raise ConnectionAbortedError(errno_mod.ECONNABORTED, 'the connection is closed')
        if self.want_shut_wr:
            raise RuntimeError('cannot send after shutdown_write()')
        if self.loop is None:
            raise RuntimeError('connection is not set up')
        return 0

    cdef SendEnt *_push(self) except NULL:
        cdef SendEnt *e
        cdef Py_ssize_t ncap
        if self.qhead + self.qlen == self.qcap:
            if self.qhead > 0 and self.qhead >= self.qcap // 2:
                memmove(self.q, self.q + self.qhead, self.qlen * sizeof(SendEnt))
                self.qhead = 0
            else:
                ncap = self.qcap * 2 if self.qcap else 16
                e = <SendEnt*>realloc_c(self.q, ncap * sizeof(SendEnt))
                if e == NULL:
                    raise MemoryError()
                self.q = e
                self.qcap = ncap
        e = &self.q[self.qhead + self.qlen]
        self.qlen += 1
        e.slot = -1
        e.flags = 0
        e.hold = NULL
        return e

    cdef inline void _release_ent(self, SendEnt *e) noexcept:
        if e.slot >= 0:
            self.pool.give(e.slot)
            e.slot = -1
        if e.hold != NULL:
            if e.flags & SE_KBUF:
                (<KBuf>e.hold).put()
            Py_XDECREF(e.hold)
            e.hold = NULL

    cdef int _copy_in(self, char *ptr, Py_ssize_t n) except -1:
        """Queue a copy of n bytes in pool slots (all or nothing)."""
        cdef SendPool pool = self.pool
        cdef SendEnt *e
        cdef Py_ssize_t room, k, need
        cdef int slot
        # Fill the tail slot first when it is ours to extend (not in flight).
        if self.qlen and (not self.send_busy or self.qlen > self.batch_n):
            e = &self.q[self.qhead + self.qlen - 1]
            if e.flags & SE_POOL:
                room = pool.slot_size - ((e.ptr + e.len) - pool.addr(e.slot))
                if room >= n:
                    memcpy(e.ptr + e.len, ptr, n)
                    e.len += n
                    return 0
        need = pool.slots_for(n)
        if need > pool.nfree:
            self.m.p[M_POOL_EXHAUSTED] += 1
            raise SendPoolExhausted(
                f'send pool exhausted: {pool.nslots - pool.nfree} of {pool.nslots} slots '
                f'of {pool.slot_size} bytes in use, {n} bytes need {need} '
                f'({self.env.send_pool_hint or "Config.send_pool_slots"}); '
                f'await conn.send() waits for the kernel instead')
        while n > 0:
            slot = pool.take()
            k = min(n, pool.slot_size)
            e = self._push()
            e.slot = slot
            e.flags = SE_POOL
            e.ptr = pool.addr(slot)
            memcpy(e.ptr, ptr, k)
            e.len = k
            ptr += k
            n -= k
        return 0

    cpdef send_nowait(self, data):
        """Queue a copy of data (into the worker's send pool) and return at
        once; SendPoolExhausted when the pool has no room."""
        cdef Py_buffer view
        cdef Py_ssize_t n
        self._check_send()
        if self.tls_obj is not None:
            self._tls_send(data)
            return
        if type(data) is bytes:
            n = len(<bytes>data)
            if n:
                self._send_or_copy(PyBytes_AS_STRING(data), n)
        else:
            PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
            try:
                n = view.len
                if n:
                    self._send_or_copy(<char*>view.buf, n)
            finally:
                PyBuffer_Release(&view)

    cdef inline int _send_or_copy(self, char *ptr, Py_ssize_t n) except -1:
        # send_nowait()'s n > 0 bytes: what send() takes at once when it may
        # (_send_at_once), the rest copied into pool slots.  All or nothing:
        # with too few free slots for all n, nothing is sent and _copy_in raises.
        cdef Py_ssize_t k = 0
        if n >= DIRECT_SEND_MIN and self.pool.slots_for(n) <= self.pool.nfree:
            k = self._send_at_once(ptr, n)
            if k == n:
                return 0
        self._copy_in(ptr + k, n - k)
        self.bytes_queued += n - k
        self.qbytes += n - k
        if not self.send_busy:
            self._start_send()
        return 0

    cdef Py_ssize_t _send_at_once(self, const char *ptr, Py_ssize_t n) except -1:
        # A send of DIRECT_SEND_MIN or more on io_uring with nothing queued
        # goes out by send() at once, as the stream transport's write() does
        # (transport/stream.pxi says why: queued for a SEND SQE, 64
        # connections' 100 KiB copies stay alive until the next iteration and,
        # with the 8 MiB receive ring, leave the cache).  Returns what the
        # kernel took; 0 when it took nothing or failed (the ring's send then
        # meets the error and reports it as usual).  Not for direct
        # descriptors (no fd) or on the poll backend (its driver sends at once).
        cdef ssize_t r
        if self.qlen or self.send_busy or self.direct or self.fd < 0 or self.drv is None \
                or self.drv.direct_send:
            return 0
        r = _send_now(self.fd, ptr, <size_t>n, NULL, 0)
        if r <= 0:
            return 0
        self.bytes_queued += r
        self.bytes_taken += r
        self.m.p[M_BYTES_OUT] += r
        return r

    cdef int _queue_held(self, object data, bint allow_zc) except -1:
        cdef SendEnt *e
        cdef _BufHold h
        cdef Py_ssize_t n
        cdef char *ptr
        cdef object holder
        if type(data) is bytes:
            n = len(<bytes>data)
            ptr = PyBytes_AS_STRING(data)
            holder = data
        else:
            h = _BufHold.__new__(_BufHold)
            h.hold(data)
            n = h.view.len
            ptr = <char*>h.view.buf
            holder = h
        if n == 0:
            return 0
        e = self._push()
        e.ptr = ptr
        e.len = n
        e.hold = <PyObject*>holder
        Py_INCREF(holder)
        # SEND_ZC: TCP only (the kernel refuses it on AF_UNIX with EOPNOTSUPP).
        if allow_zc and self.tcp and self.drv is not None and self.drv.zero_copy_send and self.env.zc_ok and \
                self.env.zc_threshold > 0 and n >= self.env.zc_threshold:
            e.flags = SE_ZC
        self.bytes_queued += n
        self.qbytes += n
        return 0

    def send(self, data):
        """await conn.send(data): queue data itself (no copy) and resolve
        when the kernel has taken all of it.  Large buffers go out with
        SEND_ZC and stay referenced until the kernel's notification."""
        cdef _ConnAwait aw
        self._check_send()
        if self.tls_obj is not None:
            self._tls_send(data)
        else:
            self._queue_held(data, True)
            if not self.send_busy and self.qlen:
                self._start_send()
        aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.kind = AW_SEND
        aw.target = self.bytes_queued
        return aw

    def send_parts(self, parts):
        """await conn.send_parts([a, b, ...]): scatter-gather send of the
        parts (no copy, one SENDMSG), resolving when the kernel took them."""
        cdef _ConnAwait aw
        self._check_send()
        for part in parts:
            if self.tls_obj is not None:
                self._tls_send(part)
            else:
                self._queue_held(part, False)
        if not self.send_busy and self.qlen:
            self._start_send()
        aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.kind = AW_SEND
        aw.target = self.bytes_queued
        return aw

    def write_bytes(self, data):
        """Queue data without the pool's limit (a private copy): the stream
        adapter's write(); flow control is drain()'s."""
        self._check_send()
        if self.tls_obj is not None:
            self._tls_send(data)
            return
        if type(data) is not bytes:
            data = bytes(data)
        self._queue_held(data, False)
        if not self.send_busy and self.qlen:
            self._start_send()

    def drain(self, Py_ssize_t limit=0):
        """await conn.drain(limit): until at most limit bytes are queued."""
        cdef _ConnAwait aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.kind = AW_DRAIN
        aw.limit = limit
        return aw

    cpdef forward_recv_buf(self, view):
        """Send a (slice of a) view with_data() handed out, straight from the
        kernel's receive buffer: the buffer is held until the kernel took the
        bytes, then recycled.  Anything else is copied, as send_nowait()."""
        cdef Py_buffer pb
        cdef KBuf kb
        cdef SendEnt *e
        cdef char *ptr
        cdef Py_ssize_t n, k
        self._check_send()
        if self.tls_obj is None and type(view) is memoryview:
            owner = rl_view_obj(view)
            if type(owner) is KBuf:
                kb = <KBuf>owner
                PyObject_GetBuffer(view, &pb, PyBUF_SIMPLE)
                ptr = <char*>pb.buf
                n = pb.len
                PyBuffer_Release(&pb)
                if kb.ptr == NULL or ptr < kb.ptr or ptr + n > kb.ptr + kb.n:
                    raise ValueError('view is not inside a live receive buffer')
                if n >= DIRECT_SEND_MIN:
                    k = self._send_at_once(ptr, n)
                    ptr += k
                    n -= k
                if n == 0:
                    return
                e = self._push()
                e.ptr = ptr
                e.len = n
                e.flags = SE_KBUF
                e.hold = <PyObject*>kb
                Py_INCREF(kb)
                kb.refs += 1
                self.bytes_queued += n
                self.qbytes += n
                if not self.send_busy:
                    self._start_send()
                return
        self.send_nowait(view)

    cdef int _start_send(self) except -1:
        cdef SendEnt *e
        cdef ConnSendOp op
        cdef ZcSendOp zop
        cdef Py_ssize_t i, n
        if self.send_busy or self.qlen == 0 or self.closed:
            return 0
        e = &self.q[self.qhead]
        if e.flags & SE_ZC:
            zop = ZcSendOp.__new__(ZcSendOp)
            zop.core = self
            zop.loop = self.loop
            zop.fd = self.fd
            zop.hold = <object>e.hold
            zop.ptr = e.ptr
            zop.n = e.len
            self.batch_n = 1
            self.send_busy = True
            try:
                self.drv.start(zop)
            except BaseException:
                self.send_busy = False
                raise
            return 0
        op = self.sop
        if op is None:
            op = self.sop = ConnSendOp.__new__(ConnSendOp)
            op.core = self
            op.loop = self.loop
            op.fd = self.fd
        n = 0
        for i in range(min(self.qlen, IOV_BATCH)):
            e = &self.q[self.qhead + i]
            if e.flags & SE_ZC:
                break
            op.iov[i].iov_base = e.ptr
            op.iov[i].iov_len = e.len
            n += 1
        op.niov = <int>n
        self.batch_n = n
        self.send_busy = True
        try:
            self.drv.start(op)
        except BaseException:
            self.send_busy = False
            raise
        return 0

    cdef int on_sent(self, int res) except -1:
        cdef SendEnt *e
        cdef Py_ssize_t left
        self.send_busy = False
        self.batch_n = 0
        if res < 0:
            if res != -errno_ECANCELED and self.sexc is None:
                self.sexc = _os_error(-res)
            if self.sexc is None:
                self.sexc = ConnectionAbortedError(errno_mod.ECONNABORTED, 'the connection was aborted')
            self._drop_queue()
            self._fail_send_waiters()
            if self.closing:
                self._finalize()
            return 0
        left = res
        self.bytes_taken += res
        self.qbytes -= res
        self.m.p[M_BYTES_OUT] += res
        while left > 0 and self.qlen:
            e = &self.q[self.qhead]
            if left >= e.len:
                left -= e.len
                self._release_ent(e)
                self.qhead += 1
                self.qlen -= 1
            else:
                e.ptr += left
                e.len -= left
                left = 0
        if self.qlen == 0:
            self.qhead = 0
        if self.closing and self.sexc is not None:
            # Aborted while this send was in flight: the rest goes.
            self._drop_queue()
            self._finalize()
            return 0
        if self.send_waiters:
            self._resolve_send_waiters()
        if self.qlen:
            if not self.closed:
                self._start_send()
            return 0
        if self.closing:
            self._finalize()
        elif self.want_shut_wr and not self.shut_wr_done:
            self._do_shut_wr()
        return 0

    cdef int _drop_queue(self) except -1:
        cdef Py_ssize_t i
        for i in range(self.qhead, self.qhead + self.qlen):
            self._release_ent(&self.q[i])
        self.qhead = 0
        self.qlen = 0
        self.qbytes = 0
        return 0

    cdef int _resolve_send_waiters(self) except -1:
        while self.send_waiters and (<tuple>self.send_waiters[0])[0] <= self.bytes_taken:
            _wake_any((<tuple>self.send_waiters.popleft())[1])
        return 0

    cdef int _fail_send_waiters(self) except -1:
        while self.send_waiters:
            # the awaitable re-checks and raises
            _wake_any((<tuple>self.send_waiters.popleft())[1])
        return 0

    cdef object _send_waiter(self, uint64_t target):
        cdef object w = _direct_waiter(self, self.loop)
        if w is not None:
            self.send_waiters.append((target, w))
            return _DIRECT_WAIT
        w = _new_waiter(self.loop)
        self.send_waiters.append((target, w))
        return w

    cdef int _do_shut_wr(self) except -1:
        self.shut_wr_done = True
        if self.tls_obj is not None:
            return 0
        if self.direct:
            return _fixed_shut_wr(self.loop, self.fd)
        if shutdown_c(self.fd, SHUT_WR_C) < 0:
            pass    # ENOTCONN: the peer is gone already
        return 0

    def shutdown_write(self):
        """Half-close: FIN after everything queued has been sent."""
        if self.closing or self.want_shut_wr:
            return
        if self.tls_obj is not None:
            self._tls_close_notify()
        self.want_shut_wr = True
        if self.qlen == 0 and not self.send_busy:
            self._do_shut_wr()

    # ---- closing ---------------------------------------------------------------

    cdef int _stop_recv(self) except -1:
        cdef KBuf kb
        if self.rop is not None and self.rop.state == OP_INFLIGHT:
            self.drv.cancel(self.rop)
        if not self.in_step:
            while self.nsegs:
                kb = self._seg_pop()
                kb.put()
            self.seg_bytes = 0
        return 0

    def close(self):
        """Close after what is queued has been sent (asyncio's close())."""
        if self.closing or self.loop is None:
            return
        if self.tls_obj is not None and self.sexc is None and not self.want_shut_wr:
            self._tls_close_notify()
        self.closing = True
        self._stop_recv()
        self._wake()
        if self.sexc is not None and not self.send_busy:
            self._drop_queue()
        if self.qlen == 0 and not self.send_busy:
            self._finalize()

    def abort(self):
        """Close now, discarding what is queued (asyncio's abort())."""
        if self.closed or self.loop is None:
            return
        self.closing = True
        self._stop_recv()
        self._wake()
        if self.sexc is None:
            self.sexc = ConnectionAbortedError(errno_mod.ECONNABORTED, 'the connection was aborted')
        if self.send_busy:
            # The kernel may still read the in-flight entries: they go when
            # the send completes (cancelled or not).
            if self.sop is not None and self.sop.state == OP_INFLIGHT:
                self.drv.cancel(self.sop)
        else:
            self._drop_queue()
            self._finalize()

    cdef int _finalize(self) except -1:
        if self.closed:
            return 0
        self.closed = True
        self.closing = True
        self._drop_queue()
        self._fail_send_waiters()
        if self.counted:
            self.counted = False
            self.m.p[M_CLOSED] += 1
        self._wake()
        if self.direct:
            slot, self.fd = self.fd, -1
            _fixed_close(self.loop, slot)
            return 0
        sock = self.sock
        if sock is not None:
            self._disown()
            try:
                sock.close()
            except OSError:
                pass
        return 0

    @property
    def send_queued(self):
        """Bytes queued and not yet taken by the kernel."""
        return self.qbytes

    # ---- TLS over the same queues (plaintext in acc, ciphertext on the wire) ---

    def _tls_setup(self, sslobj, incoming, outgoing):
        self.tls_obj = sslobj
        self.tls_in = incoming
        self.tls_out = outgoing
        self.tls_ready = False

    def _tls_established(self):
        self.tls_ready = True
        self._tls_pump()

    def _tls_flush(self):
        cdef bytes out
        if self.tls_out is None or self.closed:
            return
        out = self.tls_out.read()
        if out:
            self._queue_held(out, False)
            if not self.send_busy:
                self._start_send()

    def _tls_raw_wait(self):
        cdef _ConnAwait aw = _ConnAwait.__new__(_ConnAwait)
        aw.conn = self
        aw.kind = AW_RAW
        return aw

    @property
    def _tls_input_ended(self):
        return self.eof or self.rexc is not None or self.closing

    cdef int _tls_feed(self, char *ptr, Py_ssize_t n) except -1:
        self.tls_in.write(PyBytes_FromStringAndSize(ptr, n))
        if self.tls_ready:
            self._tls_pump()
        self._after_input()
        return 0

    cdef int _tls_pump(self) except -1:
        cdef object chunk
        while True:
            try:
                chunk = self.tls_obj.read(262144)
            except _ssl.SSLWantReadError:
                break
            except _ssl.SSLZeroReturnError:
                self.eof = True
                break
            except _ssl.SSLError as exc:
                self.rexc = exc
                break
            if not chunk:
                self.eof = True
                break
            self._acc_append(PyBytes_AS_STRING(chunk), len(chunk))
        # Reading may have produced output (key updates, tickets).
        self._tls_flush()
        return 0

    cdef int _tls_send(self, object data) except -1:
        cdef Py_ssize_t n
        if not self.tls_ready:
            raise RuntimeError('TLS handshake not complete')
        n = len(memoryview(data))
        if n:
            self.tls_obj.write(data)
            self._tls_flush()
        return 0

    cdef int _tls_close_notify(self) except -1:
        try:
            self.tls_obj.unwrap()
        except (_ssl.SSLError, ValueError, OSError):
            pass
        self._tls_flush()
        return 0
