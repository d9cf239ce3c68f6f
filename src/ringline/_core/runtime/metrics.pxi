# Per-worker metrics: the slot numbers (M_*), their names and help texts
# (the one definition ringline/runtime/_metrics.py reads), and MetricsBlock,
# one worker's counters in memory the launcher can read.

cdef enum:
    # Metrics slots: each one's name and help text are in _METRIC_INFO below,
    # the one definition Python reads (METRIC_NAMES, METRIC_HELP).
    M_ACCEPTED = 0
    M_OUTBOUND = 1
    M_CLOSED = 2
    M_BYTES_IN = 3
    M_BYTES_OUT = 4
    M_SQES = 5
    M_CQES = 6
    M_ENTER = 7
    M_RING_EMPTY = 8
    M_POOL_EXHAUSTED = 9
    M_REJECTED = 10
    M_HANDLER_ERRORS = 11
    M_UDP_IN = 12
    M_UDP_OUT = 13
    M_UDP_EXHAUSTED = 14
    M_LOOP_ITERATIONS = 15
    M_TABLE_FULL = 16
    M_NSLOTS = 17

METRIC_SLOTS = M_NSLOTS

# Every slot's (name, help), keyed by its constant.  runtime/_metrics.py (names,
# Prometheus help), _worker.py and _udp.py (the indices they add to) take theirs
# from METRIC_NAMES / METRIC_HELP, never from numbers of their own.  A slot left
# out, or two entries for one slot, fails the import below.
cdef dict _METRIC_INFO = {
    M_ACCEPTED: ("connections_accepted", "Inbound connections accepted."),
    M_OUTBOUND: ("connections_outbound", "Outbound connections established."),
    M_CLOSED: ("connections_closed", "Connections closed."),
    M_BYTES_IN: ("bytes_in", "Bytes received on connections."),
    M_BYTES_OUT: ("bytes_out", "Bytes the kernel took for sending on connections."),
    M_SQES: ("sqes_submitted",
             "Submission queue entries submitted (poll backend: operations started)."),
    M_CQES: ("cqes_processed",
             "Completion queue entries processed (poll backend: operations completed)."),
    M_ENTER: ("io_uring_enter", "io_uring_enter calls (poll backend: epoll_wait calls)."),
    M_RING_EMPTY: ("buffer_ring_empty",
                   "Receives that found the provided-buffer ring empty (ENOBUFS)."),
    M_POOL_EXHAUSTED: ("send_pool_exhausted",
                       "send_nowait() calls refused for lack of send pool slots."),
    M_REJECTED: ("connections_rejected",
                 "Connections closed at accept (max_connections, or a full direct-descriptor table)."),
    M_HANDLER_ERRORS: ("handler_errors", "Exceptions escaping a connection handler."),
    M_UDP_IN: ("udp_datagrams_in", "UDP datagrams received."),
    M_UDP_OUT: ("udp_datagrams_out", "UDP datagrams sent."),
    M_UDP_EXHAUSTED: ("udp_send_exhausted",
                      "send_to() calls refused: all UDP send slots in flight."),
    M_LOOP_ITERATIONS: ("loop_iterations", "Event loop iterations."),
    M_TABLE_FULL: ("direct_table_full",
                   "Connections the kernel closed at accept: the direct-descriptor table "
                   "(Config.fixed_files) was full (also counted in connections_rejected)."),
}
if sorted(_METRIC_INFO) != list(range(M_NSLOTS)):
    raise ImportError("ringline core: _METRIC_INFO does not name every metrics slot once")
#: The slots' names and help texts, in slot order (index == M_* constant).
METRIC_NAMES = tuple([_METRIC_INFO[i][0] for i in range(M_NSLOTS)])
METRIC_HELP = tuple([_METRIC_INFO[i][1] for i in range(M_NSLOTS)])

cdef class MetricsBlock:
    """M_NSLOTS uint64 counters of one worker, in memory the caller provides
    (a slice of a shared mapping, so the launcher reads every worker's) or
    owned."""

    def __cinit__(self, buf=None, Py_ssize_t offset=0):
        self.own = NULL
        if buf is None:
            self.own = <uint64_t*>PyMem_Malloc(M_NSLOTS * sizeof(uint64_t))
            if self.own == NULL:
                raise MemoryError()
            memset(self.own, 0, M_NSLOTS * sizeof(uint64_t))
            self.p = self.own
        else:
            PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
            self.has_view = True
            if offset < 0 or offset + M_NSLOTS * 8 > self.view.len or offset % 8:
                PyBuffer_Release(&self.view)
                self.has_view = False
                raise ValueError("metrics block outside the buffer")
            self.p = <uint64_t*>(<char*>self.view.buf + offset)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)
        if self.own != NULL:
            PyMem_Free(self.own)

    def get(self, int i):
        if not 0 <= i < M_NSLOTS:
            raise IndexError(i)
        return self.p[i]

    def add(self, int i, uint64_t n=1):
        if not 0 <= i < M_NSLOTS:
            raise IndexError(i)
        self.p[i] += n

    def values(self):
        return [self.p[i] for i in range(M_NSLOTS)]

    def snapshot_driver(self, LoopCore loop):
        """Copy the driver's counters (SQEs, CQEs, io_uring_enter calls; on
        the poll backend: ops started, completed, epoll_wait calls)."""
        cdef Driver d = loop._driver
        cdef DriverCounters c
        if d is None:
            return
        c = d.counters()
        self.p[M_SQES] = c.submitted
        self.p[M_CQES] = c.completed
        self.p[M_ENTER] = c.waits
