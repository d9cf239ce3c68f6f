# Direct descriptors: what is done to a slot of the driver's direct-
# descriptor table (Driver.fixed_files) other than receiving and sending.
# The runtime API's accepted connections live there (a multishot ACCEPT with
# IORING_FILE_INDEX_ALLOC installs each one in a free slot and no process fd
# exists); the asyncio face never uses it.  A slot has no fd, so shutdown()
# and close() are ring ops on it too.  Fire and forget: nothing waits on
# them, and the ring's ordering is enough -- SQEs are issued in order, and
# an op issued before the CLOSE holds its own reference to the file, so a
# slot the kernel gives the next connection is never one an old op uses.

cdef extern from "<sys/socket.h>":
    enum:
        SHUT_WR_D "SHUT_WR"


@cython.final
cdef class FixedCloseOp(Op):
    # IORING_OP_CLOSE of a slot (5.15): fd must be 0 and IOSQE_FIXED_FILE
    # unset, file_index is the slot + 1 (io_uring/openclose.c).

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_CLOSE
        sqe.fd = 0
        sqe.file_index = <uint32_t>(self.fd + 1)
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        return 0


@cython.final
cdef class FixedShutWrOp(Op):
    # IORING_OP_SHUTDOWN (5.11) on a slot: the half-close's FIN.  ENOTCONN
    # (the peer is gone already) is as good as done.

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_SHUTDOWN
        sqe.fd = self.fd
        sqe.flags = IOSQE_FIXED_FILE
        sqe.len = SHUT_WR_D
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        return 0


cdef int _fixed_close(LoopCore loop, int slot) except -1:
    """Free a table slot (and close its socket unless an op still holds it)."""
    cdef FixedCloseOp op
    if loop is None or loop._driver is None or loop._closed or slot < 0:
        return 0
    op = FixedCloseOp.__new__(FixedCloseOp)
    op.loop = loop
    op.fd = slot
    try:
        loop._driver.start(op)
    except RuntimeError:
        pass    # the ring is closed: its table went with it
    return 0


cdef int _fixed_shut_wr(LoopCore loop, int slot) except -1:
    cdef FixedShutWrOp op = FixedShutWrOp.__new__(FixedShutWrOp)
    op.loop = loop
    op.fd = slot
    loop._driver.start(op)
    return 0


def _close_direct(LoopCore loop, int slot):
    """Close a connection's slot nobody took (a worker's rejection)."""
    _fixed_close(loop, slot)
