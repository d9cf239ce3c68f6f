# File operations (issue 7): OPENAT, READ, WRITE, FSYNC, STATX, RENAMEAT,
# UNLINKAT, MKDIRAT, CLOSE, SPLICE, FTRUNCATE as driver ops.
#
# On the io_uring backend each is one SQE (a read or write larger than the
# kernel takes at once, or cut short, is resubmitted from complete() until
# done or EOF).  Regular files are always "ready" for epoll, so on the poll
# backend -- and for an opcode this kernel's ring lacks -- the same op object
# runs on a bounded thread pool instead: attempt() does the blocking syscall
# with the GIL released on a pool thread, and complete() runs on the loop
# thread via call_soon_threadsafe.  One op class per operation, one set of
# buffer and error rules, two ways of running it.
#
# Buffers: an op holds what the kernel (or the pool thread) touches -- the
# path bytes, the caller's exported buffer (PyObject_GetBuffer), its own
# bytes object, the statx struct -- until its final completion; the driver
# (or the pool job) holds the op.  A cancelled future only asks the ring to
# cancel (ASYNC_CANCEL, via Op.__call__); the buffer is released when the
# kernel says the op is over.  Errors are the OSError subclass for errno,
# with the file name(s), as os.open()/os.stat() give.

cdef extern from *:
    """
    #include <fcntl.h>
    #include <stdio.h>
    #include <sys/stat.h>
    #include <sys/types.h>
    #include <unistd.h>
    #ifndef AT_EMPTY_PATH
    #define AT_EMPTY_PATH 0x1000
    #endif
    #ifndef STATX_BASIC_STATS
    #define STATX_BASIC_STATS 0x7ffU
    #endif
    #ifndef STATX_BTIME
    #define STATX_BTIME 0x800U
    #endif
    #ifndef STATX_DIOALIGN
    #define STATX_DIOALIGN 0x2000U
    #endif
    /* Field access through helpers, so an older struct statx in the
       installed headers (no stx_dio_*) still compiles. */
    typedef struct statx rl_statx_t;
    static inline long long rl_stx_sec(const struct statx_timestamp *t) { return t->tv_sec; }
    static inline unsigned rl_stx_nsec(const struct statx_timestamp *t) { return t->tv_nsec; }
    static inline unsigned rl_stx_dio_mem(const struct statx *s) {
    #ifdef STATX_DIOALIGN
        return s->stx_dio_mem_align;
    #else
        return 0;
    #endif
    }
    static inline unsigned rl_stx_dio_off(const struct statx *s) {
    #ifdef STATX_DIOALIGN
        return s->stx_dio_offset_align;
    #else
        return 0;
    #endif
    }
    static inline int rl_statx(int dfd, const char *path, int flags, unsigned mask, struct statx *b) {
        return statx(dfd, path, flags, mask, b);
    }
    static inline int rl_renameat2(int ofd, const char *o, int nfd, const char *n, unsigned flags) {
        return flags ? renameat2(ofd, o, nfd, n, flags) : renameat(ofd, o, nfd, n);
    }
    static inline int rl_openat(int dfd, const char *path, int flags, unsigned mode) {
        return openat(dfd, path, flags, (mode_t)mode);
    }
    static inline ssize_t rl_splice(int fd_in, long long off_in, int fd_out, long long off_out,
                                    size_t len, unsigned flags) {
        loff_t a = off_in, b = off_out;
        return splice(fd_in, off_in < 0 ? NULL : &a, fd_out, off_out < 0 ? NULL : &b, len, flags);
    }
    """
    ctypedef struct statx_timestamp "struct statx_timestamp":
        pass
    ctypedef struct rl_statx_t:
        uint32_t stx_mask
        uint32_t stx_blksize
        uint64_t stx_attributes
        uint32_t stx_nlink
        uint32_t stx_uid
        uint32_t stx_gid
        uint16_t stx_mode
        uint64_t stx_ino
        uint64_t stx_size
        uint64_t stx_blocks
        statx_timestamp stx_atime
        statx_timestamp stx_btime
        statx_timestamp stx_ctime
        statx_timestamp stx_mtime
        uint32_t stx_rdev_major
        uint32_t stx_rdev_minor
        uint32_t stx_dev_major
        uint32_t stx_dev_minor
    long long rl_stx_sec(const statx_timestamp *t) nogil
    unsigned rl_stx_nsec(const statx_timestamp *t) nogil
    unsigned rl_stx_dio_mem(const rl_statx_t *s) nogil
    unsigned rl_stx_dio_off(const rl_statx_t *s) nogil
    int rl_statx(int dfd, const char *path, int flags, unsigned mask, rl_statx_t *b) nogil
    int rl_renameat2(int ofd, const char *o, int nfd, const char *n, unsigned flags) nogil
    int rl_openat(int dfd, const char *path, int flags, unsigned mode) nogil
    ssize_t rl_splice(int fd_in, long long off_in, int fd_out, long long off_out,
                      size_t len, unsigned flags) nogil
    ssize_t pread(int fd, void *buf, size_t n, int64_t off) nogil
    ssize_t pwrite(int fd, const void *buf, size_t n, int64_t off) nogil
    int fsync(int fd) nogil
    int fdatasync(int fd) nogil
    int ftruncate(int fd, int64_t length) nogil
    int unlinkat(int dfd, const char *path, int flags) nogil
    int mkdirat(int dfd, const char *path, unsigned mode) nogil
    enum:
        AT_FDCWD
        AT_REMOVEDIR
        AT_EMPTY_PATH
        AT_SYMLINK_NOFOLLOW
        STATX_BASIC_STATS
        STATX_BTIME
        STATX_DIOALIGN
        O_CLOEXEC


cdef enum:
    OP_THREAD = 3           # running on the file pool, not in a driver

# At most this much per read/write syscall or SQE (the kernel moves at most
# 2 GiB - 4 KiB at once, and a CQE's result is an int).
cdef Py_ssize_t _FILE_CHUNK = 1 << 30


def _fs_set_chunk(Py_ssize_t n):
    '''Per-op read/write size cap (tests shrink it to exercise the
    continuation of large requests); returns the previous value.'''
    global _FILE_CHUNK
    if n < 1:
        raise ValueError("chunk must be positive")
    old = _FILE_CHUNK
    _FILE_CHUNK = n
    return old


# ---- which way an op runs -------------------------------------------------

cdef bint _force_threads = False


cdef inline bint _in_ring(LoopCore loop, int opcode) except -1:
    # The ring's opcodes are probed once per process (driver/uring.pxi).
    if _force_threads or loop._driver is None or not loop._driver.file_ops_in_ring:
        return False
    return _ring_has_op(opcode)


def fs_ring_opcode(loop, int opcode):
    """Whether a file op of this opcode would run in ``loop``'s ring (else
    on the file thread pool)."""
    return _in_ring(<LoopCore?>loop, opcode)


def fs_force_threads(bint on):
    """Run file ops on the thread pool even on io_uring (for tests);
    returns the previous setting."""
    global _force_threads
    old = _force_threads
    _force_threads = on
    return old


_fs_pool = None
_fs_pool_lock = None
_fs_threads = max(4, min(16, (os.cpu_count() or 1) * 4))


def fs_set_threads(int n):
    """Size of the file thread pool (the poll backend's file I/O); takes
    effect for a pool created after the call.  Returns the previous size."""
    global _fs_threads
    if n < 1:
        raise ValueError("the file thread pool needs at least one thread")
    old = _fs_threads
    _fs_threads = n
    return old


def _fs_pool_after_fork():
    global _fs_pool
    _fs_pool = None


os.register_at_fork(after_in_child=_fs_pool_after_fork)


cdef object _get_fs_pool():
    global _fs_pool, _fs_pool_lock
    if _fs_pool is None:
        import concurrent.futures, threading
        if _fs_pool_lock is None:
            _fs_pool_lock = threading.Lock()
        with _fs_pool_lock:
            if _fs_pool is None:
                _fs_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=_fs_threads, thread_name_prefix="ringline-fs")
    return _fs_pool


def _fs_thread_job(FileOp op):
    # On a pool thread: the blocking syscall (GIL released inside attempt).
    cdef int res
    try:
        res = op.attempt()
    except BaseException as exc:
        op.exc = exc
        res = -errno_mod.EIO
    try:
        op.loop.call_soon_threadsafe(_fs_thread_done, op, res)
    except RuntimeError:
        # The loop closed meanwhile: nobody waits for the result.  An fd
        # that open() produced must not leak.
        op.orphaned(res)


def _fs_thread_done(FileOp op, int res):
    op.state = OP_IDLE
    if op.exc is not None:
        exc = op.exc
        op.exc = None
        op.release()
        fut = op.fut
        op.fut = None
        if fut is not None and not fut.done():
            fut.remove_done_callback(op)
            fut.set_exception(exc)
        return
    op.complete(res, 0)


cdef int _fstart(FileOp op) except -1:
    """Start (or restart, for the next chunk) a file op its chosen way."""
    if op.threaded:
        if op.state != OP_IDLE:
            raise RuntimeError(f"{op!r} is already in flight")
        op.state = OP_THREAD
        try:
            _get_fs_pool().submit(_fs_thread_job, op)
        except BaseException:
            op.state = OP_IDLE
            raise
        return 0
    op.loop._driver.start(op)
    return 0


cdef object _path_bytes(object path):
    """A path (str, bytes, os.PathLike) as NUL-free bytes, as os functions
    take it."""
    b = os.fsencode(path)
    if b'\0' in b:
        raise ValueError("embedded null byte")
    return b


# ---- the op classes -------------------------------------------------------

cdef class FileOp(Op):
    cdef bint threaded
    cdef int opcode
    cdef object fname          # for error messages, as the caller gave it
    cdef object fname2
    cdef object exc            # an exception raised on the pool thread

    cdef int release(self) except -1:
        return 0

    cdef int orphaned(self, int res) except -1:
        # Completion nobody will see (loop gone): free what needs freeing.
        return 0

    cdef int fail(self, int err) except -1:
        cdef object fut = self.fut
        self.fut = None
        if fut is None or fut.done():
            return 0
        fut.remove_done_callback(self)
        if err == errno_ECANCELED:
            fut.cancel()
            return 0
        if self.fname2 is not None:
            exc = OSError(err, os.strerror(err), self.fname, None, self.fname2)
        elif self.fname is not None:
            exc = OSError(err, os.strerror(err), self.fname)
        else:
            exc = OSError(err, os.strerror(err))
        fut.set_exception(exc)
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        self.release()
        if res < 0:
            return self.fail(-res)
        return self.finish(res)

    def __repr__(self):
        how = 'thread' if self.threaded else 'ring'
        return f'<{type(self).__name__} fd={self.fd} state={self.state} via={how}>'


cdef inline int _bind_file_op(FileOp op, LoopCore loop, object fut, int fd, int opcode,
                              object fname, object fname2) except -1:
    loop._check_closed_c()
    op.opcode = opcode
    op.threaded = not _in_ring(loop, opcode)
    op.fname = fname
    op.fname2 = fname2
    op.bind(loop, fut, fd)
    return 0


@cython.final
cdef class OpenOp(FileOp):
    cdef object path
    cdef int dirfd
    cdef int flags
    cdef unsigned mode

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_OPENAT
        sqe.fd = self.dirfd
        sqe.addr = <uint64_t><uintptr_t>PyBytes_AS_STRING(self.path)
        sqe.len = self.mode
        sqe.open_flags = <uint32_t>self.flags
        return 0

    cdef int attempt(self) except? -1:
        cdef const char *p = PyBytes_AS_STRING(self.path)
        cdef int r
        with nogil:
            r = rl_openat(self.dirfd, p, self.flags, self.mode)
        return r if r >= 0 else -errno

    cdef int orphaned(self, int res) except -1:
        if res >= 0:
            close(res)
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res >= 0 and (self.fut is None or self.fut.done()):
            # Opened after the caller gave up: nobody owns this fd.
            close(res)
            self.fut = None
            return 0
        return FileOp.complete(self, res, flags)


# read: into the op's own bytes object (shrunk in place at the end, as
# RecvOp does) or into the caller's buffer (exported until the final
# completion).  `fill`: a request larger than one op may move (_FILE_CHUNK)
# goes on from where the last op stopped, as long as each op moved all it
# was asked for: a regular file's short read means EOF.  A pipe or tty
# returns what it has (fill off).
@cython.final
cdef class ReadOp(FileOp):
    cdef PyObject *own          # our bytes object (refcount 1), or NULL
    cdef Py_buffer view
    cdef bint has_view
    cdef char *base
    cdef Py_ssize_t nbytes
    cdef Py_ssize_t done
    cdef int64_t offset         # -1: the file's own position
    cdef bint fill
    cdef Py_ssize_t req         # what the op in flight was asked for

    cdef int alloc(self, Py_ssize_t n) except -1:
        data = PyBytes_FromStringAndSize(NULL, n)
        Py_INCREF(data)
        self.own = <PyObject*>data
        self.base = PyBytes_AS_STRING(data)
        self.nbytes = n
        return 0

    cdef int set_buffer(self, object buf, Py_ssize_t n) except -1:
        PyObject_GetBuffer(buf, &self.view, PyBUF_WRITABLE)
        self.has_view = True
        if n < 0 or n > self.view.len:
            n = self.view.len
        self.base = <char*>self.view.buf
        self.nbytes = n
        return 0

    cdef inline Py_ssize_t chunk(self):
        return min(self.nbytes - self.done, _FILE_CHUNK)

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        self.req = self.chunk()
        sqe.opcode = IORING_OP_READ
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>(self.base + self.done)
        sqe.len = <uint32_t>self.req
        sqe.off = <uint64_t>(self.offset + self.done) if self.offset >= 0 else <uint64_t>(-1)
        return 0

    cdef int attempt(self) except? -1:
        cdef char *p = self.base + self.done
        cdef size_t n = <size_t>self.chunk()
        cdef int64_t off = self.offset + self.done if self.offset >= 0 else -1
        cdef ssize_t r
        self.req = <Py_ssize_t>n
        with nogil:
            if off >= 0:
                r = pread(self.fd, p, n, off)
            else:
                r = read(self.fd, p, n)
        return <int>r if r >= 0 else -errno

    cdef int release(self) except -1:
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        return 0

    cdef object take(self):
        cdef object result
        if self.done != self.nbytes:
            if _PyBytes_Resize(&self.own, self.done) < 0:
                self.own = NULL
                raise MemoryError()
        result = <object>self.own
        Py_DECREF(result)
        self.own = NULL
        return result

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef bint cancelled = self.fut is None or self.fut.done()
        if res > 0:
            RL_KERNEL_WROTE(self.base + self.done, res)
            self.done += res
            if (self.fill and not cancelled and self.done < self.nbytes
                    and res == self.req):
                _fstart(self)       # the rest, from where this one stopped
                return 0
        elif res == -errno_EINTR and not cancelled:
            _fstart(self)
            return 0
        self.release()
        if res < 0 and (self.done == 0 or res == -errno_ECANCELED):
            if self.own != NULL:
                Py_XDECREF(self.own)
                self.own = NULL
            return self.fail(-res)
        if cancelled:
            self.fut = None
            return 0
        if self.own != NULL:
            return self.finish(self.take())
        return self.finish(self.done)

    def __dealloc__(self):
        if self.own != NULL:
            Py_XDECREF(self.own)
            self.own = NULL
        if self.has_view:
            PyBuffer_Release(&self.view)


# write: all of the buffer (resubmitting after a short write), exported
# until the final completion.
@cython.final
cdef class WriteOp(FileOp):
    cdef Py_buffer view
    cdef bint has_view
    cdef Py_ssize_t done
    cdef int64_t offset         # -1: the file's own position (O_APPEND: the end)

    cdef int set_buffer(self, object data) except -1:
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.has_view = True
        return 0

    cdef inline Py_ssize_t chunk(self):
        return min(self.view.len - self.done, _FILE_CHUNK)

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_WRITE
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>(<char*>self.view.buf + self.done)
        sqe.len = <uint32_t>self.chunk()
        sqe.off = <uint64_t>(self.offset + self.done) if self.offset >= 0 else <uint64_t>(-1)
        return 0

    cdef int attempt(self) except? -1:
        cdef const char *p = <char*>self.view.buf + self.done
        cdef size_t n = <size_t>self.chunk()
        cdef int64_t off = self.offset + self.done if self.offset >= 0 else -1
        cdef ssize_t r
        with nogil:
            if off >= 0:
                r = pwrite(self.fd, p, n, off)
            else:
                r = write(self.fd, p, n)
        return <int>r if r >= 0 else -errno

    cdef int release(self) except -1:
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        return 0

    cdef int complete(self, int res, uint32_t flags) except -1:
        cdef bint cancelled = self.fut is None or self.fut.done()
        if res > 0:
            self.done += res
            if not cancelled and self.done < self.view.len:
                _fstart(self)
                return 0
        elif res == -errno_EINTR and not cancelled:
            _fstart(self)
            return 0
        self.release()
        if res < 0 and (self.done == 0 or res == -errno_ECANCELED):
            return self.fail(-res)
        if cancelled:
            self.fut = None
            return 0
        return self.finish(self.done)

    def __dealloc__(self):
        if self.has_view:
            PyBuffer_Release(&self.view)


@cython.final
cdef class FsyncOp(FileOp):
    cdef bint datasync

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_FSYNC
        sqe.fd = self.fd
        sqe.fsync_flags = IORING_FSYNC_DATASYNC if self.datasync else 0
        return 0

    cdef int attempt(self) except? -1:
        cdef int r
        with nogil:
            r = fdatasync(self.fd) if self.datasync else fsync(self.fd)
        return r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0:
            return self.fail(-res)
        return self.finish(None)


@cython.final
cdef class FtruncateOp(FileOp):
    cdef int64_t length

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = RL_OP_FTRUNCATE
        sqe.fd = self.fd
        sqe.off = <uint64_t>self.length
        return 0

    cdef int attempt(self) except? -1:
        cdef int r
        with nogil:
            r = ftruncate(self.fd, self.length)
        return r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0:
            return self.fail(-res)
        return self.finish(None)


cdef object _stat_result(rl_statx_t *s):
    cdef long long asec = rl_stx_sec(&s.stx_atime)
    cdef long long msec = rl_stx_sec(&s.stx_mtime)
    cdef long long csec = rl_stx_sec(&s.stx_ctime)
    cdef unsigned ans = rl_stx_nsec(&s.stx_atime)
    cdef unsigned mns = rl_stx_nsec(&s.stx_mtime)
    cdef unsigned cns = rl_stx_nsec(&s.stx_ctime)
    return os.stat_result(
        (s.stx_mode, s.stx_ino, os.makedev(s.stx_dev_major, s.stx_dev_minor),
         s.stx_nlink, s.stx_uid, s.stx_gid, s.stx_size, asec, msec, csec),
        {'st_atime': asec + ans * 1e-9, 'st_mtime': msec + mns * 1e-9,
         'st_ctime': csec + cns * 1e-9,
         'st_atime_ns': asec * 1000000000 + ans, 'st_mtime_ns': msec * 1000000000 + mns,
         'st_ctime_ns': csec * 1000000000 + cns,
         'st_blksize': s.stx_blksize, 'st_blocks': s.stx_blocks,
         'st_rdev': os.makedev(s.stx_rdev_major, s.stx_rdev_minor)})


# statx(path) or, with AT_EMPTY_PATH and an fd, fstat.  kind 0: an
# os.stat_result; kind 1: direct-I/O alignment (mem, offset), or None when
# the kernel or the file system does not say; kind 2: birth time (float) or None.
@cython.final
cdef class StatxOp(FileOp):
    cdef object path
    cdef int flags
    cdef unsigned mask
    cdef int kind
    cdef rl_statx_t buf

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_STATX
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>PyBytes_AS_STRING(self.path)
        sqe.len = self.mask
        sqe.off = <uint64_t><uintptr_t>&self.buf
        sqe.statx_flags = <uint32_t>self.flags
        return 0

    cdef int attempt(self) except? -1:
        cdef const char *p = PyBytes_AS_STRING(self.path)
        cdef int r
        with nogil:
            r = rl_statx(self.fd, p, self.flags, self.mask, &self.buf)
        return r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0:
            return self.fail(-res)
        if self.kind == 1:
            if not (self.buf.stx_mask & STATX_DIOALIGN) or rl_stx_dio_off(&self.buf) == 0:
                return self.finish(None)
            return self.finish((rl_stx_dio_mem(&self.buf), rl_stx_dio_off(&self.buf)))
        if self.kind == 2:
            if not (self.buf.stx_mask & STATX_BTIME):
                return self.finish(None)
            return self.finish(rl_stx_sec(&self.buf.stx_btime) + rl_stx_nsec(&self.buf.stx_btime) * 1e-9)
        return self.finish(_stat_result(&self.buf))


# renameat2 / unlinkat / mkdirat: paths held until completion.
@cython.final
cdef class PathOp(FileOp):
    cdef object path
    cdef object path2
    cdef int dirfd2
    cdef int flags
    cdef unsigned mode

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = <uint8_t>self.opcode
        sqe.fd = self.fd
        sqe.addr = <uint64_t><uintptr_t>PyBytes_AS_STRING(self.path)
        if self.opcode == IORING_OP_RENAMEAT:
            sqe.len = <uint32_t>self.dirfd2
            sqe.off = <uint64_t><uintptr_t>PyBytes_AS_STRING(self.path2)
            sqe.rename_flags = <uint32_t>self.flags
        elif self.opcode == IORING_OP_UNLINKAT:
            sqe.unlink_flags = <uint32_t>self.flags
        else:
            sqe.len = self.mode
        return 0

    cdef int attempt(self) except? -1:
        cdef const char *p = PyBytes_AS_STRING(self.path)
        cdef const char *p2 = NULL
        cdef int r
        cdef int op = self.opcode
        if op == IORING_OP_RENAMEAT:
            p2 = PyBytes_AS_STRING(self.path2)
        with nogil:
            if op == IORING_OP_RENAMEAT:
                r = rl_renameat2(self.fd, p, self.dirfd2, p2, <unsigned>self.flags)
            elif op == IORING_OP_UNLINKAT:
                r = unlinkat(self.fd, p, self.flags)
            else:
                r = mkdirat(self.fd, p, self.mode)
        return r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0:
            return self.fail(-res)
        return self.finish(None)


@cython.final
cdef class CloseOp(FileOp):

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_CLOSE
        sqe.fd = self.fd
        return 0

    cdef int attempt(self) except? -1:
        cdef int r
        with nogil:
            r = close(self.fd)
        return r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res < 0 and res != -errno_EINTR:
            return self.fail(-res)
        return self.finish(None)


# splice(fd_in at off_in -> fd_out at off_out), one syscall's worth; `link`
# chains the next SQE after this one (IOSQE_IO_LINK), so a file->pipe and a
# pipe->file splice go out in one submission and run back to back.
@cython.final
cdef class SpliceOp(FileOp):
    cdef int fd_in
    cdef int64_t off_in
    cdef int64_t off_out
    cdef uint32_t nbytes
    cdef uint32_t flags
    cdef bint link

    cdef int prep(self, io_uring_sqe *sqe) except -1:
        sqe.opcode = IORING_OP_SPLICE
        sqe.fd = self.fd
        sqe.off = <uint64_t>self.off_out if self.off_out >= 0 else <uint64_t>(-1)
        sqe.splice_off_in = <uint64_t>self.off_in if self.off_in >= 0 else <uint64_t>(-1)
        sqe.splice_fd_in = self.fd_in
        sqe.len = self.nbytes
        sqe.splice_flags = self.flags
        if self.link:
            sqe.flags |= IOSQE_IO_LINK
        return 0

    cdef int attempt(self) except? -1:
        cdef ssize_t r
        with nogil:
            r = rl_splice(self.fd_in, self.off_in, self.fd, self.off_out, self.nbytes, self.flags)
        return <int>r if r >= 0 else -errno

    cdef int complete(self, int res, uint32_t flags) except -1:
        if res == -errno_ECANCELED:
            # Not run: the SQE linked before it came up short or failed (a
            # cancel by the caller leaves the future already cancelled).
            return self.finish(res)
        return FileOp.complete(self, res, flags)


# ---- entry points (fs.py calls these) ---------------------------------------

def fs_open(loop, path, int flags, unsigned mode=0o666, int dirfd=AT_FDCWD, fname=None):
    """Future of the fd of openat(dirfd, path, flags | O_CLOEXEC, mode)."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef OpenOp op = OpenOp.__new__(OpenOp)
    op.path = _path_bytes(path)
    op.dirfd = dirfd
    op.flags = flags | O_CLOEXEC
    op.mode = mode
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, dirfd, IORING_OP_OPENAT, path if fname is None else fname, None)
    _fstart(op)
    return fut


def fs_read(loop, int fd, Py_ssize_t n, int64_t offset=-1, bint fill=True, fname=None):
    """Future of up to n bytes read at offset (-1: the file position)."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef ReadOp op
    if n < 0:
        raise ValueError("read length must not be negative")
    fut = lp._new_future()
    if n == 0:
        fut.set_result(b'')
        return fut
    op = ReadOp.__new__(ReadOp)
    op.alloc(n)
    op.offset = offset
    op.fill = fill
    _bind_file_op(op, lp, fut, fd, IORING_OP_READ, fname, None)
    _fstart(op)
    return fut


def fs_readinto(loop, int fd, buf, int64_t offset=-1, bint fill=True, fname=None,
                Py_ssize_t nbytes=-1):
    """Future of the number of bytes read into buf (its first nbytes)."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef ReadOp op = ReadOp.__new__(ReadOp)
    op.set_buffer(buf, nbytes)
    fut = lp._new_future()
    if op.nbytes == 0:
        op.release()
        fut.set_result(0)
        return fut
    op.offset = offset
    op.fill = fill
    _bind_file_op(op, lp, fut, fd, IORING_OP_READ, fname, None)
    _fstart(op)
    return fut


def fs_write(loop, int fd, data, int64_t offset=-1, fname=None):
    """Future of len(data) once all of it is written at offset (-1: the
    file position)."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef WriteOp op = WriteOp.__new__(WriteOp)
    op.set_buffer(data)
    fut = lp._new_future()
    if op.view.len == 0:
        op.release()
        fut.set_result(0)
        return fut
    op.offset = offset
    _bind_file_op(op, lp, fut, fd, IORING_OP_WRITE, fname, None)
    _fstart(op)
    return fut


def fs_fsync(loop, int fd, bint datasync=False, fname=None):
    cdef LoopCore lp = <LoopCore?>loop
    cdef FsyncOp op = FsyncOp.__new__(FsyncOp)
    op.datasync = datasync
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, fd, IORING_OP_FSYNC, fname, None)
    _fstart(op)
    return fut


def fs_ftruncate(loop, int fd, int64_t length, fname=None):
    cdef LoopCore lp = <LoopCore?>loop
    cdef FtruncateOp op = FtruncateOp.__new__(FtruncateOp)
    if length < 0:
        raise ValueError("negative size value")
    op.length = length
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, fd, RL_OP_FTRUNCATE, fname, None)
    _fstart(op)
    return fut


def fs_statx(loop, path, int dirfd=AT_FDCWD, int flags=0, int kind=0, fname=None):
    """Future of os.stat_result (kind 0), the direct-I/O alignment
    (mem_align, offset_align) or None (kind 1), or the birth time (kind 2).
    With path b'' and flags AT_EMPTY_PATH, dirfd is the file itself."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef StatxOp op = StatxOp.__new__(StatxOp)
    op.path = _path_bytes(path)
    op.flags = flags
    op.kind = kind
    op.mask = STATX_BASIC_STATS | (STATX_DIOALIGN if kind == 1 else 0) | (STATX_BTIME if kind == 2 else 0)
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, dirfd, IORING_OP_STATX,
                  (path if fname is None else fname) if len(op.path) else fname, None)
    _fstart(op)
    return fut


def fs_rename(loop, src, dst, unsigned flags=0, int src_dirfd=AT_FDCWD, int dst_dirfd=AT_FDCWD):
    cdef LoopCore lp = <LoopCore?>loop
    cdef PathOp op = PathOp.__new__(PathOp)
    op.path = _path_bytes(src)
    op.path2 = _path_bytes(dst)
    op.dirfd2 = dst_dirfd
    op.flags = flags
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, src_dirfd, IORING_OP_RENAMEAT, src, dst)
    _fstart(op)
    return fut


def fs_unlink(loop, path, int flags=0, int dirfd=AT_FDCWD):
    """unlinkat(dirfd, path, flags): flags AT_REMOVEDIR removes a directory."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef PathOp op = PathOp.__new__(PathOp)
    op.path = _path_bytes(path)
    op.flags = flags
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, dirfd, IORING_OP_UNLINKAT, path, None)
    _fstart(op)
    return fut


def fs_mkdir(loop, path, unsigned mode=0o777, int dirfd=AT_FDCWD):
    cdef LoopCore lp = <LoopCore?>loop
    cdef PathOp op = PathOp.__new__(PathOp)
    op.path = _path_bytes(path)
    op.mode = mode
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, dirfd, IORING_OP_MKDIRAT, path, None)
    _fstart(op)
    return fut


def fs_close(loop, int fd, fname=None):
    cdef LoopCore lp = <LoopCore?>loop
    cdef CloseOp op = CloseOp.__new__(CloseOp)
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, fd, IORING_OP_CLOSE, fname, None)
    _fstart(op)
    return fut


def fs_splice(loop, int fd_in, int64_t off_in, int fd_out, int64_t off_out,
              uint32_t nbytes, uint32_t flags=0, bint link=False, fname=None):
    """Future of the bytes splice() moved (off -1: a pipe end).  link: the
    next file op started on this loop runs only after this one succeeds
    in full (io_uring only; ignored on the thread pool)."""
    cdef LoopCore lp = <LoopCore?>loop
    cdef SpliceOp op = SpliceOp.__new__(SpliceOp)
    op.fd_in = fd_in
    op.off_in = off_in
    op.off_out = off_out
    op.nbytes = nbytes
    op.flags = flags
    fut = lp._new_future()
    _bind_file_op(op, lp, fut, fd_out, IORING_OP_SPLICE, fname, None)
    op.link = link and not op.threaded
    _fstart(op)
    return fut


def fs_inflight(loop):
    """Ops the loop's driver holds (ring) -- for tests of cancellation."""
    cdef LoopCore lp = <LoopCore?>loop
    return lp._driver.inflight if lp._driver is not None else 0


def fs_splice_pair(loop, int fd_in, int64_t off_in, int pipe_w, int pipe_r, int fd_out,
                   int64_t off_out, uint32_t nbytes, fname=None):
    """(future, future): splice fd_in -> pipe_w linked to pipe_r -> fd_out,
    both in one submission (io_uring only).  The second resolves to
    -ECANCELED when the first moved fewer than nbytes (EOF) or failed."""
    cdef LoopCore lp = <LoopCore?>loop
    if not _in_ring(lp, IORING_OP_SPLICE):
        raise RuntimeError("linked splices need the io_uring backend")
    # Both SQEs must go out in one batch, or the link would end early.
    lp._driver.reserve(2)
    f1 = fs_splice(loop, fd_in, off_in, pipe_w, -1, nbytes, 0, True, fname)
    f2 = fs_splice(loop, pipe_r, -1, fd_out, off_out, nbytes, 0, False, fname)
    return f1, f2


def fs_pool():
    """The bounded thread pool file ops use where the ring is not used."""
    return _get_fs_pool()


def fs_buffer_info(buf, bint writable=False):
    """(address, length) of buf's memory (for direct-I/O alignment checks)."""
    cdef Py_buffer view
    PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    try:
        return <uintptr_t>view.buf, view.len
    finally:
        PyBuffer_Release(&view)
