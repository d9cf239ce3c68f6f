# Datagram transports (UDP, Unix datagram): the compiled half.
#
# DgramCore does the per-datagram work; ringline.aio._datagram.DatagramTransport
# (a real asyncio.DatagramTransport) owns one and binds sendto() to the
# core's method, as the stream transport binds write(): no Python frame per
# datagram on either path.
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
# the endpoint's own buffer, then multishot again.  The poll backend reads
# up to POLL_RECV_BATCH datagrams per readiness, then waits for the next.
#
# Peer addresses: a datagram's sockaddr is turned into the address tuple
# once per peer; a small 2-way table indexed by port keeps (sockaddr, tuple), so a
# peer that sends again gets the same tuple object, and sendto() back to
# that tuple finds its sockaddr by identity without parsing it.  Tuples of
# str and int are immutable, so sharing them is safe.
#
# Send: sendto() with nothing queued calls sendto(2) at once, as asyncio's
# selector transport does; only EAGAIN queues the datagram.  Queued ones go
# out in order, one SENDMSG op at a time; when one completes, the rest are
# tried directly again until the socket says EAGAIN.

cdef extern from *:
    """
    struct rl_recvmsg_out { uint32_t namelen, controllen, payloadlen, flags; };
    union rl_addr_u { struct sockaddr sa; struct sockaddr_in sin; struct sockaddr_in6 sin6; };
    typedef struct {
        PyObject *obj;          /* address tuple (owned), NULL if empty */
        socklen_t len;
        union rl_addr_u u;
    } rl_addr_ent;
    """
    struct rl_recvmsg_out:
        uint32_t namelen
        uint32_t controllen
        uint32_t payloadlen
        uint32_t flags
    union rl_addr_u:
        sockaddr sa
        sockaddr_in sin
        sockaddr_in6 sin6
    ctypedef struct rl_addr_ent:
        PyObject *obj
        socklen_t len
        rl_addr_u u

from libc.string cimport memcmp
from cpython.tuple cimport PyTuple_GET_SIZE, PyTuple_GET_ITEM
from cpython.long cimport PyLong_AsLong
from cpython.exc cimport PyErr_Occurred, PyErr_Clear

cdef enum:
    DGRAM_MAX = 65536
    DGRAM_BUF = 65536 + 16 + 128    # payload + recvmsg_out + sockaddr_storage
    DGRAM_RING_ENTRIES = 128
    DGRAM_BGID = 1
    ADDR_SLOTS = 256                # peers remembered per endpoint (power of two)
    POLL_RECV_BATCH = 32            # poll backend: datagrams read per readiness


cdef int _recvmsg_out_parse(char *buf, Py_ssize_t buflen, Py_ssize_t res,
                            socklen_t name_space, socklen_t ctrl_space,
                            char **payload, Py_ssize_t *plen, sockaddr **name,
                            socklen_t *namelen, uint32_t *flags) except -1:
    """The parts of one multishot RECVMSG buffer: buf (buflen bytes) starts
    with struct io_uring_recvmsg_out, then name_space bytes for the peer's
    address and ctrl_space for control data (the msghdr's msg_namelen and
    msg_controllen), then the payload; res is the CQE's result: the bytes
    written, all of that.  namelen and payloadlen are the real lengths, so
    a truncated name or datagram reports more than is there: both are cut
    to what is.  Reads nothing outside buf[:min(res, buflen)]; ValueError
    for a layout no kernel writes."""
    cdef rl_recvmsg_out *out = <rl_recvmsg_out*>buf
    cdef Py_ssize_t end = min(res, buflen)
    cdef Py_ssize_t start = <Py_ssize_t>sizeof(rl_recvmsg_out) + name_space + ctrl_space
    if end < start:
        raise ValueError(f"recvmsg buffer of {end} bytes is shorter than its header, "
                         f"name and control space ({start})")
    name[0] = <sockaddr*>(buf + sizeof(rl_recvmsg_out))
    namelen[0] = min(out.namelen, name_space)
    payload[0] = buf + start
    plen[0] = min(<Py_ssize_t>out.payloadlen, end - start, <Py_ssize_t>DGRAM_MAX)
    flags[0] = out.flags
    return 0


@cython.final
cdef class DgramRecvOp(Op):
    cdef DgramCore core
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
        cdef Driver d = self.loop._driver
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

    cdef int _recv_now(self):
        cdef ssize_t n
        self._single_msg()
        while True:
            n = recvmsg(self.fd, <msghdr_t*>&self.msg, MSG_DONTWAIT)
            if n >= 0:
                return <int>n
            if errno != errno_EINTR:
                return -errno

    cdef int attempt(self) except? -1:
        self.single = True
        self.own_buf()
        return self._recv_now()

    cdef int poll_events(self):
        return POLLIN

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef DgramCore core = self.core
        # The protocol's context, as asyncio's reader callback has it.
        cdef object ctx = core._enter()
        try:
            self._complete(res, flags)
        finally:
            core._leave(ctx)
        return 0

    cdef inline int _complete(self, int res, uint32_t flags) except -1:
        cdef Driver d
        cdef char *buf
        cdef char *payload
        cdef Py_ssize_t plen
        cdef sockaddr *name
        cdef socklen_t namelen
        cdef uint32_t mflags
        cdef unsigned bid
        cdef int i
        cdef bint more = (flags & IORING_CQE_F_MORE) != 0
        cdef bint single = self.single
        if not more:
            self.single = False
        if res >= 0 and (flags & IORING_CQE_F_BUFFER):
            d = self.loop._driver
            bid = flags >> IORING_CQE_BUFFER_SHIFT
            buf = rl_pbuf_addr(d.dpbuf, bid)
            try:
                _recvmsg_out_parse(buf, DGRAM_BUF, res, sizeof(sockaddr_storage), 0,
                                   &payload, &plen, &name, &namelen, &mflags)
                self.core.on_datagram(payload, plen, name, namelen)
            finally:
                rl_pbuf_recycle(d.dpbuf, bid)
        elif res >= 0 and single:
            if res > 0:
                RL_KERNEL_WROTE(self.own, res)
            self.core.on_datagram(self.own, res, <sockaddr*>&self.addr, self.msg.msg_namelen)
            d = self.loop._driver
            if d is not None and d.batched_reads:
                # Readiness said there is data: take what is queued now,
                # in this iteration, instead of one datagram per iteration.
                i = 1
                # (Not if a callback restarted us: resume_reading() in
                # datagram_received; our buffer is the kernel's/driver's now.)
                while self.active and self.state == OP_IDLE and i < POLL_RECV_BATCH:
                    res = self._recv_now()
                    if res < 0:
                        if res == -errno_EAGAIN:
                            self.wait_first = True      # drained: wait for readiness
                        else:
                            self.core.on_recv_error(res)
                        break
                    self.core.on_datagram(self.own, res, <sockaddr*>&self.addr, self.msg.msg_namelen)
                    i += 1
        elif res < 0 and res != -errno_ECANCELED and res != -errno_ENOBUFS:
            if res == -errno_EINVAL and not single:
                # No multishot RECVMSG here: single-shot from now on.
                self.single = True
            elif self.active:
                self.core.on_recv_error(res)
        if res == -errno_ENOBUFS:
            self.single = True
        if not more and self.active and self.state == OP_IDLE:
            self.loop._driver.start(self)
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


# One queued datagram per SENDMSG; the core keeps the queue.
@cython.final
cdef class DgramSendOp(Op):
    cdef DgramCore core
    cdef msghdr msg
    cdef iovec iov
    cdef sockaddr_storage addr
    cdef object data

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

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef DgramCore core = self.core
        cdef object ctx
        self.data = None
        # error_received() and resume_writing() in the protocol's context.
        ctx = core._enter()
        try:
            core.on_sent(res)
        finally:
            core._leave(ctx)
        return 0


# The fields and methods every transport core shares (protocol, flow
# control, fatal errors, paused data, context) are TransportCore's (common.pxi).
@cython.final
cdef class DgramCore(TransportCore):
    cdef int family
    cdef public object address       # remote_addr of a connected endpoint, else None
    cdef bint peer_connected         # socket has a peer: send() without an address
    cdef object datagram_received    # bound method, looked up once per protocol
    # (pending holds (data, addr) pairs, in a deque.)
    cdef DgramRecvOp rop
    cdef DgramSendOp sop
    cdef object queue                # deque of (bytes, addr) waiting to be sent
    cdef public bint direct          # try sendto(2) before queueing
    cdef public object sent_hook     # called after each queued datagram is done
    cdef rl_addr_ent *peers          # ADDR_SLOTS entries, allocated on first use
    cdef sockaddr_storage dst
    cdef socklen_t dstlen

    def __cinit__(self):
        self.queue = collections.deque()
        self.direct = True
        self.peers = NULL

    def __dealloc__(self):
        self._drop_peers()

    cdef void _drop_peers(self):
        cdef Py_ssize_t i
        cdef rl_addr_ent *peers = self.peers
        if peers == NULL:
            return
        self.peers = NULL
        for i in range(ADDR_SLOTS):
            Py_XDECREF(peers[i].obj)
        PyMem_Free(peers)

    def setup(self, LoopCore loop, transport, sock, protocol, address, bint peer_connected):
        self._bind(loop, transport, sock)
        self.family = sock.family
        self.address = address
        self.peer_connected = peer_connected
        self.set_protocol(protocol)
        self.rop = DgramRecvOp.__new__(DgramRecvOp)
        self.rop.core = self
        self.rop.loop = loop
        self.rop.fd = self.fd
        self.sop = DgramSendOp.__new__(DgramSendOp)
        self.sop.core = self
        self.sop.loop = loop
        self.sop.fd = self.fd

    def set_protocol(self, protocol):
        self.protocol = protocol
        self.datagram_received = protocol.datagram_received

    # ---- peer addresses -------------------------------------------------------

    cdef object _peer(self, sockaddr *sa, socklen_t salen):
        """The address tuple of sa, the same object for a peer seen before."""
        cdef rl_addr_ent *e
        cdef rl_addr_ent *alt
        cdef object addr
        if not ((salen == sizeof(sockaddr_in) and sa.sa_family == AF_INET) or
                (salen == sizeof(sockaddr_in6) and sa.sa_family == AF_INET6)):
            return _decode_sockaddr(sa, salen, self.sock)
        if self.peers == NULL:
            self.peers = <rl_addr_ent*>PyMem_Malloc(ADDR_SLOTS * sizeof(rl_addr_ent))
            if self.peers == NULL:
                raise MemoryError()
            memset(self.peers, 0, ADDR_SLOTS * sizeof(rl_addr_ent))
        # Two places per port (2-way), so two peers whose ports collide
        # do not evict each other on every datagram.
        e = &self.peers[ntohs((<sockaddr_in*>sa).sin_port) & (ADDR_SLOTS - 1)]
        alt = &self.peers[(ntohs((<sockaddr_in*>sa).sin_port) + ADDR_SLOTS // 2) & (ADDR_SLOTS - 1)]
        if e.obj != NULL and e.len == salen and memcmp(&e.u, sa, salen) == 0:
            return <object>e.obj
        if alt.obj != NULL and alt.len == salen and memcmp(&alt.u, sa, salen) == 0:
            return <object>alt.obj
        addr = _decode_sockaddr(sa, salen, self.sock)
        if e.obj != NULL:
            # The newest peer takes the first place, the previous one the
            # second; whoever held that is forgotten.
            Py_XDECREF(alt.obj)
            alt[0] = e[0]
        Py_INCREF(addr)
        e.obj = <PyObject*>addr
        e.len = salen
        memcpy(&e.u, sa, salen)
        return addr

    cdef sockaddr *_known(self, object addr, socklen_t *salen):
        """The sockaddr of an address tuple _peer handed out, else NULL."""
        cdef rl_addr_ent *e
        cdef long port
        cdef object p
        if self.peers == NULL or type(addr) is not tuple or PyTuple_GET_SIZE(addr) < 2:
            return NULL
        p = <object>PyTuple_GET_ITEM(addr, 1)
        if type(p) is not int:
            return NULL
        port = PyLong_AsLong(p)
        if port == -1 and PyErr_Occurred():
            PyErr_Clear()
            return NULL
        e = &self.peers[port & (ADDR_SLOTS - 1)]
        if e.obj != <PyObject*>addr:
            e = &self.peers[(port + ADDR_SLOTS // 2) & (ADDR_SLOTS - 1)]
            if e.obj != <PyObject*>addr:
                return NULL
        salen[0] = e.len
        return &e.u.sa

    # ---- receiving ------------------------------------------------------------

    cdef int on_datagram(self, char *ptr, Py_ssize_t n, sockaddr *sa, socklen_t salen) except -1:
        if self.closing:
            return 0
        data = PyBytes_FromStringAndSize(ptr, n)
        addr = self._peer(sa, salen)
        if self.paused or self.pending:
            # Taken from the socket after pause_reading() asked the kernel
            # to stop: kept, in order, for resume_reading().
            if self.pending is None:
                self.pending = collections.deque()
            self.pending.append((data, addr))
            return 0
        self._deliver(data, addr)
        return 0

    cdef bint _deliver(self, data, addr) except -1:
        """datagram_received; False when it raised (the transport is then
        closed by fatal_error)."""
        try:
            self.datagram_received(data, addr)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal read error on datagram transport')
            return False
        return True

    cdef int _error_received(self, object exc, str message) except -1:
        try:
            self.protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as e:
            self.fatal_error(e, message)
        return 0

    cdef int on_recv_error(self, int res) except -1:
        return self._error_received(_os_error(-res), 'Fatal read error on datagram transport')

    def start_reading(self):
        # Called (via call_soon) after connection_made, as asyncio does.
        if not self.closing and not self.paused:
            self.rop.start()

    def pause_reading(self):
        if self.closing or self.paused:
            return
        self.paused = True
        self.rop.stop()
        self._debug_reading('pauses')

    def resume_reading(self):
        if self.closing or not self.paused:
            return
        self.paused = False
        if self.pending:
            self.loop._call_soon_c(self._deliver_pending, (), None)
        else:
            self.rop.start()
        self._debug_reading('resumes')

    cdef int _deliver_pending_c(self) except -1:
        while self.pending and not self.paused and not self.closing:
            data, addr = self.pending.popleft()
            if not self._deliver(data, addr):
                return 0
        if not self.paused and not self.closing:
            self.rop.start()
        return 0

    # ---- sending --------------------------------------------------------------

    def sendto(self, data, addr=None):
        cdef Py_ssize_t n
        cdef ssize_t r
        cdef int err, ok
        cdef sockaddr *sa = NULL
        cdef socklen_t salen = 0
        if type(data) is not bytes:
            data = _data_arg(data)
        n = len(<bytes>data)
        if n == 0:
            return
        if self.address:
            if addr is not None and addr is not self.address and addr != self.address:
                raise ValueError(f'Invalid address: must be None or {self.address}')
            addr = None
        elif self.peer_connected:
            addr = None         # a connected socket: send(), as asyncio does
        if self.conn_lost and self.address:
            self._write_after_lost()
            return
        if self.sock is None:
            return
        if self.queue or self.sop.state != OP_IDLE or not self.direct:
            if not self.conn_lost:
                self._enqueue(<bytes>data, addr)
            return
        # Nothing queued: straight to the socket.
        if addr is not None:
            sa = self._known(addr, &salen)
            if sa == NULL:
                try:
                    ok = _encode_sockaddr(self.family, addr, &self.dst, &self.dstlen)
                except OSError as exc:
                    self.protocol.error_received(exc)
                    return
                if not ok:
                    self._send_fallback(<bytes>data, addr)
                    return
                sa = <sockaddr*>&self.dst
                salen = self.dstlen
        r = _send_now(self.fd, PyBytes_AS_STRING(data), n, sa, salen)
        if r >= 0:
            return
        err = <int>-r
        if err == errno_EAGAIN:
            if not self.conn_lost:
                self._enqueue(<bytes>data, addr)
            return
        self.protocol.error_received(_os_error(err))

    cdef int _enqueue(self, bytes data, object addr) except -1:
        self.queue.append((data, addr))
        self.wsize += len(data)
        if self.sop.state == OP_IDLE:
            self._send_next()
        if self.wsize > self.high_water and not self.protocol_paused:
            self._pause_protocol()
        return 0

    cdef int _send_fallback(self, bytes data, object addr) except -1:
        # An address only the socket module understands (a host name or an
        # exotic family): send it there, synchronously.
        try:
            self.sock.sendto(data, addr)
        except OSError as exc:
            self.protocol.error_received(exc)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self.fatal_error(exc, 'Fatal write error on datagram transport')
        return 0

    cdef int _send_next(self) except -1:
        """Send what is queued, in order, until the socket would block; then
        leave the head to a SENDMSG op."""
        cdef DgramSendOp op = self.sop
        cdef bytes data
        cdef object addr
        cdef socklen_t salen
        cdef sockaddr *sa
        cdef ssize_t r
        cdef int err, ok
        while self.queue and op.state == OP_IDLE and not self.conn_lost:
            data, addr = self.queue[0]
            salen = 0
            sa = NULL
            if addr is not None:
                sa = self._known(addr, &salen)
                if sa == NULL:
                    try:
                        ok = _encode_sockaddr(self.family, addr, &op.addr, &salen)
                    except OSError as exc:
                        self._pop_head()
                        self._report(exc)
                        continue
                    if not ok:
                        self._pop_head()
                        self._send_fallback(data, addr)
                        continue
                else:
                    memcpy(&op.addr, sa, salen)
            err = errno_EAGAIN
            if self.direct:
                r = _send_now(self.fd, PyBytes_AS_STRING(data), len(data),
                              <sockaddr*>&op.addr if salen else NULL, salen)
                err = 0 if r >= 0 else <int>-r
            if err == 0 or err != errno_EAGAIN:
                self._pop_head()
                if err:
                    self._report(_os_error(err))
                continue
            op.data = data
            op.iov.iov_base = PyBytes_AS_STRING(data)
            op.iov.iov_len = len(data)
            memset(&op.msg, 0, sizeof(msghdr))
            op.msg.msg_name = &op.addr if salen else NULL
            op.msg.msg_namelen = salen
            op.msg.msg_iov = &op.iov
            op.msg.msg_iovlen = 1
            self.loop._driver.start(op)
            return 0
        self._after_send()
        return 0

    cdef int _pop_head(self) except -1:
        data, _ = self.queue.popleft()
        self.wsize -= len(<bytes>data)
        return 0

    cdef int _report(self, object exc) except -1:
        if self.conn_lost:
            return 0
        return self._error_received(exc, 'Fatal write error on datagram transport')

    cdef int on_sent(self, int res) except -1:
        if not self.queue:
            return 0            # aborted meanwhile
        self._pop_head()
        if res < 0 and res != -errno_ECANCELED:
            self._report(_os_error(-res))
        if self.sent_hook is not None:
            self.sent_hook()
        if self.sop.state == OP_IDLE:
            self._send_next()
        return 0

    cdef int _after_send(self) except -1:
        # The queue drained (or the op took its head): flow control, close.
        if self.protocol_paused and self.wsize <= self.low_water:
            self._resume_protocol()
        if (not self.queue and self.sop.state == OP_IDLE and self.closing
                and not self.conn_lost):
            self.conn_lost += 1
            self.loop._call_soon_c(self.call_connection_lost, (None,), None)
        return 0

    @property
    def queued(self):
        """Datagrams waiting to be sent (including one in flight)."""
        return len(self.queue)

    # ---- closing --------------------------------------------------------------

    def disown(self):
        # Datagram sockets are not owned fds (ONESHOT on the poll backend):
        # nothing to give back before the close.
        pass

    def close(self):
        self.rop.stop()
        if self.closing:
            return
        self.closing = True
        if not self.queue and self.sop.state == OP_IDLE:
            self.conn_lost += 1
            self.loop._call_soon_c(self.call_connection_lost, (None,), None)

    def force_close(self, exc):
        self.rop.stop()
        if self.conn_lost:
            return
        # A SENDMSG in flight is cancelled (on the poll backend it would
        # otherwise wait in the fd's queue and fire on whatever socket
        # reuses the number); its completion finds the queue empty.
        if self.sop is not None and self.sop.state == OP_INFLIGHT:
            self.loop._driver.cancel(self.sop)
        self.queue.clear()
        self.wsize = 0
        self.closing = True
        self.conn_lost += 1
        self.loop._call_soon_c(self.call_connection_lost, (exc,), None)

    def call_connection_lost(self, exc):
        try:
            self.transport._connection_lost(exc)
        finally:
            self._unbind()
            self.sock = None
            self.datagram_received = None
            self.sent_hook = None
            self._drop_peers()
