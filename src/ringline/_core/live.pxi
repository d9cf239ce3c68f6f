# Live counts: what the core has lent out or keeps alive, per process.
#
# Each is a plain C integer bumped where the thing is taken and where it is
# given back, so a test can check that everything returns to zero after
# close, abort, a peer's reset, a cancel racing a completion or a loop
# closed with ops in flight (tests/test_lifetimes.py).  Always compiled in:
# an increment beside work that already touches the same cache line costs
# nothing measurable (benchmarks/echo_instructions.py), and a leak that
# only a debug build can see is found after it shipped.  Updated under the
# GIL (the core is not free-threading safe anyway).

cdef struct rl_live_t:
    Py_ssize_t ops              # Op objects alive
    Py_ssize_t ops_inflight     # ops a driver holds: submitted, final completion not seen
    Py_ssize_t ops_leaked       # ops a closed ring could not get back (kept forever)
    Py_ssize_t rbufs_out        # BufPool buffers lent to a read
    Py_ssize_t kbufs            # KBuf objects alive (kernel buffers of ConnCtx)
    Py_ssize_t pbufs_out        # provided-ring buffers out of the ring (held by KBufs)
    Py_ssize_t kbuf_views       # buffer exports (memoryviews) of KBufs not yet released
    Py_ssize_t send_slots       # send-pool slots holding queued send_nowait() data
    Py_ssize_t buf_holds        # buffer exports of queued send() data (_BufHold)
    Py_ssize_t zc_holds         # stream writes a SEND_ZC keeps until its notification

cdef rl_live_t _live


def live_counts():
    """What the compiled core has lent out or keeps alive in this process,
    by kind (see live.pxi): every count returns to where it was once what
    used it is closed and collected."""
    return {
        'ops': _live.ops,
        'ops_inflight': _live.ops_inflight,
        'ops_leaked': _live.ops_leaked,
        'rbufs_out': _live.rbufs_out,
        'kbufs': _live.kbufs,
        'pbufs_out': _live.pbufs_out,
        'kbuf_views': _live.kbuf_views,
        'send_slots': _live.send_slots,
        'buf_holds': _live.buf_holds,
        'zc_holds': _live.zc_holds,
    }
