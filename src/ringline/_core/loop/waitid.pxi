# Child exits reaped in the ring: IORING_OP_WAITID (6.7) on a pidfd, for
# aio/_subprocess.py's watch_exit.  Where the kernel lacks the opcode (or
# set_waitid(False), driver/uring.pxi), or on the poll backend, the caller
# polls the pidfd and reaps with waitid(2) itself.
#
# The op reaps (WEXITED without WNOWAIT): that is the point, one SQE instead
# of a POLL_ADD plus a waitid syscall.  io_uring/waitid.c writes signo,
# errno, code, pid, uid and status of a struct siginfo at sqe->addr2 in the
# same task-work run that reaps the child, before the CQE is posted (res 0;
# -ECHILD if someone else reaped it first).  The result is kept on the op
# (outcome()) as well as set on the future, so the Process, under its lock,
# can read it from any thread as soon as the CQE is processed -- including
# one the loop's close reaped quietly (quiet()).

cdef extern from *:
    """
    #include <signal.h>
    #include <sys/wait.h>
    /* P_PIDFD (5.4) is missing from older libc headers; its value is ABI. */
    #define RL_P_PIDFD 3
    """
    ctypedef struct siginfo_t:
        int si_signo
        int si_code
        int si_status
        int si_pid
    enum:
        RL_P_PIDFD
        WEXITED


from cpython.pythread cimport PyThread_get_thread_ident


def waitid_in_ring():
    """Whether a new io_uring loop would reap subprocess exits in the ring:
    set_waitid() is on and this kernel's rings have IORING_OP_WAITID."""
    return bool(_use_waitid and _ring_has_op(RL_OP_WAITID))


@cython.final
cdef class WaitidOp(Op):
    cdef siginfo_t info
    cdef int res
    cdef bint done

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        # waitid.c's prep: len = idtype, fd = id, file_index = options,
        # addr2 = infop; addr, buf_index, addr3, waitid_flags must be 0
        # (rl_get_sqe zeroes the SQE).
        sqe.opcode = RL_OP_WAITID
        sqe.fd = self.fd
        sqe.len = RL_P_PIDFD
        sqe.file_index = WEXITED
        sqe.addr2 = <uint64_t><uintptr_t>&self.info
        return 0

    cdef int attempt(self) except? -1:
        return -errno_EOPNOTSUPP    # io_uring only (_waitid_start)

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.res = res
        self.done = True
        return Op.complete(self, res, flags)

    cdef int quiet(self, int res, uint32_t flags) except -1:
        # The loop is closing: no callback runs, but a child the ring reaped
        # keeps its status here for the Process.
        self.res = res
        self.done = True
        return 0

    def outcome(self):
        """None while in flight, else (res, si_code, si_status): res 0 means
        the ring reaped the child; -errno otherwise (-ECHILD: reaped by
        someone else; -ECANCELED: not reaped, the ring gave up on it, as it
        does for an op whose ring closed without a final completion)."""
        cdef Driver drv
        if not self.done:
            drv = self.loop._driver if self.loop is not None else None
            if drv is None or not drv.kernel_open():
                # Torn down without a final CQE (leaked op; or never
                # submitted): the ring's exit cancels a waitid that is
                # still armed.
                return (-errno_ECANCELED, 0, 0)
            return None
        return (self.res, self.info.si_code, self.info.si_status)

    def reap_here(self):
        """Process the ring's completions now if this op is still in flight
        and this is its loop's thread: a blocking wait() there (a callback
        calling Process.wait()) would otherwise wait for a CQE only this
        thread can take -- a DEFER_TASKRUN ring reaps the child in any
        enter with GETEVENTS (a flush()), and the CQE waits in the CQ for
        the next iteration.  Completions run re-entrantly, as get_sqe's
        SQ-full path runs them.  True if it looked."""
        cdef Driver drv
        if self.done or self.loop is None or self.loop._thread_id != PyThread_get_thread_ident():
            return False
        drv = self.loop._driver
        if drv is None or not drv.kernel_open():
            return False
        drv.reap_now()
        return True


cdef object _waitid_start(LoopCore loop, int pidfd):
    # (op, future), or None where the ring cannot do it.
    cdef WaitidOp op
    if loop._driver is None or not loop._driver.waitid_ring():
        return None
    op = WaitidOp.__new__(WaitidOp)
    fut = loop._new_future()
    op.bind(loop, fut, pidfd)
    loop._driver.start(op)
    return op, fut
