# Receive buffers lent per read.
#
# A recv that cannot use the kernel's buffer ring -- every read on the poll
# backend, io_uring's single shot after ENOBUFS, the runtime API's
# connections in the same cases -- borrows a buffer here until its bytes are
# copied out.  One pool per loop (per worker environment for ConnCtx), not a
# buffer per connection: idle connections hold none (64 KiB each for 4,000
# bulk connections was 250 MiB), and the last one returned is the next one
# taken, still in cache.
#
# The pool keeps up to KEEP free buffers: it must cover one busy iteration's
# reads (with 16 kept, a 64-connection 100 KiB echo spent its time in
# malloc's page faults).  trim(), called by the loop before it waits, frees
# once a second what no read needed since the last trim, so an idle loop
# keeps IDLE_KEEP.


@cython.final
cdef class BufPool:

    def __cinit__(self, Py_ssize_t size, int keep=64, int idle_keep=4):
        self.size = size
        self.keep = keep
        self.idle_keep = idle_keep
        self.free = <char**>PyMem_Malloc(keep * sizeof(char*))
        if self.free == NULL:
            raise MemoryError()

    def __dealloc__(self):
        self.release()
        PyMem_Free(self.free)
        self.free = NULL

    cdef char *take(self) except NULL:
        cdef char *buf
        if self.nfree:
            self.nfree -= 1
            if self.nfree < self.low:
                self.low = self.nfree
            _live.rbufs_out += 1
            return self.free[self.nfree]
        buf = <char*>PyMem_Malloc(self.size)
        if buf == NULL:
            raise MemoryError()
        _live.rbufs_out += 1
        return buf

    cdef void give(self, char *buf) noexcept:
        _live.rbufs_out -= 1
        if self.free == NULL or self.nfree == self.keep:
            PyMem_Free(buf)
            return
        self.free[self.nfree] = buf
        self.nfree += 1

    cdef int64_t trim(self, int64_t now_ns) noexcept:
        """Returns the ns until the next trim is due, or -1 while nothing
        is left to trim."""
        cdef int n
        if now_ns >= self.trim_ns:
            n = min(self.low, self.nfree - self.idle_keep)
            while n > 0:
                self.nfree -= 1
                PyMem_Free(self.free[self.nfree])
                n -= 1
            self.low = self.nfree
            self.trim_ns = now_ns + 1000000000
        if self.nfree <= self.idle_keep:
            return -1
        return self.trim_ns - now_ns

    cdef void release(self) noexcept:
        """Free every buffer kept (none of them is in use: borrowers hold
        theirs until their read completes)."""
        if self.free != NULL:
            while self.nfree > 0:
                self.nfree -= 1
                PyMem_Free(self.free[self.nfree])
