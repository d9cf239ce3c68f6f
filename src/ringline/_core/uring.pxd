# Declarations of uring.h (the io_uring ABI) for the compiled core.
from libc.stdint cimport uint8_t, uint16_t, int32_t, uint32_t, uint64_t, int64_t

cdef extern from "driver/uring.h" nogil:
    struct io_uring_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int32_t fd
        uint64_t off
        uint64_t addr2
        uint64_t addr
        uint64_t splice_off_in
        uint32_t len
        uint32_t rw_flags
        uint32_t fsync_flags      # (rw_flags union members, file ops)
        uint32_t open_flags
        uint32_t statx_flags
        uint32_t rename_flags
        uint32_t unlink_flags
        uint32_t uring_cmd_flags
        uint32_t msg_flags
        uint32_t poll32_events
        uint32_t accept_flags
        uint32_t cancel_flags
        uint32_t splice_flags
        uint32_t timeout_flags
        uint64_t user_data
        uint16_t buf_group
        uint16_t buf_index
        int32_t splice_fd_in
        uint32_t file_index
        uint64_t addr3

    struct io_uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    ctypedef struct rl_ring:
        int fd
        unsigned setup_flags
        unsigned features
        unsigned sq_entries
        unsigned cq_entries
        unsigned *cq_koverflow
        unsigned enter_flags
        int disabled
        int sqpoll
        unsigned long long n_enter
        unsigned long long n_sq_wakeups

    ctypedef struct rl_sqpoll_req:
        int on
        unsigned idle_ms
        int cpu
        int refuse
        int err

    ctypedef struct rl_pbuf_ring:
        unsigned entries
        unsigned buf_size
        unsigned short bgid
        unsigned short tail
        char *bufs
        int inc
        int bundle

    int rl_ring_init(rl_ring *r, unsigned sq_entries, unsigned cq_entries,
                     int allow_defer, int *first_err, rl_sqpoll_req *sq)
    void rl_ring_exit(rl_ring *r)
    int rl_ring_register_fd(rl_ring *r)
    int rl_ring_enable(rl_ring *r)
    void rl_ring_unregister_fd(rl_ring *r)
    io_uring_sqe *rl_get_sqe(rl_ring *r)
    unsigned rl_flush_sq(rl_ring *r)
    unsigned rl_sq_pending(rl_ring *r)
    int rl_needs_enter(rl_ring *r)
    int rl_cq_overflow(rl_ring *r)
    int rl_submit_needs_enter(rl_ring *r)
    int rl_sq_wait_space(rl_ring *r)
    int rl_submit_and_wait(rl_ring *r, unsigned wait_nr, int64_t timeout_ns)
    unsigned rl_cq_ready(rl_ring *r)
    io_uring_cqe *rl_cqe_at(rl_ring *r, unsigned head)
    unsigned rl_cq_khead(rl_ring *r)
    void rl_cq_advance_to(rl_ring *r, unsigned head)
    int64_t rl_monotonic_ns()
    # Valgrind builds (RINGLINE_VALGRIND): the kernel wrote n bytes at p.
    # A no-op in every other build.
    void RL_KERNEL_WROTE(const void *p, size_t n)
    int rl_probe(rl_ring *r, unsigned char *ops, unsigned *last_op)
    int rl_register_files_sparse(rl_ring *r, unsigned n)
    int rl_steal_cqe(rl_ring *r, uint64_t ud, int64_t timeout_ns, int *res)

    int rl_pbuf_ring_init(rl_ring *r, rl_pbuf_ring *pb, unsigned entries,
                          unsigned buf_size, unsigned short bgid, int inc)
    char *rl_pbuf_addr(rl_pbuf_ring *pb, unsigned bid)
    void rl_pbuf_recycle(rl_pbuf_ring *pb, unsigned bid)
    char *rl_pbuf_piece(rl_pbuf_ring *pb, unsigned bid, unsigned res, unsigned cqe_flags)
    void rl_pbuf_hold(rl_pbuf_ring *pb, unsigned bid)
    void rl_pbuf_put(rl_pbuf_ring *pb, unsigned bid)
    void rl_pbuf_cqe_done(rl_pbuf_ring *pb, unsigned bid, unsigned cqe_flags)
    int rl_pbuf_bundle_next(rl_pbuf_ring *pb, unsigned *left, unsigned cqe_flags, int first,
                            unsigned *bid, char **ptr, unsigned *len, int *done)
    void rl_pbuf_ring_free(rl_ring *r, rl_pbuf_ring *pb)

    enum:
        IORING_RECVSEND_BUNDLE
        RL_FEAT_RECVSEND_BUNDLE
        IORING_SETUP_SINGLE_ISSUER
        IORING_SETUP_DEFER_TASKRUN
        IORING_SETUP_COOP_TASKRUN
        IORING_FEAT_EXT_ARG
        IORING_FEAT_NODROP
        IORING_FEAT_FAST_POLL
        IOSQE_IO_LINK
        IOSQE_FIXED_FILE
        IORING_FILE_INDEX_ALLOC
        RL_OP_FIXED_FD_INSTALL
        RL_MAX_FIXED_FILES
        IOSQE_BUFFER_SELECT
        IOSQE_ASYNC
        IORING_CQE_F_BUFFER
        IORING_CQE_F_MORE
        IORING_CQE_F_NOTIF
        IORING_CQE_BUFFER_SHIFT
        IORING_POLL_ADD_MULTI
        IORING_RECV_MULTISHOT
        IORING_ACCEPT_MULTISHOT
        IORING_ASYNC_CANCEL_ALL
        IORING_ASYNC_CANCEL_ANY

        IORING_OP_NOP
        IORING_OP_READV
        IORING_OP_WRITEV
        IORING_OP_FSYNC
        IORING_OP_POLL_ADD
        IORING_OP_POLL_REMOVE
        IORING_OP_SENDMSG
        IORING_OP_RECVMSG
        IORING_OP_TIMEOUT
        IORING_OP_ACCEPT
        IORING_OP_ASYNC_CANCEL
        IORING_OP_CONNECT
        IORING_OP_CLOSE
        IORING_OP_READ
        IORING_OP_WRITE
        IORING_OP_SEND
        IORING_OP_RECV
        IORING_OP_SPLICE
        IORING_OP_SHUTDOWN
        IORING_OP_PROVIDE_BUFFERS
        IORING_OP_MSG_RING
        RL_OP_SEND_ZC
        RL_OP_WAITID
        # file operations (fileops.pxi)
        IORING_OP_OPENAT
        IORING_OP_STATX
        IORING_OP_RENAMEAT
        IORING_OP_UNLINKAT
        IORING_OP_MKDIRAT
        IORING_OP_URING_CMD
        IORING_FSYNC_DATASYNC
        RL_OP_FTRUNCATE
