# Test-only entry points (issue 14): the fuzzers in tests/fuzz/ and their
# regression tests in tests/test_fuzz_regressions.py reach C-level code
# through these.  Nothing in ringline calls them; they are not API and may
# change with the code they expose.
#
# Inputs that a production caller keeps in a larger buffer (a sockaddr in a
# sockaddr_storage, a recvmsg_out in a ring buffer) are copied here so that
# they END at a PROT_NONE page: a read one byte past what the caller said
# is there faults at once, without a sanitizer build.  In an ASan build they
# go in a malloc block of exactly their size instead: its redzone catches
# the same read, and the block is aligned as the kernel's buffers are (a
# page-end copy is not, and UBSan would report reads the placement causes).

cdef extern from *:
    """
    #include <sys/mman.h>
    #include <unistd.h>
    #ifndef IORING_REGISTER_PBUF_STATUS
    #define IORING_REGISTER_PBUF_STATUS 26
    #endif
    struct rl_fz_buf_status { uint32_t buf_group, head, resv[8]; };

    /* n bytes of src, copied to end right before a PROT_NONE page. */
    static char *rl_fz_guarded(const char *src, size_t n, void **base, size_t *maplen)
    {
    #if defined(__SANITIZE_ADDRESS__)
        char *b = malloc(n ? n : 1);
        if (b == NULL) return NULL;
        if (n) memcpy(b, src, n);
        *base = b;
        *maplen = 0;
        return b;
    #else
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        size_t pages = (n + pg - 1) / pg + 1;
        char *m = mmap(NULL, pages * pg, PROT_READ | PROT_WRITE,
                       MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (m == MAP_FAILED) return NULL;
        if (mprotect(m + (pages - 1) * pg, pg, PROT_NONE) != 0) {
            munmap(m, pages * pg);
            return NULL;
        }
        *base = m;
        *maplen = pages * pg;
        char *p = m + (pages - 1) * pg - n;
        if (n) memcpy(p, src, n);
        return p;
    #endif
    }
    static void rl_fz_unmap(void *base, size_t maplen)
    {
        if (maplen == 0) free(base);        /* the ASan build's malloc copy */
        else munmap(base, maplen);
    }

    static int rl_fz_pbuf_head(int ring_fd, unsigned bgid, unsigned *head)
    {
        struct rl_fz_buf_status st;
        memset(&st, 0, sizeof(st));
        st.buf_group = bgid;
        if (rl_register(ring_fd, IORING_REGISTER_PBUF_STATUS, &st, 1) < 0) return -errno;
        *head = st.head;
        return 0;
    }
    """
    char *rl_fz_guarded(const char *src, size_t n, void **base, size_t *maplen)
    void rl_fz_unmap(void *base, size_t maplen)
    int rl_fz_pbuf_head(int ring_fd, unsigned bgid, unsigned *head)


cdef class _FzGuarded:
    """bytes copied to end at an unreadable page; freed with the object."""
    cdef char *ptr
    cdef Py_ssize_t n
    cdef void *base
    cdef size_t maplen

    def __cinit__(self, bytes data):
        self.n = len(data)
        self.ptr = rl_fz_guarded(PyBytes_AS_STRING(data), <size_t>self.n,
                                 &self.base, &self.maplen)
        if self.ptr == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.ptr != NULL:
            rl_fz_unmap(self.base, self.maplen)
            self.ptr = NULL


def _fuzz_decode_sockaddr(bytes raw, sock=None, salen=None):
    """sockaddr -> Python address, as accept/recvfrom/recvmsg decode one:
    raw is the sockaddr (ending at an unreadable page), salen the length the
    kernel reported (default len(raw); a larger one is what a truncated
    name gives).  sock: the socket the address came from, or None."""
    cdef _FzGuarded g = _FzGuarded(raw)
    cdef socklen_t n = len(raw) if salen is None else salen
    if n > <socklen_t>len(raw):
        # The caller's buffer is what it is: a longer reported length
        # must be clamped by whoever owns the buffer (as _peer's callers do).
        n = <socklen_t>len(raw)
    return _decode_sockaddr(<sockaddr*>g.ptr, n, sock)


def _fuzz_encode_sockaddr(int family, address):
    """Python address -> sockaddr bytes, or None where the core leaves the
    address to the socket module."""
    cdef sockaddr_storage ss
    cdef socklen_t sl = 0
    if not _encode_sockaddr(family, address, &ss, &sl):
        return None
    if sl > sizeof(sockaddr_storage):
        raise AssertionError(f"encoded length {sl} > sockaddr_storage")
    return PyBytes_FromStringAndSize(<char*>&ss, sl)


def _fuzz_recvmsg_out(bytes buf, Py_ssize_t res, unsigned name_space=sizeof(sockaddr_storage),
                      unsigned ctrl_space=0, peers=None):
    """Parse one multishot-RECVMSG ring buffer (io_uring_recvmsg_out, name,
    control, payload) as DgramRecvOp does: buf is the whole ring buffer,
    res the CQE's result.  Returns (payload, address, flags) or raises
    ValueError for a layout that cannot be.  peers: a _FzPeers, to decode
    through a datagram endpoint's peer-address cache (DgramCore._peer)."""
    cdef _FzGuarded g = _FzGuarded(buf)
    cdef char *payload
    cdef Py_ssize_t plen
    cdef sockaddr *name
    cdef socklen_t namelen
    cdef uint32_t flags
    _recvmsg_out_parse(g.ptr, len(buf), res, name_space, ctrl_space,
                       &payload, &plen, &name, &namelen, &flags)
    data = PyBytes_FromStringAndSize(payload, plen)
    if peers is not None:
        addr = (<_FzPeers?>peers).core._peer(name, namelen)
    else:
        addr = _decode_sockaddr(name, namelen, None)
    return data, addr, flags


cdef class _FzPeers:
    """A datagram endpoint's peer-address cache, without an endpoint."""
    cdef DgramCore core

    def __cinit__(self, sock=None):
        self.core = DgramCore.__new__(DgramCore)
        self.core.sock = sock

    def known(self, addr):
        """The sockaddr bytes _peer stored for an address tuple it handed
        out (what sendto() back to it uses), else None."""
        cdef socklen_t sl = 0
        cdef sockaddr *sa = self.core._known(addr, &sl)
        if sa == NULL:
            return None
        return PyBytes_FromStringAndSize(<char*>sa, sl)


def _fuzz_bufpool(bytes ops, Py_ssize_t size=64, int keep=4, int idle_keep=1):
    """Drive a BufPool with a byte string of operations (take, give, trim
    at an advancing clock, release) and check its bookkeeping after each:
    a buffer is never handed out twice, a held buffer's bytes are never
    touched by the pool, the free list stays within keep.  Returns
    (takes, gives, trims, max_held)."""
    cdef BufPool pool = BufPool(size, keep, idle_keep)
    cdef char *p
    cdef Py_ssize_t i, j, k
    cdef unsigned char b, tag
    cdef int64_t now = 0, due
    cdef list held = []            # [(address, tag)]
    cdef set out = set()
    cdef Py_ssize_t takes = 0, gives = 0, trims = 0, max_held = 0
    if size < 1 or keep < 1 or idle_keep < 0:
        raise ValueError("size and keep must be >= 1, idle_keep >= 0")
    try:
        for i in range(len(ops)):
            b = ops[i]
            if b % 4 < 2 or not held:
                p = pool.take()
                takes += 1
                if <uintptr_t>p in out:
                    raise AssertionError("BufPool handed out a buffer still in use")
                tag = <unsigned char>(takes & 0xFF)
                memset(p, tag, size)
                out.add(<uintptr_t>p)
                held.append((<uintptr_t>p, tag))
                if len(held) > max_held:
                    max_held = len(held)
            elif b % 4 == 2:
                j = (b >> 2) % len(held)
                addr, tag = held.pop(j)
                p = <char*><uintptr_t>addr
                for k in range(size):
                    if <unsigned char>p[k] != tag:
                        raise AssertionError("a held buffer was written by the pool")
                out.discard(addr)
                pool.give(p)
                gives += 1
            else:
                now += <int64_t>(b >> 2) * 50000000  # 0 .. 3.15 s
                due = pool.trim(now)
                trims += 1
                if due != -1 and not 0 < due <= 1000000000:
                    raise AssertionError(f"trim() said the next trim is due in {due} ns")
                if due == -1 and pool.nfree > pool.idle_keep:
                    raise AssertionError("trim() said nothing is left to trim")
            if not 0 <= pool.nfree <= pool.keep or pool.low > pool.nfree:
                raise AssertionError(f"free list out of bounds: nfree={pool.nfree} "
                                     f"low={pool.low} keep={pool.keep}")
    finally:
        for addr, tag in held:
            pool.give(<char*><uintptr_t>addr)
        pool.release()
    if pool.nfree != 0:
        raise AssertionError("release() left buffers on the free list")
    return takes, gives, trims, max_held


def _fuzz_pbuf_status(loop):
    """The stream provided-buffer ring of an io_uring loop, from the
    kernel's side: {'entries', 'head' (kernel), 'tail' (ours),
    'in_kernel' (buffers the kernel may still pick), 'lent' (held by
    ConnCtx views)}; None without a ring.  With nothing in use in user
    space, in_kernel == entries: a buffer neither in the ring nor held
    anywhere is lost."""
    cdef UringDriver d
    cdef unsigned head = 0
    cdef int r
    cdef Driver drv = (<LoopCore?>loop)._driver
    if drv is None or not drv.provided_buffers:
        return None
    d = <UringDriver?>drv           # the ring's fd: only io_uring has provided buffers
    if not d.ring_open:
        return None
    r = rl_fz_pbuf_head(d.ring.fd, drv.pbuf.bgid, &head)
    if r < 0:
        raise OSError(-r, "IORING_REGISTER_PBUF_STATUS: " + os.strerror(-r))
    return {'entries': drv.pbuf.entries, 'head': head & 0xFFFF, 'tail': drv.pbuf.tail,
            'in_kernel': (drv.pbuf.tail - head) & 0xFFFF, 'lent': drv.pbuf_out}
