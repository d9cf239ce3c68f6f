# What a worker sets for its connections: ring sizes, and ConnEnv, what every
# connection of a worker shares.

def set_ring_entries(unsigned sq_entries, unsigned cq_entries):
    """SQ and CQ sizes of io_uring loops created from now on (powers of two);
    returns the previous pair."""
    global _sq_entries_default, _cq_entries_default
    if sq_entries == 0 or sq_entries & (sq_entries - 1) or sq_entries > 32768:
        raise ValueError(f"sq_entries must be a power of two in 1..32768, got {sq_entries}")
    if cq_entries < sq_entries or cq_entries & (cq_entries - 1) or cq_entries > 65536:
        raise ValueError(f"cq_entries must be a power of two in sq_entries..65536, got {cq_entries}")
    old = (_sq_entries_default, _cq_entries_default)
    _sq_entries_default = sq_entries
    _cq_entries_default = cq_entries
    return old


def recv_buffers():
    """(entries, size) of the provided-buffer ring new loops get."""
    return (_pbuf_entries, _pbuf_size)


def _direct_table(LoopCore loop, unsigned n):
    """Register loop's direct-descriptor table of n slots for the runtime's
    accepted connections: 0, or the errno that kept it from being made
    (EOPNOTSUPP: switched off by set_direct_descriptors(False), the poll
    backend, or a kernel without FIXED_FD_INSTALL).  The connections then
    keep real fds."""
    cdef int ret
    if loop._driver is None:
        return errno_EINVAL
    ret = loop._driver.register_fixed_files(n)
    if ret == -errno_ENOSYS:
        return errno_EOPNOTSUPP
    return -ret if ret < 0 else 0


cdef class ConnEnv:

    def __init__(self, SendPool pool, MetricsBlock metrics, Py_ssize_t own_size=16384,
                 Py_ssize_t zc_threshold=0, bint zc_ok=False, Py_ssize_t recv_high=0,
                 send_pool_hint=None):
        if pool is None:
            raise TypeError("ConnEnv needs a SendPool")
        self.pool = pool
        self.metrics = metrics if metrics is not None else MetricsBlock()
        self.own_size = max(own_size, 4096)
        self.zc_threshold = zc_threshold
        self.zc_ok = zc_ok
        self.recv_high = recv_high if recv_high > 0 else max(262144, 4 * own_size)
        self.send_pool_hint = send_pool_hint
        self.bufs = BufPool(self.own_size)
