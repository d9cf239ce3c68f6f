# NVMe passthrough (issue 7, point 4): IORING_OP_URING_CMD on a generic
# NVMe character device (/dev/ngXnY).  The NVMe driver takes these only from
# a ring set up with 128-byte SQEs (the 72-byte struct nvme_uring_cmd rides
# in the SQE) and 32-byte CQEs (the command's result dword comes back in
# the big CQE), so such commands get a small ring of their own; the loop
# watches that ring's fd (POLL_ADD in the main ring, epoll on the poll
# backend) and reaps it when it turns readable.  ringline/nvme.py holds the
# futures and keeps each command's buffer alive until its CQE.

cdef extern from *:
    """
    #include <stddef.h>
    #include <sys/ioctl.h>
    #ifndef IORING_SETUP_SQE128
    #define IORING_SETUP_SQE128 (1U << 10)
    #endif
    #ifndef IORING_SETUP_CQE32
    #define IORING_SETUP_CQE32 (1U << 11)
    #endif
    #define RL_OP_URING_CMD 46

    /* struct nvme_uring_cmd (include/uapi/linux/nvme_ioctl.h), 72 bytes. */
    typedef struct rl_nvme_cmd {
        uint8_t opcode, flags;
        uint16_t rsvd1;
        uint32_t nsid, cdw2, cdw3;
        uint64_t metadata, addr;
        uint32_t metadata_len, data_len;
        uint32_t cdw10, cdw11, cdw12, cdw13, cdw14, cdw15;
        uint32_t timeout_ms, rsvd2;
    } rl_nvme_cmd;
    _Static_assert(sizeof(rl_nvme_cmd) == 72, "struct nvme_uring_cmd is 72 bytes");
    #define RL_NVME_URING_CMD_IO _IOWR('N', 0x80, rl_nvme_cmd)
    #define RL_NVME_IOCTL_ID _IO('N', 0x40)

    #if defined(__has_include)
    #  if __has_include(<linux/nvme_ioctl.h>)
    #    include <linux/nvme_ioctl.h>
    #    define RL_HAVE_NVME_IOCTL_H 1
    #  endif
    #endif
    #ifdef RL_HAVE_NVME_IOCTL_H
    /* Our layout must be the kernel's, field by field. */
    _Static_assert(sizeof(struct nvme_uring_cmd) == sizeof(rl_nvme_cmd), "size");
    _Static_assert(offsetof(struct nvme_uring_cmd, nsid) == offsetof(rl_nvme_cmd, nsid), "nsid");
    _Static_assert(offsetof(struct nvme_uring_cmd, addr) == offsetof(rl_nvme_cmd, addr), "addr");
    _Static_assert(offsetof(struct nvme_uring_cmd, data_len) == offsetof(rl_nvme_cmd, data_len), "data_len");
    _Static_assert(offsetof(struct nvme_uring_cmd, cdw10) == offsetof(rl_nvme_cmd, cdw10), "cdw10");
    _Static_assert(offsetof(struct nvme_uring_cmd, timeout_ms) == offsetof(rl_nvme_cmd, timeout_ms), "timeout_ms");
    _Static_assert(NVME_URING_CMD_IO == RL_NVME_URING_CMD_IO, "NVME_URING_CMD_IO");
    static const int rl_kernel_cmd_size = (int)sizeof(struct nvme_uring_cmd);
    static const unsigned long rl_kernel_cmd_io = NVME_URING_CMD_IO;
    static int rl_kernel_offsets(int *out) {
        out[0] = offsetof(struct nvme_uring_cmd, opcode);
        out[1] = offsetof(struct nvme_uring_cmd, flags);
        out[2] = offsetof(struct nvme_uring_cmd, nsid);
        out[3] = offsetof(struct nvme_uring_cmd, cdw2);
        out[4] = offsetof(struct nvme_uring_cmd, cdw3);
        out[5] = offsetof(struct nvme_uring_cmd, metadata);
        out[6] = offsetof(struct nvme_uring_cmd, addr);
        out[7] = offsetof(struct nvme_uring_cmd, metadata_len);
        out[8] = offsetof(struct nvme_uring_cmd, data_len);
        out[9] = offsetof(struct nvme_uring_cmd, cdw10);
        out[10] = offsetof(struct nvme_uring_cmd, cdw11);
        out[11] = offsetof(struct nvme_uring_cmd, cdw12);
        out[12] = offsetof(struct nvme_uring_cmd, cdw13);
        out[13] = offsetof(struct nvme_uring_cmd, cdw14);
        out[14] = offsetof(struct nvme_uring_cmd, cdw15);
        out[15] = offsetof(struct nvme_uring_cmd, timeout_ms);
        return 16;
    }
    #else
    static const int rl_kernel_cmd_size = 0;
    static const unsigned long rl_kernel_cmd_io = 0;
    static int rl_kernel_offsets(int *out) { (void)out; return 0; }
    #endif

    /* A ring of 128-byte SQEs and 32-byte CQEs. */
    typedef struct rl_bring {
        int fd;
        unsigned *sq_khead, *sq_ktail, *sq_array, sq_mask, sq_entries, sqe_tail;
        unsigned *cq_khead, *cq_ktail, cq_mask;
        char *sqes, *cqes;
        void *sq_ptr, *cq_ptr;
        size_t sq_sz, cq_sz, sqes_sz;
    } rl_bring;

    static void rl_bring_exit(rl_bring *r)
    {
        if (r->sqes && r->sqes != MAP_FAILED) munmap(r->sqes, r->sqes_sz);
        if (r->cq_ptr && r->cq_ptr != MAP_FAILED && r->cq_ptr != r->sq_ptr) munmap(r->cq_ptr, r->cq_sz);
        if (r->sq_ptr && r->sq_ptr != MAP_FAILED) munmap(r->sq_ptr, r->sq_sz);
        if (r->fd >= 0) close(r->fd);
        memset(r, 0, sizeof(*r));
        r->fd = -1;
    }

    static int rl_bring_init(rl_bring *r, unsigned entries)
    {
        struct io_uring_params p;
        memset(r, 0, sizeof(*r));
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQE32;
        r->fd = rl_setup(entries, &p);
        if (r->fd < 0) { r->fd = -1; return -errno; }
        r->sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
        r->cq_sz = p.cq_off.cqes + p.cq_entries * 32;
        if (p.features & IORING_FEAT_SINGLE_MMAP) {
            if (r->cq_sz > r->sq_sz) r->sq_sz = r->cq_sz;
            r->cq_sz = r->sq_sz;
        }
        r->sq_ptr = mmap(0, r->sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                         r->fd, IORING_OFF_SQ_RING);
        if (r->sq_ptr == MAP_FAILED) goto fail;
        if (p.features & IORING_FEAT_SINGLE_MMAP) r->cq_ptr = r->sq_ptr;
        else {
            r->cq_ptr = mmap(0, r->cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                             r->fd, IORING_OFF_CQ_RING);
            if (r->cq_ptr == MAP_FAILED) goto fail;
        }
        r->sqes_sz = p.sq_entries * 128;
        r->sqes = mmap(0, r->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
                       r->fd, IORING_OFF_SQES);
        if (r->sqes == MAP_FAILED) goto fail;
        {
            char *sq = (char *)r->sq_ptr, *cq = (char *)r->cq_ptr;
            r->sq_khead = (unsigned *)(sq + p.sq_off.head);
            r->sq_ktail = (unsigned *)(sq + p.sq_off.tail);
            r->sq_array = (unsigned *)(sq + p.sq_off.array);
            r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
            r->sq_entries = *(unsigned *)(sq + p.sq_off.ring_entries);
            r->cq_khead = (unsigned *)(cq + p.cq_off.head);
            r->cq_ktail = (unsigned *)(cq + p.cq_off.tail);
            r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
            r->cqes = cq + p.cq_off.cqes;
            for (unsigned k = 0; k < r->sq_entries; k++) r->sq_array[k] = k;
            r->sqe_tail = *r->sq_khead;
        }
        return 0;
    fail:;
        int err = errno;
        rl_bring_exit(r);
        return -err;
    }

    /* Queue one URING_CMD SQE and submit it; 0 or -errno (EBUSY: SQ full). */
    static int rl_bring_cmd(rl_bring *r, int fd, unsigned cmd_op, const void *cmd,
                            unsigned cmd_len, uint64_t user_data)
    {
        unsigned head = RL_LOAD_ACQ(r->sq_khead);
        if (r->sqe_tail - head >= r->sq_entries) return -EBUSY;
        char *sqe = r->sqes + (size_t)(r->sqe_tail & r->sq_mask) * 128;
        memset(sqe, 0, 128);
        sqe[0] = RL_OP_URING_CMD;                       /* opcode */
        memcpy(sqe + 4, &fd, 4);                        /* fd */
        memcpy(sqe + 8, &cmd_op, 4);                    /* cmd_op */
        memcpy(sqe + 32, &user_data, 8);                /* user_data */
        memcpy(sqe + 48, cmd, cmd_len > 80 ? 80 : cmd_len);  /* cmd[] */
        r->sqe_tail++;
        RL_STORE_REL(r->sq_ktail, r->sqe_tail);
        int ret = rl_enter(r->fd, 1, 0, 0, NULL, 0);
        return ret < 0 ? -errno : 0;
    }

    /* Next CQE, if any: 1 and its fields, else 0. */
    static int rl_bring_pop(rl_bring *r, uint64_t *ud, int32_t *res, uint64_t *big0, uint64_t *big1)
    {
        unsigned head = *r->cq_khead;
        if (head == RL_LOAD_ACQ(r->cq_ktail)) return 0;
        char *cqe = r->cqes + (size_t)(head & r->cq_mask) * 32;
        memcpy(ud, cqe, 8);
        memcpy(res, cqe + 8, 4);
        memcpy(big0, cqe + 16, 8);
        memcpy(big1, cqe + 24, 8);
        RL_STORE_REL(r->cq_khead, head + 1);
        return 1;
    }
    """
    ctypedef struct rl_nvme_cmd:
        uint8_t opcode
        uint8_t flags
        uint32_t nsid
        uint32_t cdw2
        uint32_t cdw3
        uint64_t metadata
        uint64_t addr
        uint32_t metadata_len
        uint32_t data_len
        uint32_t cdw10
        uint32_t cdw11
        uint32_t cdw12
        uint32_t cdw13
        uint32_t cdw14
        uint32_t cdw15
        uint32_t timeout_ms
    ctypedef struct rl_bring:
        int fd
    int rl_bring_init(rl_bring *r, unsigned entries)
    void rl_bring_exit(rl_bring *r)
    int rl_bring_cmd(rl_bring *r, int fd, unsigned cmd_op, const void *cmd,
                     unsigned cmd_len, uint64_t user_data)
    int rl_bring_pop(rl_bring *r, uint64_t *ud, int32_t *res, uint64_t *big0, uint64_t *big1)
    const int rl_kernel_cmd_size
    const unsigned long rl_kernel_cmd_io
    int rl_kernel_offsets(int *out)
    unsigned long RL_NVME_URING_CMD_IO
    unsigned long RL_NVME_IOCTL_ID


cdef object _nvme_field(object value, int bits, str name):
    """value as an int of the field's width: an int (operator.index, as
    struct.pack takes it), refused out of range, never cut to width (an
    opcode of 0x102 must not become a READ) nor truncated from a float."""
    v = operator_index(value)
    limit = (<object>1) << bits         # a Python int: 1 << 64 in C is undefined
    if not 0 <= v < limit:
        raise OverflowError(f"NVMe command field {name} must be 0..{limit - 1}, got {v}")
    return v


def nvme_encode_cmd_c(opcode, nsid, addr, data_len, cdw10=0, cdw11=0, cdw12=0,
                      cdw13=0, cdw14=0, cdw15=0, timeout_ms=0, flags=0, cdw2=0, cdw3=0,
                      metadata=0, metadata_len=0):
    """The 72 bytes of a struct nvme_uring_cmd, laid out by the C compiler
    (checked at build time against the kernel header's struct).  Fields
    out of range or not ints are refused, as struct.pack refuses them."""
    cdef rl_nvme_cmd c
    memset(&c, 0, sizeof(c))
    c.opcode = _nvme_field(opcode, 8, "opcode")
    c.flags = _nvme_field(flags, 8, "flags")
    c.nsid = _nvme_field(nsid, 32, "nsid")
    c.cdw2 = _nvme_field(cdw2, 32, "cdw2")
    c.cdw3 = _nvme_field(cdw3, 32, "cdw3")
    c.metadata = _nvme_field(metadata, 64, "metadata")
    c.addr = _nvme_field(addr, 64, "addr")
    c.metadata_len = _nvme_field(metadata_len, 32, "metadata_len")
    c.data_len = _nvme_field(data_len, 32, "data_len")
    c.cdw10 = _nvme_field(cdw10, 32, "cdw10")
    c.cdw11 = _nvme_field(cdw11, 32, "cdw11")
    c.cdw12 = _nvme_field(cdw12, 32, "cdw12")
    c.cdw13 = _nvme_field(cdw13, 32, "cdw13")
    c.cdw14 = _nvme_field(cdw14, 32, "cdw14")
    c.cdw15 = _nvme_field(cdw15, 32, "cdw15")
    c.timeout_ms = _nvme_field(timeout_ms, 32, "timeout_ms")
    return PyBytes_FromStringAndSize(<char*>&c, sizeof(c))


def nvme_abi():
    """{'cmd_size', 'cmd_io', 'ioctl_id', 'kernel_cmd_size', 'kernel_cmd_io',
    'kernel_offsets'}: our constants and, where <linux/nvme_ioctl.h> was
    there at build time, the kernel header's."""
    cdef int offs[16]
    cdef int n = rl_kernel_offsets(offs)
    return {
        'cmd_size': sizeof(rl_nvme_cmd),
        'cmd_io': RL_NVME_URING_CMD_IO,
        'ioctl_id': RL_NVME_IOCTL_ID,
        'kernel_cmd_size': rl_kernel_cmd_size,
        'kernel_cmd_io': rl_kernel_cmd_io,
        'kernel_offsets': [offs[i] for i in range(n)],
    }


@cython.final
cdef class BigRing:
    """A ring of 128-byte SQEs and 32-byte CQEs for URING_CMD passthrough."""
    cdef rl_bring ring
    cdef bint is_open

    def __cinit__(self, unsigned entries=64):
        cdef int ret = rl_bring_init(&self.ring, entries)
        if ret < 0:
            raise OSError(-ret, "io_uring_setup(SQE128|CQE32): " + os.strerror(-ret))
        self.is_open = True

    def fileno(self):
        return self.ring.fd

    def submit(self, int fd, unsigned cmd_op, bytes cmd, uint64_t user_data):
        """Queue and submit one URING_CMD (cmd: up to 80 bytes)."""
        cdef int ret
        if not self.is_open:
            raise ValueError("the ring is closed")
        if len(cmd) > 80:
            # The SQE holds 80 bytes of command; a longer one is not cut.
            raise ValueError(f"a URING_CMD command is at most 80 bytes, got {len(cmd)}")
        ret = rl_bring_cmd(&self.ring, fd, cmd_op, PyBytes_AS_STRING(cmd),
                           <unsigned>len(cmd), user_data)
        if ret < 0:
            raise OSError(-ret, "io_uring_enter: " + os.strerror(-ret))

    def reap(self):
        """[(user_data, res, result dword0..1 (big_cqe[0]), big_cqe[1]), ...]"""
        cdef uint64_t ud, b0, b1
        cdef int32_t res
        out = []
        if not self.is_open:
            return out
        while rl_bring_pop(&self.ring, &ud, &res, &b0, &b1):
            out.append((ud, res, b0, b1))
        return out

    def close(self):
        if self.is_open:
            self.is_open = False
            rl_bring_exit(&self.ring)

    def __dealloc__(self):
        if self.is_open:
            rl_bring_exit(&self.ring)
