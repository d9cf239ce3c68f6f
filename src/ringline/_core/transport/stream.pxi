# Layer: transport (_core/transport/).  It owns the shared transport core
# (common.pxi: the receive and gathered-send ops and TransportCore, which
# the runtime face's connection uses too, so it knows neither face) and the
# compiled halves of the asyncio face's transports: stream sockets and
# multishot accept (this file), datagrams (dgram.pxi) and the TLS record
# path under asyncio's SSLProtocol (tls.pxi).  Their Python halves are in
# ringline/aio/.  It starts Ops on the loop's driver and asks what that
# driver can do (its capabilities, driver/base.pxi: provided buffers for
# multishot receive, direct sends), never which backend it is; it may not
# call the kernel any other way, and may not know the runtime API
# (_core/runtime/).
#
# Stream transports (TCP, Unix) on the ring: the compiled half.
#
# StreamCore does the per-message work; ringline.aio._transports.SocketTransport
# (a real asyncio.Transport subclass) owns one and forwards to it.  A cdef
# class cannot also inherit asyncio.Transport (its __slots__ layout
# conflicts), so the Python transport binds write/writelines to the core's
# methods as instance attributes: no Python frame on the write path.
#
# Receive: one multishot RECV per connection over the driver's provided-
# buffer ring (IORING_REGISTER_PBUF_RING).  Each completion names the buffer
# the kernel filled; its bytes are copied once -- into a new bytes object for
# Protocol.data_received, or into the buffer BufferedProtocol.get_buffer()
# returns -- and the buffer goes straight back to the ring.  The kernel can't
# write into the protocol's own buffer here: with multishot recv it picks
# the buffer when data arrives, and get_buffer() must be asked first, which
# would need one SQE per receive instead of one per connection.  ENOBUFS
# (ring empty) ends the multishot; the next receive is one single-shot recv
# into a buffer borrowed from the loop's pool (always progress, never a
# spin; the poll backend's reads borrow the same way), after which
# multishot is re-armed.
#
# Send: writes go to a queue; one SEND (one chunk) or SENDMSG (up to
# IOV_BATCH chunks, gathered) is in flight at a time, so bytes leave in
# order; a short send leaves the remainder at the head of the queue.  SQEs
# queued in an iteration are submitted by the next io_uring_enter.  With
# nothing queued, a write goes out by send() at once on the poll backend
# (always) and on io_uring when it is DIRECT_SEND_MIN or more (why: there).
# With set_stream_send_zc(threshold) (zcsend.pxi, off by default), a chunk
# that large goes out alone with SEND_ZC instead, also in place of the
# direct send().

cdef enum:
    OWNED_RECV_SIZE = 65536     # io_uring without a buffer ring: per connection
    # io_uring: a write this large with nothing queued is sent at once by a
    # send() syscall.  Measured on the 100 KiB echo: kept for a SEND SQE,
    # 64 connections' bytes objects stay alive until the next iteration and
    # together with the 8 MiB buffer ring they leave the cache, so the copy
    # into bytes and the kernel's copy out of them ran ~2.5x slower than
    # uvloop's; sent at once, the object is freed and its memory reused hot.
    DIRECT_SEND_MIN = 32768


# Receive and send are the shared transport core's ops (common.pxi); these
# add what the transport does with their completions.
@cython.final
cdef class StreamRecvOp(BufRecvOp):
    cdef StreamCore core

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef StreamCore core = self.core
        cdef object ctx
        cdef char *ptr = NULL
        cdef Driver d
        cdef bint single = self.single
        cdef bint more = (flags & IORING_CQE_F_MORE) != 0
        # The protocol's context, as asyncio's reader callback has it.
        ctx = core._enter()
        try:
            if flags & IORING_CQE_F_BUFFER and self.loop._driver.pbuf.bundle:
                if not more:
                    self.single = False
                if res > 0:
                    _stream_bundle(core, self.loop._driver, res, flags)
                if not more:
                    core.recv_ended(res)
                return 0
            if flags & IORING_CQE_F_BUFFER:
                d = self.loop._driver
                ptr = _pbuf_piece(d, res, flags)
            elif single and res > 0:
                ptr = _recv_filled(self, res)
            if not more:
                self.single = False
            if res > 0:
                try:
                    core.on_data(ptr, res)
                finally:
                    if flags & IORING_CQE_F_BUFFER:
                        rl_pbuf_cqe_done(d.pbuf, flags >> IORING_CQE_BUFFER_SHIFT, flags)
                    elif single:
                        _recv_give(self, ptr)
            elif flags & IORING_CQE_F_BUFFER:
                rl_pbuf_cqe_done(d.pbuf, flags >> IORING_CQE_BUFFER_SHIFT, flags)
            elif not more and single:
                _recv_drop_buf(self)
            if not more:
                # A multishot the kernel ended (with data: it does when the
                # CQ ring is full), or a single shot.
                core.recv_ended(res)
        finally:
            core._leave(ctx)
        return 0


cdef int _stream_bundle(StreamCore core, Driver d, int res, uint32_t flags) except -1:
    # A bundle CQE (uring.h rl_pbuf_bundle_next): one buffer is delivered
    # in place, as without bundles; several are copied into one bytes
    # object, one data_received() for them all.  Every piece is walked
    # (and its finished buffer given back) whatever happens, or the
    # mirrored head would be wrong for every later receive.
    cdef unsigned left = <unsigned>res, bid = 0, n = 0
    cdef char *ptr = NULL
    cdef char *dst
    cdef int done = 0, r
    cdef bytes data
    r = rl_pbuf_bundle_next(d.pbuf, &left, flags, 1, &bid, &ptr, &n, &done)
    if r != 0:
        raise _bundle_mismatch(flags)
    RL_KERNEL_WROTE(ptr, n)
    if left == 0:
        try:
            core.on_data(ptr, n)
        finally:
            if done:
                rl_pbuf_put(d.pbuf, bid)
        return 0
    try:
        data = PyBytes_FromStringAndSize(NULL, res)
    except BaseException:
        while r == 0:               # no memory: the bytes are lost, the ring's order is not
            if done:
                rl_pbuf_put(d.pbuf, bid)
            r = rl_pbuf_bundle_next(d.pbuf, &left, flags, 0, &bid, &ptr, &n, &done)
        raise
    dst = PyBytes_AS_STRING(data)
    while True:
        memcpy(dst, ptr, n)
        dst += n
        if done:
            rl_pbuf_put(d.pbuf, bid)
        r = rl_pbuf_bundle_next(d.pbuf, &left, flags, 0, &bid, &ptr, &n, &done)
        if r == 1:
            break
        if r < 0:
            raise _bundle_mismatch(flags)
        RL_KERNEL_WROTE(ptr, n)
    return core.on_data_obj(data)


@cython.final
cdef class StreamSendOp(GatherSendOp):
    cdef StreamCore core
    cdef list chunks            # the objects whose bytes the kernel reads
    cdef Py_ssize_t nbytes

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.chunks = None
        if res < 0 or self.core.protocol_paused or self.core.closing:
            # An error, resume_writing() or the close: protocol code runs,
            # or its connection_lost is scheduled.
            return self.core.on_sent_in_context(res)
        # Otherwise no context: entering one would cost more than the rest
        # of this completion.
        return self.core.on_sent(res)


cdef object _TransportSocket = None


# The fields and methods every transport core shares (protocol, flow
# control, fatal errors, paused data, context) are TransportCore's (common.pxi).
@cython.final
cdef class StreamCore(TransportCore):
    cdef bint buffered
    cdef object srp                  # an exact asyncio.StreamReaderProtocol, or None
    cdef SSLCore tls                 # ringline.aio._sslproto.SSLProtocol's core, or None
    cdef object data_received        # bound methods, looked up once
    cdef object get_buffer
    cdef object buffer_updated
    cdef StreamRecvOp rop
    cdef StreamSendOp sop
    cdef StreamZcOp zop              # SEND_ZC before its first CQE (zcsend.pxi)
    cdef bint zc_busy                # zop is in flight: no other send starts
    cdef bint zc_ok                  # SEND_ZC may be used (TCP, the driver has it)
    cdef list wbuf                   # queued chunks (bytes), head partly sent
    cdef Py_ssize_t woff             # bytes of wbuf[0] already sent
    cdef public bint eof             # write_eof() asked
    cdef bint eof_received
    cdef bint recv_armed
    cdef bint direct_send            # poll backend: write() tries send() itself
    cdef bint tcp                    # a short read drains the socket (see setup)
    cdef bint pending_eof            # EOF arrived while paused (pending: a list of bytes)
    cdef object empty_waiter

    def __cinit__(self):
        self.wbuf = []

    def setup(self, LoopCore loop, transport, sock, protocol):
        self._bind(loop, transport, sock)
        self.set_protocol(protocol)
        loop._driver.own_fd(self.fd, sock)
        # A short read means "drained" only where the stack never stops a
        # read early: TCP.  AF_UNIX stops at a message carrying ancillary
        # data (SCM_RIGHTS, credentials) with more queued and no new edge.
        self.tcp = sock.family in (socket_mod.AF_INET, socket_mod.AF_INET6)
        # The poll backend's write fast path (uvloop's and asyncio's): with
        # nothing queued, write() sends at once and, when the kernel takes
        # everything, no op or completion exists at all.  On io_uring the
        # SEND goes in the ring with the iteration's other SQEs instead,
        # unless the write is DIRECT_SEND_MIN or more.
        self.direct_send = loop._driver.direct_send
        self.zc_ok = self.tcp and loop._driver.zero_copy_send

    def disown(self):
        # The transport is about to close the socket.  Never raises: the
        # close and connection_lost must happen regardless.
        if self.fd >= 0 and self.loop is not None:
            fd, self.fd = self.fd, -1
            try:
                self.loop._driver.disown_fd(fd)
            except Exception:
                pass

    def set_protocol(self, protocol):
        # Pause state belongs to the protocol that was told: a new protocol
        # (start_tls, sendfile fallback) starts unpaused and is paused on its
        # own next write if the buffer is still above the high-water mark,
        # so it never gets a resume_writing() without a pause_writing().
        self.protocol = protocol
        self.protocol_paused = False
        self.buffered = isinstance(protocol, _BufferedProtocol)
        # asyncio streams: StreamReaderProtocol.data_received only hands the
        # bytes to its reader's feed_data (Lib/asyncio/streams.py, 3.8+);
        # calling feed_data ourselves saves two Python frames per message.
        # Only the exact class (a subclass may override data_received).
        # (_compat.STREAM_READER_FAST: this interpreter's reader has the
        # attributes _feed_reader writes.)
        self.srp = protocol if (_STREAM_READER_FAST and
                                type(protocol) is _StreamReaderProtocol and
                                hasattr(protocol, '_stream_reader_wr')) else None
        # TLS: ciphertext goes from the kernel buffer into the incoming BIO
        # (transport/tls.pxi), not through get_buffer()/buffer_updated().
        tls = getattr(protocol, '_ringline_tls', None)
        self.tls = tls if type(tls) is SSLCore else None
        if self.buffered:
            self.get_buffer = protocol.get_buffer
            self.buffer_updated = protocol.buffer_updated
            self.data_received = None
        else:
            self.data_received = protocol.data_received
            self.get_buffer = self.buffer_updated = None

    # ---- reading ------------------------------------------------------------

    def start_reading(self):
        # Called (via call_soon) after connection_made, as asyncio does.
        if self.closing or self.paused or self.recv_armed:
            return
        self._arm()

    cdef int _arm(self) except -1:
        if self.rop is None:
            self.rop = StreamRecvOp.__new__(StreamRecvOp)
            self.rop.core = self
            self.rop.init(self.loop, self.fd, self.loop._rbufs, RBUF_SIZE, OWNED_RECV_SIZE, self.tcp)
        if self.rop.state != OP_IDLE:
            return 0
        self.recv_armed = True
        self.loop._driver.start(self.rop)
        return 0

    cdef int on_data(self, char *ptr, Py_ssize_t n) except -1:
        if self.conn_lost:
            return 0
        if self.paused or self.pending:
            # Arrived after pause_reading() asked the kernel to stop: keep
            # it, in order, for resume_reading().
            if self.pending is None:
                self.pending = []
            self.pending.append(PyBytes_FromStringAndSize(ptr, n))
            return 0
        cdef SSLCore tls = self.tls     # a reference of our own for the call
        if tls is not None:
            try:
                tls.feed(ptr, n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
            return 0
        if self.buffered:
            return self._feed_buffered(ptr, n)
        try:
            if self.srp is not None:
                wr = self.srp._stream_reader_wr
                reader = wr() if wr is not None else None
                if reader is not None:
                    if type(reader) is _StreamReader:
                        _feed_reader(reader, ptr, n)
                    else:
                        reader.feed_data(PyBytes_FromStringAndSize(ptr, n))
            else:
                self.data_received(PyBytes_FromStringAndSize(ptr, n))
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
        return 0

    cdef int on_data_obj(self, bytes data) except -1:
        # on_data() for bytes already made (a recv bundle's): a plain
        # protocol gets the object itself.
        if self.conn_lost:
            return 0
        if self.paused or self.pending or self.tls is not None or self.buffered \
                or self.srp is not None:
            return self.on_data(PyBytes_AS_STRING(data), len(data))
        try:
            self.data_received(data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
        return 0

    cdef int _feed_buffered(self, char *ptr, Py_ssize_t n) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t k
        while n > 0 and not self.conn_lost:
            if self.paused:
                # pause_reading() from buffer_updated(): asyncio hands a
                # paused protocol nothing more, so the rest waits for
                # resume_reading(), ahead of what was kept since.
                if self.pending is None:
                    self.pending = []
                self.pending.insert(0, PyBytes_FromStringAndSize(ptr, n))
                return 0
            try:
                buf = self.get_buffer(n)
                PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
                try:
                    if view.len == 0:
                        raise RuntimeError('get_buffer() returned an empty buffer')
                    k = min(view.len, n)
                    memcpy(view.buf, ptr, k)
                finally:
                    PyBuffer_Release(&view)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
                return 0
            try:
                self.buffer_updated(k)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self.fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
                return 0
            ptr += k
            n -= k
        return 0

    cdef int recv_ended(self, int res) except -1:
        # The multishot (or single-shot) recv is over (_recv_ended()).
        cdef int what
        self.recv_armed = False
        if self.conn_lost:
            return 0
        what = _recv_ended(self.rop, res)
        if what == RECV_EOF:
            if self.paused or self.pending:
                self.pending_eof = True
                return 0
            return self._on_eof()
        if what == RECV_ERROR:
            self.fatal_error(_os_error(-res), 'Fatal read error on socket transport')
        elif not self.paused and not self.closing:
            self._arm()
        return 0

    cdef int _on_eof(self) except -1:
        if self.loop._debug:
            _get_logger().debug("%r received EOF", self.transport)
        self.eof_received = True
        try:
            keep_open = self.protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return 0
        if not keep_open:
            self.close()
        return 0

    def pause_reading(self):
        if self.closing or self.paused:
            return
        self.paused = True
        if self.rop is not None and self.rop.state == OP_INFLIGHT:
            self.loop._driver.cancel(self.rop)
        self._debug_reading('pauses')

    def resume_reading(self):
        if self.closing or not self.paused:
            return
        self.paused = False
        if self.pending or self.pending_eof:
            self.loop._call_soon_c(self._deliver_pending, (), None)
        elif not self.recv_armed:
            self._arm()
        self._debug_reading('resumes')

    cdef int _deliver_pending_c(self) except -1:
        cdef bytes data
        while self.pending and not self.paused and not self.conn_lost:
            data = self.pending.pop(0)
            if self.buffered:
                self._feed_buffered(PyBytes_AS_STRING(data), len(data))
            else:
                try:
                    self.data_received(data)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self.fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
                    return 0
        if self.paused or self.conn_lost or self.closing:
            return 0
        if self.pending_eof:
            self.pending_eof = False
            self._on_eof()
        elif not self.recv_armed:
            self._arm()
        return 0

    def is_closing(self):
        return self.closing

    # ---- writing ------------------------------------------------------------

    def write(self, data):
        cdef Py_ssize_t n
        if type(data) is not bytes:
            data = _data_arg(data)
        if self.eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self.empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        n = len(data)
        if n == 0:
            return
        if self.conn_lost:
            self._write_after_lost()
            return
        if not self.wbuf and (self.direct_send or n >= DIRECT_SEND_MIN) and not self._zc_for(n):
            data = self._send_now(data)
            if data is None:
                return
            n = len(data)
        self.wbuf.append(data)
        self.wsize += n
        if not self._send_busy():
            self._start_send()
        if self.wsize > self.high_water and not self.protocol_paused:
            self._pause_protocol()

    cdef inline bint _send_busy(self):
        # One send in flight: the gathered SEND/SENDMSG, or a SEND_ZC before
        # its first CQE (its notification does not hold the next send up).
        return self.zc_busy or (self.sop is not None and self.sop.state != OP_IDLE)

    cdef inline bint _zc_for(self, Py_ssize_t n):
        return self.zc_ok and _stream_zc_threshold > 0 and n >= _stream_zc_threshold

    cdef object _send_now(self, bytes data):
        """Send what the kernel takes now; return the rest, or None when
        nothing is left to queue (all sent, or the transport failed)."""
        cdef Py_ssize_t n = len(data)
        cdef ssize_t k = _send_now(self.fd, PyBytes_AS_STRING(data), n, NULL, 0)
        if k == n:
            return None
        if k > 0:
            return data[k:]
        if k == -errno_EAGAIN:
            return data
        self.fatal_error(_os_error(<int>-k), 'Fatal write error on socket transport')
        return None

    def writelines(self, list_of_data):
        # One gathered send for all of them (SENDMSG with an iovec each).
        for data in list_of_data:
            if self.conn_lost or self.eof:
                self.write(data)
                continue
            if type(data) is not bytes:
                data = _data_arg(data)
            if len(data):
                self.wbuf.append(data)
                self.wsize += len(data)
        if self.wbuf and not self.conn_lost and not self._send_busy():
            self._start_send()
        if self.wsize > self.high_water and not self.protocol_paused:
            self._pause_protocol()

    cdef int _start_send(self) except -1:
        cdef StreamSendOp op = self.sop
        cdef Py_ssize_t i, n = min(len(self.wbuf), IOV_BATCH)
        cdef bytes chunk = <bytes>self.wbuf[0]
        if self._zc_for(len(chunk) - self.woff):
            return _stream_zc_start(self, chunk, self.woff)
        if op is None:
            op = self.sop = StreamSendOp.__new__(StreamSendOp)
            op.core = self
            op.loop = self.loop
            op.fd = self.fd
        op.nbytes = 0
        for i in range(n):
            chunk = <bytes>self.wbuf[i]
            if i > 0 and self._zc_for(len(chunk)):
                n = i           # goes next, alone, with SEND_ZC
                break
            if i == 0:
                op.iov[0].iov_base = PyBytes_AS_STRING(chunk) + self.woff
                op.iov[0].iov_len = len(chunk) - self.woff
            else:
                op.iov[i].iov_base = PyBytes_AS_STRING(chunk)
                op.iov[i].iov_len = len(chunk)
            op.nbytes += op.iov[i].iov_len
        op.chunks = self.wbuf[:n]
        op.niov = <int>n
        self.loop._driver.start(op)
        return 0

    cdef int on_sent_in_context(self, int res) except -1:
        cdef object ctx = self._enter()
        try:
            self.on_sent(res)
        finally:
            self._leave(ctx)
        return 0

    cdef int on_sent(self, int res) except -1:
        cdef Py_ssize_t left, clen
        cdef list wbuf = self.wbuf
        if res < 0:
            if self.conn_lost:
                return 0
            if res == -errno_ECANCELED:
                return 0
            self.fatal_error(_os_error(-res), 'Fatal write error on socket transport')
            return 0
        if self.conn_lost:
            return 0
        left = res
        self.wsize -= res
        while left > 0 and wbuf:
            clen = len(<bytes>wbuf[0]) - self.woff
            if left >= clen:
                left -= clen
                self.woff = 0
                del wbuf[0]
            else:
                self.woff += left
                left = 0
        if self.protocol_paused and self.wsize <= self.low_water:
            # May write(), which starts the next send itself.
            self._resume_protocol()
        if self.wbuf:
            if not self._send_busy() and not self.conn_lost:
                self._start_send()
            return 0
        if self.empty_waiter is not None and not self.empty_waiter.done():
            self.empty_waiter.set_result(None)
        if self.closing:
            # At once, as asyncio's _write_send does when the buffer drains
            # on a closing transport (no call_soon hop: a connection closed
            # with a write queued is gone as soon as asyncio's would be).
            self.conn_lost += 1
            self.call_connection_lost(None)
        elif self.eof:
            try:
                self.sock.shutdown(socket_mod.SHUT_WR)
            except OSError:
                pass
        return 0

    def write_eof(self):
        if self.closing or self.eof:
            return
        self.eof = True
        if not self.wbuf:
            self.sock.shutdown(socket_mod.SHUT_WR)

    def make_empty_waiter(self):
        if self.empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self.empty_waiter = self.loop._new_future()
        if not self.wbuf:
            self.empty_waiter.set_result(None)
        return self.empty_waiter

    def reset_empty_waiter(self):
        self.empty_waiter = None

    # ---- closing ------------------------------------------------------------

    def close(self):
        if self.closing:
            return
        self.closing = True
        self._stop_recv()
        if not self.wbuf:
            self.conn_lost += 1
            self.loop._call_soon_c(self.call_connection_lost, (None,), None)

    def abort(self):
        self.force_close(None)

    cdef int _stop_recv(self) except -1:
        if self.rop is not None and self.rop.state == OP_INFLIGHT:
            self.loop._driver.cancel(self.rop)
        return 0

    def force_close(self, exc):
        if self.conn_lost:
            return
        if self.wbuf:
            self.wbuf = []
            self.woff = 0
            self.wsize = 0
            if self.sop is not None and self.sop.state == OP_INFLIGHT:
                self.loop._driver.cancel(self.sop)
            if self.zop is not None and self.zop.state == OP_INFLIGHT:
                # Before its first CQE; after it only the notification is
                # left, which cancel cannot hurry (the op keeps the chunk).
                self.loop._driver.cancel(self.zop)
        if not self.closing:
            self.closing = True
            self._stop_recv()
        self.conn_lost += 1
        self.loop._call_soon_c(self.call_connection_lost, (exc,), None)

    def call_connection_lost(self, exc):
        if self.empty_waiter is not None and not self.empty_waiter.done():
            if exc is None:
                self.empty_waiter.set_result(None)
            else:
                self.empty_waiter.set_exception(exc)
        self.disown()
        try:
            self.transport._connection_lost(exc)
        finally:
            self._unbind()
            self.data_received = self.get_buffer = self.buffer_updated = None
            self.srp = None
            self.tls = None


from asyncio import BufferedProtocol as _BufferedProtocol
from asyncio import StreamReaderProtocol as _StreamReaderProtocol
from asyncio import StreamReader as _StreamReader
cdef bint _STREAM_READER_FAST = _compat.STREAM_READER_FAST
from cpython.bytearray cimport PyByteArray_Resize, PyByteArray_AS_STRING, PyByteArray_GET_SIZE


cdef int _feed_reader(object reader, char *ptr, Py_ssize_t n) except -1:
    # asyncio.StreamReader.feed_data (Lib/asyncio/streams.py, 3.8-3.14) and
    # its _wakeup_waiter, for the exact class: the bytes go from the kernel
    # buffer into the reader's bytearray, with no bytes object in between
    # and no Python frame.
    cdef object buf
    cdef Py_ssize_t old
    if reader._eof or n == 0:
        return reader.feed_data(PyBytes_FromStringAndSize(ptr, n)) or 0
    buf = reader._buffer
    if type(buf) is not bytearray:
        return reader.feed_data(PyBytes_FromStringAndSize(ptr, n)) or 0
    old = PyByteArray_GET_SIZE(buf)
    PyByteArray_Resize(buf, old + n)   # BufferError while exported, as extend()
    memcpy(PyByteArray_AS_STRING(buf) + old, ptr, n)
    waiter = reader._waiter
    if waiter is not None:
        reader._waiter = None
        if not waiter.cancelled():
            waiter.set_result(None)
    if (reader._transport is not None and not reader._paused and
            old + n > 2 * reader._limit):
        try:
            reader._transport.pause_reading()
        except NotImplementedError:
            reader._transport = None
        else:
            reader._paused = True
    return 0


# Multishot ACCEPT for a listening socket: one SQE serves every incoming
# connection until cancelled (or the kernel ends it, e.g. on EMFILE).
# `direct` (the runtime API, Driver.fixed_files): each connection goes into a
# free slot of the direct-descriptor table (IORING_FILE_INDEX_ALLOC) and
# on_accept gets the slot.  A full table is -ENFILE: the kernel has already
# accepted that connection and closed it (io_fixed_fd_install fput()s it,
# io_uring/net.c) and the multishot ends; on_full is told and the accept
# re-armed at once -- one CQE per connection refused, never a spin.
@cython.final
cdef class ServeAcceptOp(Op):
    cdef object on_accept           # callable(fd) on the loop
    cdef object on_error            # callable(exc) when the multishot ends in error
    cdef object context             # where serving started (asyncio: add_reader's copy)
    cdef object on_full             # callable() when the direct table was full
    cdef bint in_context
    cdef bint direct                # into the direct-descriptor table
    cdef public bint active

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_ACCEPT
        sqe.fd = self.fd
        sqe.ioprio = IORING_ACCEPT_MULTISHOT
        if self.direct:
            # A slot is no fd: SOCK_CLOEXEC is refused with EINVAL
            # (io_accept_prep, io_uring/net.c).
            sqe.accept_flags = SOCK_NONBLOCK
            sqe.file_index = IORING_FILE_INDEX_ALLOC
        else:
            sqe.accept_flags = SOCK_NONBLOCK | SOCK_CLOEXEC
        return 0

    cdef int attempt(self) except? -1:
        cdef int r = accept4(self.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
        return r if r >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef object ctx = self.context
        if self.in_context:
            return self._complete(res, flags)
        # The server's context: the tasks on_accept creates copy it, so the
        # protocol factory and the new transport see the create_server
        # caller's values.
        PyContext_Enter(ctx)
        self.in_context = True
        try:
            self._complete(res, flags)
        finally:
            self.in_context = False
            PyContext_Exit(ctx)
        return 0

    cdef int _complete(self, int res, uint32_t flags) except -1:
        if res >= 0:
            if not self.active:
                if self.direct:
                    _fixed_close(self.loop, res)
                else:
                    close(res)
            else:
                self.on_accept(res)
        elif res == -errno_ENFILE and self.direct and self.active:
            self.on_full()
        if not (flags & IORING_CQE_F_MORE) and self.active:
            if (res >= 0 or res == -errno_EAGAIN or res == -errno_EINTR or res == -errno_ECONNABORTED
                    or (res == -errno_ENFILE and self.direct)):
                self.loop._driver.start(self)
            elif res == -errno_ECANCELED:
                self.active = False
            else:
                self.active = False
                self.on_error(_os_error(-res))
        return 0

    def stop(self):
        self.active = False
        if self.state == OP_INFLIGHT:
            self.loop._driver.cancel(self)


def _serve_accept(LoopCore loop, sock, on_accept, on_error, bint direct=False, on_full=None):
    cdef ServeAcceptOp op = ServeAcceptOp.__new__(ServeAcceptOp)
    if direct and (loop._driver is None or loop._driver.fixed_files == 0 or on_full is None):
        raise ValueError("direct accept needs the loop's direct-descriptor table and on_full")
    op.loop = loop
    op.fd = sock.fileno()
    op.direct = direct
    op.on_full = on_full
    op.on_accept = on_accept
    op.on_error = on_error
    op.context = PyContext_CopyCurrent()
    op.active = True
    loop._driver.start(op)
    return op
