# Layer: driver (_core/driver/).  It owns the kernel interface: the ring or
# the poller, submitting and reaping, cancellation, the cross-thread wakeup,
# fd registration for the poll backends, and the C headers that declare them
# (uring.h, rl_poll.h, kq.h).  It knows the Op contract (prep for io_uring,
# attempt/poll_events for readiness, complete; loop/ops.pxi) and, of
# LoopCore, only its wakeup flag, closed state and exception handler.  It may
# not know transports, protocols, futures or the runtime API: everything above
# it reaches the kernel through Ops and the Driver methods below.
#   base.pxi       the Driver interface, WakeOp, fork generation
#   uring.pxi      UringDriver (io_uring), probe()
#   readiness.pxi  _ReadinessDriver: the poll backend, completions over readiness
#   epoll.pxi      its epoll mechanism (Linux)
#   kqueue.pxi     its kqueue mechanism (macOS/BSD; compiled against stubs on Linux)
#
# The driver boundary: the loop and every transport start operations (Op
# subclasses) and get their completions; how the kernel is asked is the
# driver's business.  UringDriver submits SQEs and reaps CQEs; the poll
# drivers (epoll, kqueue: driver/readiness.pxi) emulate completions over
# readiness with the same Op objects (Op.attempt does the syscall,
# Op.poll_events says what to wait for).
#
# Capabilities: what differs between the backends, as the layers above need
# to know it, is reported by the driver as C fields of Driver (core.pxd),
# set once by each backend's __cinit__.  Nothing outside driver/ asks which
# backend it is (tests/test_architecture.py; the loop factory, loop.pxi's
# _make_driver, chooses one, and `name` is for reporting):
#   direct_send       a write with nothing queued is tried by send() at once
#                     (poll: the only way out; io_uring: SENDs go in the ring)
#   batched_reads     a read completion may go on reading what is queued now
#                     (poll: readiness said there is data; io_uring: multishot)
#   zero_copy_send    SEND_ZC may be used (io_uring with the opcode)
#   file_ops_in_ring  file ops are Ops of this driver (io_uring; else fileops
#                     uses its thread pool)
#   fixed_files       slots of the direct-descriptor table register_fixed_files()
#                     registered (io_uring; the runtime's accepted connections)
#   provided_buffers  the stream provided-buffer ring is registered: pbuf
#                     (rl_pbuf_addr, rl_pbuf_recycle on it), pbuf_out counts
#                     the buffers held outside it; dgram_ring() registers the
#                     datagram one (dpbuf) on first use
# plus counters() (submitted, completed, waits: the same three everywhere) and
# reserve(n) (the next n starts go to the kernel in one batch).  The poll
# driver leaves them all False, NULL and no-ops.

cdef int _fork_generation = 0

def _after_fork_in_child():
    global _fork_generation
    _fork_generation += 1

os.register_at_fork(after_in_child=_after_fork_in_child)


class RingUnavailable(OSError):
    """io_uring_setup was refused or failed; ``errno`` says why."""


cdef class Driver:
    """Base of the backends; the methods are overridden."""

    cdef int start(self, Op op) except -1:
        raise NotImplementedError

    cdef int cancel(self, Op op) except -1:
        raise NotImplementedError

    cdef int wait(self, int64_t timeout_ns) except -1:
        raise NotImplementedError

    cdef int flush(self) except -1:
        return 0

    cdef int shutdown(self, bint forked) except -1:
        return 0

    # A transport takes an fd for its lifetime (own_fd) and gives it back
    # before closing it (disown_fd).  Only the poll drivers care.
    cdef int own_fd(self, int fd, object owner) except -1:
        return 0

    cdef int disown_fd(self, int fd) except -1:
        return 0

    cdef int wake(self) noexcept nogil:
        cdef uint64_t one = 1
        return <int>write(self.wake_fd, &one, 8)

    def arm_wakeup(self):
        pass

    cdef int enter_thread(self) except -1:
        """The loop starts running on this thread (run_forever)."""
        return 0

    cdef int leave_thread(self) except -1:
        """It stops running there: undo what enter_thread() did."""
        return 0

    cdef DriverCounters counters(self) noexcept:
        cdef DriverCounters c
        c.submitted = 0
        c.completed = 0
        c.waits = 0
        return c

    cdef bint dgram_ring(self) except -1:
        """Whether the datagram provided-buffer ring (dpbuf) is usable,
        registering it on first use."""
        return False

    cdef int reserve(self, int n) except -1:
        """Make room for the next n starts to reach the kernel in one batch
        (linked SQEs)."""
        return 0

    cdef int register_fixed_files(self, unsigned n) except? -10000:
        """Register an empty direct-descriptor table of n slots: 0, or
        -errno when this driver cannot (fixed_files stays 0)."""
        return -errno_ENOSYS

    cdef int fixed_install(self, int slot) except? -10000:
        """A real fd (O_CLOEXEC) for table slot `slot`, or -errno."""
        return -errno_ENOSYS

    cdef bint waitid_ring(self) except -1:
        """Whether a WaitidOp (loop/waitid.pxi) can be started: the driver
        reaps children in the kernel (IORING_OP_WAITID)."""
        return False

    cdef bint kernel_open(self) noexcept:
        """Whether ops in flight may still complete (False once shut down)."""
        return True

    cdef int reap_now(self) except -1:
        """Run the completions the kernel has already posted, now (on the
        loop's thread, re-entrantly)."""
        return 0

    def stats(self):
        return {}


# Reads the loop's eventfd in the ring: a write from another thread completes
# this READ and wakes io_uring_enter; re-armed on every completion.
@cython.final
cdef class WakeOp(Op):
    cdef uint64_t value

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_READ
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>&self.value
        sqe.len = 8
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t n = read(self.fd, &self.value, 8)
        return <int>n if n >= 0 else -errno

    cdef int poll_events(self):
        return POLLIN

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.loop._wake_pending = False
        if self.loop._driver is not None and not self.loop._closed:
            self.loop._driver.start(self)
        return 0


