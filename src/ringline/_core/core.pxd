cimport cython
# Declarations of the compiled core's classes (core.pyx and its .pxi parts).
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t
from cpython.buffer cimport Py_buffer
from cpython.ref cimport PyObject
from .uring cimport rl_ring, rl_pbuf_ring, rl_sqpoll_req, io_uring_sqe


cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        pass
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        void *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len


cdef class Resumable:
    cdef int resume(self) except -1


@cython.final
cdef class DirectCoro(Resumable):
    cdef object coro                 # the handler's coroutine
    cdef LoopCore loop
    cdef public object task          # the asyncio.Task running this
    cdef object context              # the Task's context
    cdef object waiter               # the future the Task waits on during direct steps
    cdef object waiter_done          # its bound done() (no method lookup per step)
    cdef object outcome              # a direct step's yield, result or exception
    cdef int state                   # DC_* (runtime/direct.pxi)
    cdef bint queued                 # in the loop's direct list
    cdef bint cancelled_in_step      # the step cancelled its own task
    cdef object wait_target          # the connection it waits on, or None

    cdef inline int schedule(self) except -1
    cdef int _finish(self) except -1


cdef class Handle:
    cdef readonly object _callback
    cdef readonly object _args
    cdef object _context
    cdef LoopCore _loop
    cdef bint _cancelled
    cdef readonly object _source_traceback
    cdef object _repr
    cdef object __weakref__

    cdef inline _init(self, object callback, tuple args, LoopCore loop, object context)
    cdef int run(self) except -1


cdef class TimerHandle(Handle):
    cdef double _when
    cdef Py_ssize_t _heap_index
    cdef unsigned long long _seq


cdef class TimerHeap:
    cdef list items
    cdef unsigned long long seq

    cdef inline bint _less(self, TimerHandle a, TimerHandle b)
    cdef inline void _place(self, Py_ssize_t i, TimerHandle h)
    cdef void _sift_up(self, Py_ssize_t i)
    cdef void _sift_down(self, Py_ssize_t i)
    cdef push(self, TimerHandle h)
    cdef TimerHandle pop(self)
    cdef remove(self, TimerHandle h)
    cdef clear(self)


# An operation in flight in the driver.  The driver keeps one reference per
# submission (user_data is the object's address) and drops it on the final
# completion, so an op and every buffer it holds outlive the kernel's use.
cdef class Op:
    cdef LoopCore loop
    cdef object fut
    cdef object owner            # the socket object the op serves, if any
    cdef Op successor            # the next op of its lane (ops.pxi: lanes)
    cdef bint wait_first         # poll backend: wait for readiness before trying (just drained)
    cdef Py_ssize_t inflight_slot  # io_uring: its index in UringDriver.ops while submitted
    cdef int fd
    cdef uint8_t state
    cdef uint8_t lane            # LANE_READ / LANE_WRITE while in its socket's lane
    cdef bint held               # its coroutine has yet to take the result
    cdef bint over               # its kernel part ended (or it was served from the stash)
    cdef bint keep_fut_callback

    cdef int prep(self, io_uring_sqe *sqe) except -1
    cdef int attempt(self) except? -1
    cdef int poll_events(self)
    cdef int complete(self, int res, uint32_t flags) except -1
    cdef int finish(self, object result) except -1
    cdef int fail(self, int err) except -1
    cdef inline int bind(self, LoopCore loop, object fut, int fd, object owner=*) except -1
    cdef int drop(self) except -1
    cdef int take_kept(self) except -1
    cdef int keep_unclaimed(self, object result, object buf) except -1
    cdef int quiet(self, int res, uint32_t flags) except -1


# Driver.counters(): the driver's work so far, the same three on every
# backend (io_uring: SQEs, CQEs, io_uring_enter calls; poll: ops started,
# ops completed, epoll_wait/kevent calls).
ctypedef struct DriverCounters:
    uint64_t submitted
    uint64_t completed
    uint64_t waits


cdef class Driver:
    cdef LoopCore loop
    cdef Py_ssize_t inflight
    cdef readonly str name          # for reporting only (loop.stats(), info)
    cdef readonly int wake_fd
    # Capabilities (driver/base.pxi): each backend sets them when it is made;
    # everything above the driver asks these instead of which backend it is.
    cdef readonly bint direct_send        # a write with nothing queued is tried by send() first
    cdef readonly bint batched_reads      # a read completion may take what else is queued now
    cdef readonly bint zero_copy_send     # SEND_ZC may be used
    cdef readonly bint file_ops_in_ring   # file ops are Ops of this driver (else a thread pool)
    cdef readonly bint provided_buffers   # the stream provided-buffer ring (pbuf) is registered
    # Provided buffers, as the driver hands them out (NULL without a ring):
    # completions carry a buffer id into these; valid while the driver lives.
    cdef rl_pbuf_ring *pbuf               # streams (valid while provided_buffers)
    cdef rl_pbuf_ring *dpbuf              # datagrams (valid once dgram_ring() said True)
    cdef Py_ssize_t pbuf_out              # pbuf buffers held outside the ring (runtime/kbuf.pxi)
    cdef readonly unsigned fixed_files    # slots of the registered direct-descriptor table (0: none)

    cdef int start(self, Op op) except -1
    cdef int cancel(self, Op op) except -1
    cdef int wait(self, int64_t timeout_ns) except -1
    cdef int flush(self) except -1
    cdef int shutdown(self, bint forked) except -1
    cdef int own_fd(self, int fd, object owner) except -1
    cdef int disown_fd(self, int fd) except -1
    cdef int wake(self) noexcept nogil
    cdef int enter_thread(self) except -1
    cdef int leave_thread(self) except -1
    cdef DriverCounters counters(self) noexcept
    cdef bint dgram_ring(self) except -1
    cdef int reserve(self, int n) except -1
    cdef int register_fixed_files(self, unsigned n) except? -10000
    cdef int fixed_install(self, int slot) except? -10000
    cdef bint waitid_ring(self) except -1
    cdef bint kernel_open(self) noexcept
    cdef int reap_now(self) except -1


cdef class UringDriver(Driver):
    cdef rl_ring ring
    cdef bint ring_open
    cdef list ops                 # in flight: kept alive here, visible to the GC
    cdef rl_sqpoll_req sqpoll_req # what was asked of SQPOLL, and the kernel's answer
    cdef uint64_t n_sqes
    cdef uint64_t n_cqes
    cdef uint64_t n_enobufs       # CQEs with -ENOBUFS (a buffer ring was empty)
    cdef uint64_t n_flushes       # mid-batch submissions (set_flush_interval)
    cdef uint64_t n_install       # fixed_install() calls (their CQEs' user_data)
    cdef Op wake_op
    cdef rl_pbuf_ring pbuf_ring   # Driver.pbuf points here
    cdef rl_pbuf_ring dpbuf_ring  # datagram buffers, registered on first use (Driver.dpbuf)
    cdef int dpbuf_state          # 0 not tried, 1 registered, -1 unavailable

    cdef io_uring_sqe *get_sqe(self) except NULL
    cdef str _sqpoll_refused(self)
    cdef int reap(self) except -1
    cdef _reap_quiet(self)
    cdef int _track(self, Op op) except -1
    cdef int _untrack(self, Op op) except -1


# The poll backend: completions emulated over readiness.  _PollFd holds the
# ops waiting on one fd, per direction; _ReadinessDriver (driver/readiness.pxi)
# is the mechanism-independent driver, PollDriver (driver/epoll.pxi, epoll)
# and KqueueDriver (driver/kqueue.pxi) register, wait and decode.
cdef class _PollFd:
    cdef int fd
    cdef object readers
    cdef object writers
    cdef int rmask
    cdef int wmask
    cdef int armed
    cdef bint added               # epoll: in the interest list; kqueue: a one-shot knote may exist
    cdef uint32_t gen             # epoll: tags the registration's events
    cdef bint et                  # owned: one persistent edge-triggered registration
    cdef bint rready              # et: a read may succeed (no EAGAIN since the last edge)
    cdef bint wready
    cdef bint rclosed             # et: EOF or an error was reported: reads never block again
    cdef object owner             # et: weakref to the owning socket object


cdef class _ReadinessDriver(Driver):
    cdef int poller_fd            # the epoll or kqueue fd; -1 once shut down
    cdef void *evbuf              # the wait call's event array (_POLL_MAX_EVENTS)
    cdef dict fds
    cdef list pending
    cdef Op wake_op               # None with kqueue's EVFILT_USER wakeup
    cdef uint64_t n_wait
    cdef uint64_t n_ctl
    cdef uint64_t n_events
    cdef uint64_t n_stale
    cdef uint64_t n_started
    cdef uint64_t n_immediate
    cdef uint64_t n_completed
    cdef uint64_t n_cancelled
    cdef uint64_t n_eagain

    cdef int _arm(self, _PollFd fs) except -1
    cdef bint _register_owned(self, _PollFd fs) except -1
    cdef int _unregister_owned(self, _PollFd fs) except -1
    cdef int _poll(self, int64_t timeout_ns) except -1
    cdef int _dispatch(self, int n, list done, list touched) except -1
    cdef int _close_poller(self, bint forked) except -1
    cdef int _fail_fd(self, _PollFd fs, int err) except -1
    cdef int _deliver(self, Op op, int res) except -1
    cdef int _deliver_all(self, list first, list then) except -1
    cdef int _run_queue(self, object queue, int revents, list done) except -1
    cdef int _start_et(self, _PollFd fs, Op op, int events, bint readiness) except -1
    cdef int _drop_stale_et(self, _PollFd fs) except -1
    cdef int _process(self, _PollFd fs, uint32_t revents, list done) except -1
    cdef dict _stats(self, str mechanism, str wait_key, str ctl_key)


cdef class PollDriver(_ReadinessDriver):
    pass


cdef class KqueueDriver(_ReadinessDriver):
    cdef bint user_wake           # EVFILT_USER wakeup (else a pipe: wake_rfd/wake_fd)
    cdef int wake_rfd
    cdef int fork_gen             # _fork_generation at creation: the kqueue is not inherited


@cython.final
cdef class BufPool:
    cdef Py_ssize_t size
    cdef int keep                 # free buffers kept while busy
    cdef int idle_keep            # ... and once a second has not needed the rest
    cdef char **free              # LIFO
    cdef int nfree
    cdef int low                  # fewest free since the last trim
    cdef int64_t trim_ns          # next trim (monotonic ns)

    cdef char *take(self) except NULL
    cdef void give(self, char *buf) noexcept
    cdef int64_t trim(self, int64_t now_ns) noexcept
    cdef void release(self) noexcept


cdef class LoopCore:
    cdef public list _ready
    cdef list _ready_spare
    cdef public bint _stopping
    cdef public bint _closed
    cdef public bint _debug
    cdef public object _thread_id
    cdef public object _current_handle
    cdef public double slow_callback_duration
    cdef public double _clock_resolution
    cdef TimerHeap _timers
    cdef readonly Driver _driver
    cdef object _future_type
    cdef dict _readers
    cdef dict _writers
    cdef list _rearm
    cdef dict _stash
    cdef dict _lanes
    cdef unsigned long _fork_gen
    cdef bint _wake_pending
    cdef public object _iter_hook    # called after every iteration (runtime API)
    cdef list _direct                # Resumables queued by completions (handles.pxi)
    cdef list _direct_spare
    cdef Py_ssize_t _direct_budget
    cdef readonly uint64_t direct_steps
    cdef readonly uint64_t direct_deferred
    cdef bint _direct_task_in        # _current_tasks holds a direct step's task (direct.pxi)
    cdef object _view_spare          # an idle with_data() view to re-point (runtime/conn.pxi)
    cdef BufPool _rbufs              # stream read buffers (bufpool.pxi)

    cdef inline int _check_closed_c(self) except -1
    cdef inline Handle _call_soon_c(self, object callback, tuple args, object context)
    cdef int _run_once_c(self) except -1
    cdef int _run_ready(self) except -1
    cdef int _run_direct(self) except -1
    cdef list _pop_expired(self)
    cdef int _run_handles(self, list todo) except -1
    cdef int _check_fork(self) except -1
    cdef object _new_future(self)
    cdef int _sock_fd(self, object sock) except -1
    cdef TimerHandle _call_at(self, double when, object callback, tuple args,
                              object context, str method)
    cdef _add_poller(self, object fd, int events, dict table, object callback,
                     tuple args, str method)
    cdef bint _remove_poller(self, object fd, dict table) except -1


# ---- the shared transport core (transport/common.pxi) ------------------------

cdef enum:
    IOV_BATCH = 64              # iovecs per gathered send


cdef class GatherSendOp(Op):
    cdef msghdr msg
    cdef iovec iov[IOV_BATCH]
    cdef int niov


# One IORING_OP_SEND_ZC of n bytes at ptr; hold keeps their owner alive
# until the notification CQE.
cdef class ZcSendBase(Op):
    cdef object hold
    cdef char *ptr
    cdef Py_ssize_t n


cdef class BufRecvOp(Op):
    cdef BufPool bufs           # lends the single shot's buffer
    cdef Py_ssize_t size        # of bufs' buffers
    cdef Py_ssize_t own_size    # > 0: without a buffer ring, a buffer of its own this size
    cdef bint tcp               # a short read drains the socket
    cdef bint single            # single-shot into buf (ENOBUFS path, poll backend)
    cdef bint owned             # buf is this op's own
    cdef char *buf              # borrowed from bufs while it holds bytes, or owned

    cdef int init(self, LoopCore loop, int fd, BufPool bufs, Py_ssize_t size,
                  Py_ssize_t own_size, bint tcp) except -1


# ---- the runtime API's connection (runtime/) --------------------------------

# One entry of a connection's send queue: bytes the kernel is to send from
# ptr, owned by a send pool slot (slot >= 0) or held by `hold` (the object
# whose buffer it is: bytes, a _BufHold export, or a KBuf).
ctypedef struct SendEnt:
    char *ptr
    Py_ssize_t len
    int slot
    int flags
    PyObject *hold


@cython.final
cdef class MetricsBlock:
    cdef uint64_t *p
    cdef Py_buffer view
    cdef bint has_view
    cdef uint64_t *own


@cython.final
cdef class SendPool:
    cdef char *mem
    cdef uint32_t *free_stack
    cdef readonly Py_ssize_t nslots
    cdef readonly Py_ssize_t slot_size
    cdef readonly Py_ssize_t nfree
    cdef MetricsBlock metrics

    cdef inline int take(self) except -2
    cdef inline void give(self, int slot) noexcept
    cdef inline char *addr(self, int slot) noexcept
    cdef inline Py_ssize_t slots_for(self, Py_ssize_t n) noexcept


@cython.final
cdef class ConnEnv:
    cdef public SendPool pool
    cdef public MetricsBlock metrics
    cdef readonly Py_ssize_t own_size      # recv buffer size (ENOBUFS path, poll); fixed: buffers are pooled
    cdef public Py_ssize_t zc_threshold    # send() of this many bytes or more: SEND_ZC
    cdef public bint zc_ok
    cdef public Py_ssize_t recv_high       # stop receiving above this many buffered bytes
    cdef public object send_pool_hint      # for the exhaustion message
    cdef BufPool bufs                      # own_size buffers lent to reads (bufpool.pxi)


@cython.final
cdef class KBuf:
    cdef Driver d                   # None: bytes of `owner`, not a ring buffer
    cdef object owner
    cdef char *ptr
    cdef Py_ssize_t n
    cdef Py_ssize_t itemsize
    cdef int bid
    cdef int refs

    cdef inline void put(self) noexcept


@cython.final
cdef class _BufHold:
    cdef Py_buffer view
    cdef bint has_view

    cdef int hold(self, object data) except -1


@cython.final
cdef class ConnRecvOp(BufRecvOp):
    cdef ConnCore core


@cython.final
cdef class ConnSendOp(GatherSendOp):
    cdef ConnCore core


@cython.final
cdef class ZcSendOp(ZcSendBase):
    cdef ConnCore core


@cython.final
cdef class _ConnAwait:
    cdef ConnCore conn
    cdef object fn
    cdef int kind
    cdef uint64_t target
    cdef Py_ssize_t limit


cdef class ConnCore:
    cdef LoopCore loop
    cdef Driver drv
    cdef bint tcp
    cdef ConnEnv env
    cdef SendPool pool
    cdef MetricsBlock m
    cdef public object sock
    cdef public int fd
    cdef readonly bint direct        # fd is a slot of the ring's direct-descriptor table
    cdef public bint is_outbound
    cdef public object task
    cdef ConnRecvOp rop
    cdef ConnSendOp sop
    # receive
    # Received buffers after acc, in stream order: the first in seg1 (the
    # common case is one, and a deque costs method calls), the rest in segs.
    cdef KBuf seg1
    cdef object segs                 # deque of KBuf after seg1
    cdef Py_ssize_t nsegs            # seg1 and segs together
    cdef Py_ssize_t seg_bytes
    cdef bytearray acc
    cdef bint in_step
    cdef public bint eof
    cdef bint recv_paused
    cdef object rexc
    cdef object waiter
    cdef bint raw_seen
    # send
    cdef SendEnt *q
    cdef Py_ssize_t qhead
    cdef Py_ssize_t qlen
    cdef Py_ssize_t qcap
    cdef public Py_ssize_t qbytes
    cdef bint send_busy
    cdef Py_ssize_t batch_n
    cdef uint64_t bytes_queued
    cdef uint64_t bytes_taken
    cdef object send_waiters         # deque of (target, future)
    cdef object sexc
    cdef bint want_shut_wr
    cdef bint shut_wr_done
    cdef public bint closing
    cdef public bint closed
    cdef bint counted
    # TLS (ringline/runtime/_tls.py drives the handshake)
    cdef object tls_obj
    cdef object tls_in
    cdef object tls_out
    cdef bint tls_ready

    cdef int _arm(self) except -1
    cdef int on_kbuf(self, int bid, char *ptr, Py_ssize_t n) except -1
    cdef int on_bytes(self, char *ptr, Py_ssize_t n) except -1
    cdef object _view_of(self, KBuf kb)
    cdef inline int _seg_push(self, KBuf kb) except -1
    cdef inline KBuf _seg_pop(self)
    cdef int _acc_append(self, const char *ptr, Py_ssize_t n) except -1
    cdef int _flatten(self) except -1
    cdef int _after_input(self) except -1
    cdef int recv_ended(self, int res) except -1
    cdef inline int _wake(self) except -1
    cdef object _recv_waiter(self)
    cdef Py_ssize_t _check(self, object r, Py_ssize_t n) except? -3
    cdef Py_ssize_t _step(self, object fn, int mode) except? -3
    cdef inline int _maybe_resume(self) except -1
    cdef int _check_send(self) except -1
    cdef SendEnt *_push(self) except NULL
    cdef inline void _release_ent(self, SendEnt *e) noexcept
    cdef int _copy_in(self, char *ptr, Py_ssize_t n) except -1
    cdef inline int _send_or_copy(self, char *ptr, Py_ssize_t n) except -1
    cdef Py_ssize_t _send_at_once(self, const char *ptr, Py_ssize_t n) except -1
    cpdef send_nowait(self, data)
    cdef int _queue_held(self, object data, bint allow_zc) except -1
    cpdef forward_recv_buf(self, view)
    cdef int _start_send(self) except -1
    cdef int on_sent(self, int res) except -1
    cdef int _drop_queue(self) except -1
    cdef int _resolve_send_waiters(self) except -1
    cdef int _fail_send_waiters(self) except -1
    cdef object _send_waiter(self, uint64_t target)
    cdef int _do_shut_wr(self) except -1
    cdef int _stop_recv(self) except -1
    cdef int _finalize(self) except -1
    cdef int _disown(self) except -1
    cdef int _tls_feed(self, char *ptr, Py_ssize_t n) except -1
    cdef int _tls_pump(self) except -1
    cdef int _tls_send(self, object data) except -1
    cdef int _tls_close_notify(self) except -1
