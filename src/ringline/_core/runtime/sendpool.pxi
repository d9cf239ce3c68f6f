# The send pool: fixed slots send_nowait() copies into, one pool per worker.

class SendPoolExhausted(RuntimeError):
    """send_nowait() found no free slot in the worker's send pool."""


cdef class SendPool:
    """Fixed-size slots for send_nowait() copies, one pool per worker."""

    def __cinit__(self, Py_ssize_t nslots, Py_ssize_t slot_size, MetricsBlock metrics=None):
        cdef Py_ssize_t i
        if nslots <= 0 or slot_size <= 0:
            raise ValueError("send pool needs at least one slot of at least one byte")
        self.nslots = nslots
        self.slot_size = slot_size
        self.mem = NULL
        self.free_stack = <uint32_t*>PyMem_Malloc(nslots * sizeof(uint32_t))
        if self.free_stack == NULL:
            raise MemoryError()
        for i in range(nslots):
            self.free_stack[i] = <uint32_t>(nslots - 1 - i)
        self.nfree = nslots
        self.metrics = metrics

    def __dealloc__(self):
        # Slots still queued belong to connections that keep the pool alive
        # (they reference it), so this runs only when none is in use.
        if self.mem != NULL:
            free_c(self.mem)
        if self.free_stack != NULL:
            PyMem_Free(self.free_stack)

    cdef inline int take(self) except -2:
        if self.nfree == 0:
            return -1
        if self.mem == NULL:
            # One allocation; pages are touched only as slots get used.
            self.mem = <char*>malloc_c(<size_t>self.nslots * <size_t>self.slot_size)
            if self.mem == NULL:
                raise MemoryError()
        self.nfree -= 1
        _live.send_slots += 1
        return <int>self.free_stack[self.nfree]

    cdef inline void give(self, int slot) noexcept:
        self.free_stack[self.nfree] = <uint32_t>slot
        self.nfree += 1
        _live.send_slots -= 1

    cdef inline char *addr(self, int slot) noexcept:
        return self.mem + <size_t>slot * <size_t>self.slot_size

    cdef inline Py_ssize_t slots_for(self, Py_ssize_t n) noexcept:
        # How many slots n bytes take when copied in.
        return (n + self.slot_size - 1) // self.slot_size

    @property
    def in_use(self):
        return self.nslots - self.nfree
