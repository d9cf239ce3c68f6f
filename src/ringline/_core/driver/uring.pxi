# The io_uring driver: one ring per loop (SQ/CQ sizes, the provided-buffer
# ring for stream receives), submission and reaping in one io_uring_enter per
# iteration, cancellation, the opcode probe.  The ABI (structs, raw syscalls)
# is uring.h, declared for Cython in ../uring.pxd.

# Ops whose final completion never came before their ring was torn down.
_leaked_ops = []

# Buffer rings a closed loop could not free (ops still in flight, or
# buffers lent out): kept here, as _leaked_ops keeps the ops, so they stay
# reachable (LeakSanitizer) and are never reused.  Past the array's end a
# ring is simply forgotten.
cdef rl_pbuf_ring _leaked_rings[64]
cdef int _n_leaked_rings = 0


cdef void _keep_leaked_ring(rl_pbuf_ring *pb) noexcept:
    global _n_leaked_rings
    if _n_leaked_rings < 64:
        _leaked_rings[_n_leaked_rings] = pb[0]
        _n_leaked_rings += 1


cdef int _sq_entries_default = 256
cdef int _cq_entries_default = 4096
# The provided-buffer ring each io_uring loop registers for stream receives.
# 64 x 128 KiB (8 MiB): measured on the 100 KiB x 64 echo, large buffers cut
# the CQEs per message from ~10 to ~2 (44k vs 32k req/s), and 1 KiB echo is
# unchanged; more entries of that size measured slower here, not faster.
cdef unsigned _pbuf_entries = 64
cdef unsigned _pbuf_size = 131072


cdef object _enter_error(int err):
    if err == errno_EEXIST:
        # IORING_SETUP_SINGLE_ISSUER (uring.h, rl_ring_init): the ring is the
        # first entering thread's.
        return RuntimeError(
            "this io_uring event loop already ran on another thread, and the kernel "
            "ties its ring to that thread (IORING_SETUP_SINGLE_ISSUER); run a loop "
            "on one thread, or use the 'poll' backend")
    return OSError(err, "io_uring_enter: " + os.strerror(err))


cdef bint _use_registered_ring = True


def set_registered_ring(bint enabled):
    """Whether io_uring loops register their ring fd while they run
    (IORING_REGISTER_RING_FDS, 5.18+).  False: every io_uring_enter takes the
    plain fd -- what a kernel before 5.18 gets (used by the tests and by
    benchmarks/micro.py to measure the difference).  Returns the old value."""
    global _use_registered_ring
    old = _use_registered_ring
    _use_registered_ring = enabled
    return old


cdef bint _use_direct_descriptors = True


def set_direct_descriptors(bint enabled):
    """Whether io_uring loops may register a direct-descriptor table (the
    runtime API's Config.fixed_files).  False: every connection keeps a
    real fd -- what a kernel without the table or FIXED_FD_INSTALL gets
    (used by the tests).  Returns the old value."""
    global _use_direct_descriptors
    old = _use_direct_descriptors
    _use_direct_descriptors = enabled
    return old


cdef bint _use_waitid = True


def set_waitid(bint enabled):
    """Whether io_uring loops reap subprocess exits in the ring
    (IORING_OP_WAITID, 6.7+; loop/waitid.pxi).  False: the pidfd is polled
    (POLL_ADD) and reaped with waitid(2) -- what a kernel before 6.7 and
    the poll backend get (used by the tests and benchmarks/spawn_bench.py).
    Returns the old value."""
    global _use_waitid
    old = _use_waitid
    _use_waitid = enabled
    return old


# Completions handled between mid-batch submissions (0: none).  A long CQE
# batch otherwise holds every SQE its callbacks queue -- a reply's SEND --
# until the batch ends and the next io_uring_enter; with an interval, what
# is queued goes to the kernel every that many completions, at the cost of
# an extra enter each time.
cdef unsigned _flush_interval = 0


def set_flush_interval(unsigned n):
    """Submit queued SQEs every n completions of a long batch (0 = only at
    the iteration's io_uring_enter), for io_uring loops; returns the old
    value.  The runtime API's Config.flush_interval sets it per worker."""
    global _flush_interval
    old = _flush_interval
    _flush_interval = n
    return old


# Incremental consumption of the stream buffer ring (IOU_PBUF_RING_INC,
# 6.12; uring.h explains it).  The kernel's refusal falls back by itself.
cdef bint _recv_incremental = True


def set_recv_incremental(bint enabled):
    """Whether io_uring loops created from now on ask for incremental
    consumption of their stream buffer ring (IOU_PBUF_RING_INC, 6.12+).
    False: each receive takes a whole buffer -- what a kernel before 6.12
    gets (used by the tests and the benchmarks).  Returns the old value."""
    global _recv_incremental
    old = _recv_incremental
    _recv_incremental = enabled
    return old


# SQPOLL, off unless asked for (set_sqpoll; the runtime's Config.sqpoll):
# new rings get a kernel thread that takes SQEs as the tail is published.
# _sqpoll_idle_ms < 0: off.  _sqpoll_kernel False: act as a kernel that
# refuses it (the tests).
cdef long long _sqpoll_idle_ms = -1
cdef int _sqpoll_cpu = -1
cdef bint _sqpoll_kernel = True
# The kernel's sq_thread_idle is a u32 of milliseconds.
cdef long long _SQPOLL_IDLE_MAX = 0xFFFFFFFF


def set_sqpoll(idle_ms, cpu=-1):
    """Give io_uring loops created from now on an SQPOLL ring
    (IORING_SETUP_SQPOLL): a kernel thread submits what the loop queues,
    spinning idle_ms milliseconds after the last SQE before it sleeps (0:
    the kernel's default, one second), pinned to CPU `cpu` unless -1
    (IORING_SETUP_SQ_AFF).  idle_ms=None turns it off (the default).  Where
    the kernel refuses it the loop gets a normal ring, logs a warning, and
    loop.stats()['sqpoll_refused'] says why.  The runtime API's Config.sqpoll
    sets it per worker.  Returns the old (idle_ms or None, cpu)."""
    global _sqpoll_idle_ms, _sqpoll_cpu
    if idle_ms is not None:
        if isinstance(idle_ms, bool) or not isinstance(idle_ms, int):
            raise TypeError(f"sqpoll idle_ms must be an int or None, got {type(idle_ms).__name__}")
        if not 0 <= idle_ms <= _SQPOLL_IDLE_MAX:
            raise ValueError(f"sqpoll idle_ms must be in 0..{_SQPOLL_IDLE_MAX}, got {idle_ms}")
    if isinstance(cpu, bool) or not isinstance(cpu, int):
        raise TypeError(f"sqpoll cpu must be an int, got {type(cpu).__name__}")
    if not -1 <= cpu <= 0x7FFFFFFF:
        raise ValueError(f"sqpoll cpu must be -1 (not pinned) or a CPU number, got {cpu}")
    old = (None if _sqpoll_idle_ms < 0 else _sqpoll_idle_ms, _sqpoll_cpu)
    _sqpoll_idle_ms = -1 if idle_ms is None else idle_ms
    _sqpoll_cpu = cpu
    return old


def set_sqpoll_kernel(bint available):
    """False: rings asked for SQPOLL act as on a kernel that refuses it
    (EPERM, as before 5.13 for an unprivileged user) and fall back to a
    normal ring -- used by the tests.  Returns the old value."""
    global _sqpoll_kernel
    old = _sqpoll_kernel
    _sqpoll_kernel = available
    return old


cdef str _sqpoll_refusal(int err, bint simulated):
    if simulated:
        return "SQPOLL refused (simulated: core.set_sqpoll_kernel(False))"
    why = {
        errno_EPERM: " (before 5.13 SQPOLL needs privileges)",
        errno_EINVAL: " (a flag this kernel refuses, or sq_thread_cpu not an online CPU "
                      "of this cpuset)",
    }.get(err, "")
    return f"io_uring_setup refused IORING_SETUP_SQPOLL: {os.strerror(err)}{why}"


# Recv bundles (IORING_RECVSEND_BUNDLE, 6.10; uring.h): off by default --
# measured no faster here (README, the io_uring table).
cdef bint _recv_bundles = False


def set_recv_bundles(bint enabled):
    """Whether io_uring loops created from now on receive in bundles (one
    CQE for several ring buffers), where the kernel has them
    (IORING_FEAT_RECVSEND_BUNDLE).  Returns the old value."""
    global _recv_bundles
    old = _recv_bundles
    _recv_bundles = enabled
    return old


def set_recv_buffers(unsigned entries, unsigned size):
    """Size of the provided-buffer ring of loops created from now on
    (entries: a power of two <= 32768; size: bytes per buffer).  entries=0:
    no ring, every receive a single-shot recv -- what a kernel before 5.19
    gets (used by the tests)."""
    global _pbuf_entries, _pbuf_size
    if entries & (entries - 1) or entries > 32768:
        raise ValueError(f"recv buffer ring entries must be 0 or a power of two in 1..32768, got {entries}")
    if size == 0 or size > (1 << 30):
        raise ValueError(f"recv buffer size must be in 1..2**30, got {size}")
    old = (_pbuf_entries, _pbuf_size)
    _pbuf_entries = entries
    _pbuf_size = size
    return old


@cython.final
cdef class UringDriver(Driver):

    def __cinit__(self, LoopCore loop, unsigned sq_entries=256, unsigned cq_entries=4096):
        cdef int first_err = 0
        cdef int ret
        self.loop = loop
        self.name = "io_uring"
        self.wake_fd = -1
        self.ops = []
        self.sqpoll_req.on = _sqpoll_idle_ms >= 0
        self.sqpoll_req.idle_ms = <unsigned>_sqpoll_idle_ms if _sqpoll_idle_ms >= 0 else 0
        self.sqpoll_req.cpu = _sqpoll_cpu
        self.sqpoll_req.refuse = not _sqpoll_kernel
        self.sqpoll_req.err = 0
        ret = rl_ring_init(&self.ring, sq_entries, cq_entries, 1, &first_err, &self.sqpoll_req)
        if ret < 0:
            raise RingUnavailable(-ret, _ring_refusal_reason(-ret))
        self.ring_open = True
        if self.sqpoll_req.on and self.sqpoll_req.err:
            import logging
            logging.getLogger("ringline").warning(
                "SQPOLL was asked for; this loop has a normal ring: %s", self._sqpoll_refused())
        self.wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        if self.wake_fd < 0:
            err = errno
            rl_ring_exit(&self.ring)
            self.ring_open = False
            raise OSError(err, os.strerror(err))
        self.wake_op = WakeOp.__new__(WakeOp)
        self.wake_op.loop = loop
        self.wake_op.fd = self.wake_fd
        # Provided buffers (5.19+); without them streams use single-shot recv.
        self.pbuf = &self.pbuf_ring
        self.dpbuf = &self.dpbuf_ring
        self.provided_buffers = (_pbuf_entries > 0 and
                                 rl_pbuf_ring_init(&self.ring, &self.pbuf_ring, _pbuf_entries,
                                                   _pbuf_size, 0, _recv_incremental) == 0)
        if self.provided_buffers and _recv_bundles and self.ring.features & RL_FEAT_RECVSEND_BUNDLE:
            self.pbuf_ring.bundle = 1
        # Capabilities (base.pxi): SENDs go in the ring (large writes
        # excepted: stream.pxi DIRECT_SEND_MIN); multishot receives; file
        # ops in the ring; SEND_ZC where the kernel has it.
        self.direct_send = False
        self.batched_reads = False
        self.file_ops_in_ring = True
        self.zero_copy_send = _ring_has_op(RL_OP_SEND_ZC)

    def arm_wakeup(self):
        self.start(self.wake_op)

    cdef str _sqpoll_refused(self):
        if not self.sqpoll_req.on or not self.sqpoll_req.err:
            return None
        return _sqpoll_refusal(self.sqpoll_req.err, self.sqpoll_req.refuse)

    cdef int enter_thread(self) except -1:
        # Registered for as long as the loop runs on this thread: the table
        # is per thread, and the slot must be freed from the same thread
        # (uring.h).  A refusal (old kernel, 16 slots taken) is not an error.
        if not self.ring_open:
            return 0
        rl_ring_enable(&self.ring)      # this thread becomes the submitter
        if _use_registered_ring:
            rl_ring_register_fd(&self.ring)
        return 0

    cdef int leave_thread(self) except -1:
        if self.ring_open:
            rl_ring_unregister_fd(&self.ring)
        return 0

    cdef bint dgram_ring(self) except -1:
        # The datagram buffer ring (8 MiB, touched as used) exists only once an endpoint asks.
        if self.dpbuf_state == 0:
            if rl_pbuf_ring_init(&self.ring, &self.dpbuf_ring, DGRAM_RING_ENTRIES, DGRAM_BUF, DGRAM_BGID, 0) == 0:
                self.dpbuf_state = 1
            else:
                self.dpbuf_state = -1
        return self.dpbuf_state == 1

    cdef int reserve(self, int n) except -1:
        if self.ring_open and self.ring.sq_entries - rl_sq_pending(&self.ring) < <unsigned>n:
            self.flush()
        return 0

    cdef int register_fixed_files(self, unsigned n) except? -10000:
        # Direct descriptors need: the sparse table (REGISTER_FILES2 with
        # RSRC_REGISTER_SPARSE, 5.19), ACCEPT into an allocated slot
        # (FILE_INDEX_ALLOC, 5.19), CLOSE of a slot (5.15), SHUTDOWN (5.11)
        # and FIXED_FD_INSTALL (6.8: a connection's addresses, read through
        # a real fd made for a moment).  The last is the newest, so its
        # opcode stands for the rest; the registration itself says whether
        # the table exists.
        cdef int ret
        if not _use_direct_descriptors:
            return -errno_EOPNOTSUPP
        if not self.ring_open:
            return -errno_EINVAL
        if self.fixed_files:
            return -errno_EBUSY
        if n == 0 or n > RL_MAX_FIXED_FILES:
            return -errno_EINVAL
        if not (_ring_has_op(RL_OP_FIXED_FD_INSTALL) and _ring_has_op(IORING_OP_CLOSE)
                and _ring_has_op(IORING_OP_SHUTDOWN) and _ring_has_op(IORING_OP_ACCEPT)):
            return -errno_EOPNOTSUPP
        ret = rl_register_files_sparse(&self.ring, n)
        if ret == 0:
            self.fixed_files = n
        return ret

    cdef int fixed_install(self, int slot) except? -10000:
        # FIXED_FD_INSTALL (6.8) run synchronously: its CQE is taken out of
        # the CQ in place (rl_steal_cqe), so no other completion runs here.
        # user_data is odd (no Op's address is): the reaper skips such CQEs
        # and closes the fd of one that came after its wait gave up.
        cdef io_uring_sqe *sqe
        cdef uint64_t ud
        cdef int res = 0, ret
        if not self.ring_open or self.fixed_files == 0 or slot < 0 or <unsigned>slot >= self.fixed_files:
            return -errno_EINVAL
        sqe = self.get_sqe()
        self.n_install += 1
        ud = (self.n_install << 1) | 1
        sqe.opcode = RL_OP_FIXED_FD_INSTALL
        sqe.fd = slot
        sqe.flags = IOSQE_FIXED_FILE
        sqe.user_data = ud
        self.n_sqes += 1
        ret = rl_steal_cqe(&self.ring, ud, 1000000000, &res)     # counts its enters
        if ret < 0:
            return ret
        return res

    cdef bint waitid_ring(self) except -1:
        return self.ring_open and _use_waitid and _ring_has_op(RL_OP_WAITID)

    cdef bint kernel_open(self) noexcept:
        return self.ring_open

    cdef int reap_now(self) except -1:
        if self.ring_open:
            self.reap()
        return 0

    cdef DriverCounters counters(self) noexcept:
        cdef DriverCounters c
        c.submitted = self.n_sqes
        c.completed = self.n_cqes
        c.waits = self.ring.n_enter
        return c

    cdef io_uring_sqe *get_sqe(self) except NULL:
        cdef io_uring_sqe *sqe = rl_get_sqe(&self.ring)
        cdef int ret
        if sqe == NULL:
            # SQ full: hand what is queued to the kernel now, then retry.
            # (SQPOLL: wait for the SQ thread to free a slot.)
            if self.ring.sqpoll:
                ret = rl_sq_wait_space(&self.ring)
            else:
                ret = rl_submit_and_wait(&self.ring, 0, -1)
            if ret < 0 and ret != -errno_EINTR and ret != -errno_EBUSY and ret != -errno_EAGAIN:
                raise _enter_error(-ret)
            sqe = rl_get_sqe(&self.ring)
            if sqe == NULL:
                # The kernel could not take SQEs (CQ overflow backlog; SQPOLL:
                # the wait was interrupted): make room by reaping, which may
                # run completions re-entrantly.
                self.reap()
                if self.ring.sqpoll:
                    rl_sq_wait_space(&self.ring)
                else:
                    rl_submit_and_wait(&self.ring, 0, -1)
                sqe = rl_get_sqe(&self.ring)
                if sqe == NULL:
                    raise OSError(errno_EBUSY, "io_uring submission queue is full")
        return sqe

    # The list keeps each op (and what the kernel touches) alive until its
    # final CQE.  A list rather than a bare INCREF: the loop <-> op cycle
    # stays visible to the GC, so an unclosed, unreachable loop is found,
    # warned about and closed by BaseEventLoop.__del__ (which cancels and
    # waits for every op before anything is freed).  A list with each op's
    # index and swap-removal rather than a set: no hashing or probing, about
    # 100 instructions less per op (callgrind, protocol echo).
    cdef int _track(self, Op op) except -1:
        op.inflight_slot = PyList_GET_SIZE(self.ops)
        self.ops.append(op)
        return 0

    cdef int _untrack(self, Op op) except -1:
        cdef list ops = self.ops
        cdef Py_ssize_t last = PyList_GET_SIZE(ops) - 1
        cdef Py_ssize_t i = op.inflight_slot
        cdef Op moved
        if i < 0 or i > last or PyList_GET_ITEM(ops, i) != <PyObject*>op:
            return 0        # not tracked here (a list handed to _leaked_ops)
        if i != last:
            moved = <Op>PyList_GET_ITEM(ops, last)
            moved.inflight_slot = i
            ops[i] = moved
        ops.pop()
        op.inflight_slot = -1
        return 0

    cdef int start(self, Op op) except -1:
        cdef io_uring_sqe *sqe
        if not self.ring_open:
            raise RuntimeError("the event loop's ring is closed")
        if op.state != OP_IDLE:
            raise RuntimeError(f"{op!r} is already in flight")
        sqe = self.get_sqe()
        op.prep(sqe)
        sqe.user_data = <uint64_t><uintptr_t><PyObject*>op
        self._track(op)
        op.state = OP_INFLIGHT
        self.inflight += 1
        _live.ops_inflight += 1
        self.n_sqes += 1
        return 0

    cdef int cancel(self, Op op) except -1:
        cdef io_uring_sqe *sqe
        if op.state != OP_INFLIGHT or not self.ring_open:
            return 0
        op.state = OP_CANCELLING
        sqe = self.get_sqe()
        sqe.opcode = IORING_OP_ASYNC_CANCEL
        sqe.fd = -1
        sqe.addr = <uint64_t><uintptr_t><PyObject*>op
        sqe.user_data = 0   # the cancel's own completion is not interesting
        self.n_sqes += 1
        return 0

    cdef int flush(self) except -1:
        # Submit what is queued without waiting; completions come later.
        cdef int ret
        if self.ring_open and rl_sq_pending(&self.ring):
            ret = rl_submit_and_wait(&self.ring, 0, -1)
            if ret < 0 and ret != -errno_EINTR and ret != -errno_EBUSY and ret != -errno_EAGAIN:
                raise _enter_error(-ret)
        return 0

    cdef int wait(self, int64_t timeout_ns) except -1:
        cdef int ret
        if not self.ring_open:
            raise RuntimeError("the event loop's ring is closed")
        if (timeout_ns == 0 and not rl_submit_needs_enter(&self.ring)
                and not rl_needs_enter(&self.ring)):
            # Nothing to submit (or, SQPOLL, the SQ thread awake to take
            # it), nothing deferred, no wait: the CQ is read without a syscall.
            if rl_cq_ready(&self.ring):
                self.reap()
            return 0
        if rl_cq_ready(&self.ring):
            timeout_ns = 0
        if timeout_ns != 0:
            # A signal that came since Python last looked would otherwise
            # wait for the next wakeup: handle it before blocking.
            PyErr_CheckSignals()
        with nogil:
            ret = rl_submit_and_wait(&self.ring, 1 if timeout_ns != 0 else 0, timeout_ns)
        if ret < 0 and ret != -errno_ETIME and ret != -errno_EINTR \
                and ret != -errno_EBUSY and ret != -errno_EAGAIN:
            raise _enter_error(-ret)
        self.reap()
        if ret == -errno_EINTR:
            # A signal interrupted the wait: run Python's handlers now (as
            # CPython's selectors do), so Ctrl-C stops an idle loop.
            PyErr_CheckSignals()
        if rl_cq_overflow(&self.ring):
            # CQEs the kernel kept aside (FEAT_NODROP) are flushed by enter.
            rl_submit_and_wait(&self.ring, 0, 0)
            self.reap()
        return 0

    cdef int reap(self) except -1:
        cdef unsigned head = rl_cq_khead(&self.ring)
        cdef unsigned tail
        cdef io_uring_cqe *cqe
        cdef uint64_t ud
        cdef int res
        cdef uint32_t flags
        cdef Op op
        cdef unsigned since_flush = 0
        cdef unsigned flush_every = _flush_interval
        while True:
            tail = rl_cq_ready(&self.ring) + head
            if head == tail:
                break
            cqe = rl_cqe_at(&self.ring, head)
            ud = cqe.user_data
            res = cqe.res
            flags = cqe.flags
            head += 1
            # Release the slot first: complete() may submit and re-enter.
            rl_cq_advance_to(&self.ring, head)
            self.n_cqes += 1
            if res == -errno_ENOBUFS:
                self.n_enobufs += 1
            if ud & 1 or ud == 0:
                if ud & 1 and res >= 0:
                    close(res)      # a fixed_install() that gave up waiting
                continue
            op = <Op><PyObject*><uintptr_t>ud
            if not (flags & IORING_CQE_F_MORE):
                op.state = OP_IDLE
                self.inflight -= 1
                _live.ops_inflight -= 1
                self._untrack(op)
            try:
                op.complete(res, flags)
            except BaseException as exc:
                if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                    raise
                self.loop.call_exception_handler({
                    'message': f'Exception in completion of {op!r}',
                    'exception': exc,
                })
            if flush_every:
                since_flush += 1
                if since_flush >= flush_every and rl_sq_pending(&self.ring):
                    since_flush = 0
                    self.n_flushes += 1
                    self.flush()
            head = rl_cq_khead(&self.ring)
        return 0

    cdef int shutdown(self, bint forked) except -1:
        cdef io_uring_sqe *sqe
        cdef int64_t deadline
        cdef int ret = 0
        if not self.ring_open:
            return 0
        if self.ring.disabled and not forked:
            # Never entered: no SQE reached the kernel, nothing to wait for.
            _live.ops_inflight -= len(self.ops)
            self.ops = []
            self.inflight = 0
        if not forked and self.inflight > 0:
            # Cancel everything and wait (bounded) for the final CQEs, so no
            # buffer an op holds is freed while the kernel may still write it.
            sqe = rl_get_sqe(&self.ring)
            if sqe != NULL:
                sqe.opcode = IORING_OP_ASYNC_CANCEL
                sqe.fd = -1
                sqe.cancel_flags = IORING_ASYNC_CANCEL_ANY
                sqe.user_data = 0
            deadline = rl_monotonic_ns() + 1000000000
            while self.inflight > 0 and rl_monotonic_ns() < deadline:
                with nogil:
                    ret = rl_submit_and_wait(&self.ring, 1, 10000000)
                if ret == -errno_EEXIST:
                    break       # closed from a thread the ring is not tied to
                self._reap_quiet()
            # Ops still in flight are kept forever: leaked, never freed
            # under the kernel.
            if self.ops:
                _leaked_ops.append(self.ops)
                _live.ops_inflight -= len(self.ops)
                _live.ops_leaked += len(self.ops)
                self.ops = []
        self.ring_open = False
        if self.provided_buffers and not forked and self.inflight == 0 and self.pbuf_out == 0:
            # (pbuf_out: receive buffers ConnCtx views still expose are
            # never unmapped under them -- leaked instead.)
            rl_pbuf_ring_free(&self.ring, &self.pbuf_ring)
        elif self.provided_buffers and not forked:
            _keep_leaked_ring(&self.pbuf_ring)
        if self.dpbuf_state == 1 and not forked and self.inflight == 0:
            rl_pbuf_ring_free(&self.ring, &self.dpbuf_ring)
        elif self.dpbuf_state == 1 and not forked:
            _keep_leaked_ring(&self.dpbuf_ring)
        self.provided_buffers = False
        self.dpbuf_state = -1
        rl_ring_exit(&self.ring)
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1
        self.wake_op = None     # a closed loop keeps no op alive (live_counts)
        return 0

    cdef _reap_quiet(self):
        # Reap during shutdown: drop completions without running them.
        cdef unsigned head = rl_cq_khead(&self.ring)
        cdef io_uring_cqe *cqe
        cdef uint64_t ud
        cdef int res
        cdef uint32_t flags
        while rl_cq_ready(&self.ring):
            cqe = rl_cqe_at(&self.ring, head)
            ud = cqe.user_data
            res = cqe.res
            flags = cqe.flags
            head += 1
            rl_cq_advance_to(&self.ring, head)
            if ud & 1:
                if res >= 0:
                    close(res)
            elif ud != 0 and not (flags & IORING_CQE_F_MORE):
                op = <Op><PyObject*><uintptr_t>ud
                op.state = OP_IDLE
                self.inflight -= 1
                _live.ops_inflight -= 1
                self._untrack(op)
                op.quiet(res, flags)

    def __dealloc__(self):
        # Reached only after the loop was closed (shutdown ran) or never
        # started anything: close what is left without waiting.
        if self.ring_open:
            self.ring_open = False
            rl_ring_exit(&self.ring)
        if self.wake_fd >= 0:
            close(self.wake_fd)
            self.wake_fd = -1

    def stats(self):
        return {
            'backend': 'io_uring',
            'setup_flags': self.ring.setup_flags,
            'features': self.ring.features,
            'sq_entries': self.ring.sq_entries,
            'cq_entries': self.ring.cq_entries,
            'io_uring_enter': self.ring.n_enter,
            'registered_ring': self.ring.enter_flags != 0,
            'sqes_submitted': self.n_sqes,
            'cqes_processed': self.n_cqes,
            'inflight': self.inflight,
            'cq_overflow': self.ring.cq_koverflow[0] if self.ring_open else 0,
            'recv_buffers': (self.pbuf_ring.entries, self.pbuf_ring.buf_size) if self.provided_buffers else None,
            'recv_incremental': bool(self.provided_buffers and self.pbuf_ring.inc),
            'recv_bundles': bool(self.provided_buffers and self.pbuf_ring.bundle),
            'recv_enobufs': self.n_enobufs,     # receives that found the buffer ring empty
            'flushes': self.n_flushes,          # mid-batch submissions (set_flush_interval)
            'fixed_files': self.fixed_files,    # direct-descriptor table slots (0: none)
            # SQPOLL (set_sqpoll): whether this ring has it, as asked, the
            # kernel's refusal if it was asked for and refused, and the
            # enters that woke a sleeping SQ thread.
            'sqpoll': self.ring.sqpoll != 0,
            'sqpoll_idle_ms': self.sqpoll_req.idle_ms if self.sqpoll_req.on else None,
            'sqpoll_cpu': self.sqpoll_req.cpu if self.sqpoll_req.on and self.sqpoll_req.cpu >= 0 else None,
            'sqpoll_refused': self._sqpoll_refused(),
            'sq_wakeups': self.ring.n_sq_wakeups,
        }


cdef str _ring_refusal_reason(int err):
    if err == errno_ENOSYS:
        return "io_uring_setup is not implemented by this kernel (ENOSYS)"
    if err == errno_EPERM:
        try:
            with open("/proc/sys/kernel/io_uring_disabled") as f:
                v = f.read().strip()
            if v in ("1", "2"):
                return f"io_uring is disabled by sysctl kernel.io_uring_disabled={v} (EPERM)"
        except OSError:
            pass
        return "io_uring_setup was refused (EPERM), e.g. by a seccomp filter"
    if err == errno_ENOMEM:
        return "io_uring_setup failed: out of locked memory (ENOMEM)"
    return "io_uring_setup failed: " + os.strerror(err)


# The opcodes this kernel's rings support, probed once per process (on a
# fresh ring) when first asked: SEND_ZC (zero_copy_send above) and the file
# ops (fileops.pxi).
cdef unsigned char _ring_ops[256]
cdef bint _ring_ops_known = False


cdef int _probe_ring_ops() except -1:
    global _ring_ops_known
    memset(_ring_ops, 0, 256)
    try:
        _, _, ops = probe()
    except OSError:
        ops = {}
    for k, v in ops.items():
        if v and 0 <= k < 256:
            _ring_ops[k] = 1
    _ring_ops_known = True
    return 0


cdef bint _ring_has_op(int opcode) except -1:
    if not _ring_ops_known:
        _probe_ring_ops()
    return _ring_ops[opcode] != 0


def probe():
    """Return (setup_flags, features, {opcode: supported}) of a fresh ring."""
    cdef rl_ring r
    cdef int first_err = 0
    cdef unsigned char ops[256]
    cdef unsigned last_op = 0
    cdef int ret = rl_ring_init(&r, 8, 16, 1, &first_err, NULL)
    if ret < 0:
        raise RingUnavailable(-ret, _ring_refusal_reason(-ret))
    memset(ops, 0, 256)
    try:
        ret = rl_probe(&r, ops, &last_op)
        if ret < 0:
            raise OSError(-ret, "IORING_REGISTER_PROBE: " + os.strerror(-ret))
        return r.setup_flags, r.features, {i: bool(ops[i]) for i in range(last_op + 1)}
    finally:
        rl_ring_exit(&r)


def probe_sqpoll(idle_ms=10, cpu=-1):
    """Whether this kernel gives this process an SQPOLL ring: None if it
    does, else why not (a fresh ring is set up and closed; its SQ thread
    lives for that long).  For `python -m ringline info`."""
    cdef rl_ring r
    cdef int first_err = 0
    cdef rl_sqpoll_req req
    memset(&req, 0, sizeof(req))
    req.on = 1
    req.idle_ms = idle_ms
    req.cpu = cpu
    req.refuse = not _sqpoll_kernel
    cdef int ret = rl_ring_init(&r, 8, 16, 1, &first_err, &req)
    if ret < 0:
        raise RingUnavailable(-ret, _ring_refusal_reason(-ret))
    rl_ring_exit(&r)
    return _sqpoll_refusal(req.err, req.refuse) if req.err else None
