/*
 * uring.h — the io_uring ABI on raw syscalls (no liburing).
 *
 * Ring memory layout and the ordering rules come from io_uring(7) and
 * io_uring_setup(2): the application owns SQ tail and CQ head, the kernel
 * owns SQ head and CQ tail.  Loads of kernel-owned indices are acquire,
 * stores of ours are release (the barriers liburing's io_uring_smp_* use).
 *
 * The installed <linux/io_uring.h> may be older than the running kernel;
 * constants we may use are defined here when it lacks them, and whether the
 * kernel accepts them is found at run time (setup flags by retry, opcodes by
 * IORING_REGISTER_PROBE).
 */
#ifndef RINGLINE_URING_H
#define RINGLINE_URING_H

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <linux/io_uring.h>
#include <linux/time_types.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

/* Newer than some installed headers. */
#ifndef IORING_SETUP_COOP_TASKRUN
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#endif
#ifndef IORING_SETUP_TASKRUN_FLAG
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#endif
#ifndef IORING_SETUP_SINGLE_ISSUER
#define IORING_SETUP_SINGLE_ISSUER (1U << 12)
#endif
#ifndef IORING_SETUP_DEFER_TASKRUN
#define IORING_SETUP_DEFER_TASKRUN (1U << 13)
#endif
#ifndef IORING_SQ_TASKRUN
#define IORING_SQ_TASKRUN (1U << 2)
#endif
#ifndef IORING_ENTER_SQ_WAIT
#define IORING_ENTER_SQ_WAIT (1U << 2)
#endif
#ifndef IORING_ENTER_EXT_ARG
#define IORING_ENTER_EXT_ARG (1U << 3)
#endif
#ifndef IORING_FEAT_EXT_ARG
#define IORING_FEAT_EXT_ARG (1U << 8)
#endif
#ifndef IORING_FEAT_NODROP
#define IORING_FEAT_NODROP (1U << 1)
#endif
#ifndef IORING_POLL_ADD_MULTI
#define IORING_POLL_ADD_MULTI (1U << 0)
#endif
#ifndef IORING_RECV_MULTISHOT
#define IORING_RECV_MULTISHOT (1U << 1)
#endif
#ifndef IORING_ACCEPT_MULTISHOT
#define IORING_ACCEPT_MULTISHOT (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_ALL
#define IORING_ASYNC_CANCEL_ALL (1U << 0)
#endif
#ifndef IORING_ASYNC_CANCEL_ANY
#define IORING_ASYNC_CANCEL_ANY (1U << 2)
#endif
#ifndef IORING_CQE_F_NOTIF
#define IORING_CQE_F_NOTIF (1U << 3)
#endif
#ifndef IORING_CQE_BUFFER_SHIFT
#define IORING_CQE_BUFFER_SHIFT 16
#endif
/* Opcode numbers are ABI: those missing from old headers are fixed values. */
#define RL_OP_SEND_ZC 47
#define RL_OP_WAITID 50
#define RL_OP_FTRUNCATE 55
#ifndef IORING_FSYNC_DATASYNC
#define IORING_FSYNC_DATASYNC (1U << 0)
#endif

/*
 * Valgrind (a build with RINGLINE_VALGRIND=1: setup.py, tests/valgrind.py).
 *
 * Memcheck sees the syscalls a program makes, not what the kernel does later
 * on its behalf: bytes io_uring writes into a buffer when an operation
 * completes (a RECV or READ into malloc'd memory) still look uninitialised to
 * it, and every use of them is reported.  RL_KERNEL_WROTE(p, n) tells memcheck
 * those n bytes are defined; the ops call it when such a completion arrives.
 * (The SQ/CQ rings and the provided-buffer rings are mmap'd, which memcheck
 * counts as defined from the start; fields inside Python objects are zeroed
 * at allocation: neither needs it.)
 *
 * Valgrind also runs one thread at a time, and 3.19 does not count
 * io_uring_enter among the syscalls that may block: a thread waiting in it
 * keeps every other thread from running, so a wakeup that another thread
 * would send (call_soon_threadsafe, the executor, the spawner) never comes.
 * Under valgrind a blocking wait therefore blocks in poll() on the ring fd
 * (which valgrind lets block) and then reaps with a non-blocking
 * io_uring_enter; and the ring is set up without DEFER_TASKRUN, whose
 * deferred work would not wake that poll().  (So under valgrind the ring
 * runs as on a kernel without DEFER_TASKRUN, 5.19-6.0: completions the
 * kernel posts while callbacks run are reaped in the same iteration.)
 * Run outside valgrind
 * (RUNNING_ON_VALGRIND is 0), such a build behaves as any other.
 */
#ifdef RINGLINE_VALGRIND
#  if defined(__has_include)
#    if !__has_include(<valgrind/memcheck.h>)
#      error "RINGLINE_VALGRIND=1 needs <valgrind/memcheck.h> (Debian/Ubuntu: apt-get install valgrind)"
#    endif
#  endif
#  include <poll.h>
#  include <valgrind/memcheck.h>
#  define RL_KERNEL_WROTE(p, n) ((void)VALGRIND_MAKE_MEM_DEFINED((p), (n)))
#  define RL_ON_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#  define RL_KERNEL_WROTE(p, n) ((void)0)
#  define RL_ON_VALGRIND() 0
#endif

static inline int rl_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static inline int rl_enter(int fd, unsigned to_submit, unsigned min_complete,
                           unsigned flags, void *arg, size_t argsz)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete,
                        flags, arg, argsz);
}

static inline int rl_register(int fd, unsigned opcode, void *arg, unsigned nr)
{
    return (int)syscall(__NR_io_uring_register, fd, opcode, arg, nr);
}

typedef struct rl_ring {
    int fd;
    unsigned setup_flags;
    unsigned features;
    /* submission queue */
    unsigned *sq_khead, *sq_ktail, *sq_kflags, *sq_array;
    unsigned sq_mask, sq_entries;
    unsigned sqe_tail;          /* our next free SQE (not yet published) */
    unsigned sqe_head;          /* first SQE not yet published to the kernel */
    struct io_uring_sqe *sqes;
    /* completion queue */
    unsigned *cq_khead, *cq_ktail, *cq_koverflow;
    unsigned cq_mask, cq_entries;
    struct io_uring_cqe *cqes;
    /* mappings */
    void *sq_ptr, *cq_ptr;
    size_t sq_sz, cq_sz, sqes_sz;
    /* registered ring fd (rl_ring_register_fd): index and flag, and the
     * thread whose table holds it; enter_flags == 0: not registered */
    int enter_fd;
    unsigned enter_flags;
    pthread_t reg_thread;
    int disabled;               /* R_DISABLED: no thread has entered yet */
    int sqpoll;                 /* IORING_SETUP_SQPOLL: a kernel thread consumes the SQ */
    unsigned long long n_enter;       /* io_uring_enter calls made */
    unsigned long long n_sq_wakeups;  /* of which woke a sleeping SQ thread */
} rl_ring;

/*
 * What a ring asks of SQPOLL (rl_ring_init).  idle_ms: how long the SQ
 * thread spins with nothing to submit before it sleeps (io_uring_setup(2)
 * sq_thread_idle; the kernel takes 0 as one second).  cpu: pin it there
 * (IORING_SETUP_SQ_AFF), or -1.  refuse: act as a kernel that refuses
 * SQPOLL (errno EPERM) without asking it -- the tests' stand-in for a kernel
 * before 5.13 run unprivileged.  err (out): 0 if the ring has SQPOLL, else
 * the errno of the refusal (the ring was then made without it).
 */
typedef struct rl_sqpoll_req {
    int on;
    unsigned idle_ms;
    int cpu;
    int refuse;
    int err;
} rl_sqpoll_req;

#define RL_LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define RL_STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/*
 * Registered ring fd (IORING_REGISTER_RING_FDS, 5.18): io_uring_enter then
 * takes an index into the calling task's ring table instead of an fd, which
 * skips the fd-table lookup (fdget, an atomic refcount once the process has
 * threads).  The table is per task -- the index means nothing, or another
 * ring, on any other thread -- so the loop registers on the thread that runs
 * it, for as long as it runs (run_forever), and every enter checks it is on
 * that thread.  The registration holds a file reference: it must be undone
 * on the same thread before the ring can be freed.
 */
#ifndef IORING_ENTER_REGISTERED_RING
#define IORING_ENTER_REGISTERED_RING (1U << 4)
#endif
#define RL_REGISTER_RING_FDS 20
#define RL_UNREGISTER_RING_FDS 21
struct rl_rsrc_update { uint32_t offset; uint32_t resv; uint64_t data; };

#define RL_REGISTER_ENABLE_RINGS 12

/* The calling thread becomes the ring's submitter (see rl_ring_init). */
static inline int rl_ring_enable(rl_ring *r)
{
    if (r->disabled) {
        if (rl_register(r->fd, RL_REGISTER_ENABLE_RINGS, NULL, 0) < 0)
            return -errno;
        r->disabled = 0;
    }
    return 0;
}

static inline int rl_ring_enter(rl_ring *r, unsigned to_submit, unsigned min_complete,
                                unsigned flags, void *arg, size_t argsz)
{
    int err;
    if (r->disabled && (err = rl_ring_enable(r)) < 0) {
        errno = -err;
        return -1;
    }
    r->n_enter++;
    if (r->enter_flags && pthread_equal(r->reg_thread, pthread_self()))
        return rl_enter(r->enter_fd, to_submit, min_complete, flags | r->enter_flags,
                        arg, argsz);
    return rl_enter(r->fd, to_submit, min_complete, flags, arg, argsz);
}

/* 0, or -errno (EINVAL before 5.18, EBUSY when the task's 16 slots are taken). */
static int rl_ring_register_fd(rl_ring *r)
{
    struct rl_rsrc_update up;
    if (r->enter_flags)
        return 0;
    memset(&up, 0, sizeof(up));
    up.offset = (uint32_t)-1;           /* any free slot */
    up.data = (uint64_t)r->fd;
    int ret = rl_register(r->fd, RL_REGISTER_RING_FDS, &up, 1);
    if (ret != 1)
        return ret < 0 ? -errno : -EINVAL;
    r->enter_fd = (int)up.offset;
    r->enter_flags = IORING_ENTER_REGISTERED_RING;
    r->reg_thread = pthread_self();
    return 0;
}

/* Only on the registering thread (the slot is in its table). */
static void rl_ring_unregister_fd(rl_ring *r)
{
    struct rl_rsrc_update up;
    if (!r->enter_flags || !pthread_equal(r->reg_thread, pthread_self()))
        return;
    memset(&up, 0, sizeof(up));
    up.offset = (uint32_t)r->enter_fd;
    rl_register(r->fd, RL_UNREGISTER_RING_FDS, &up, 1);
    r->enter_fd = -1;
    r->enter_flags = 0;
}

static void rl_ring_unmap(rl_ring *r)
{
    if (r->sqes && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_sz);
    if (r->cq_ptr && r->cq_ptr != MAP_FAILED && r->cq_ptr != r->sq_ptr)
        munmap(r->cq_ptr, r->cq_sz);
    if (r->sq_ptr && r->sq_ptr != MAP_FAILED)
        munmap(r->sq_ptr, r->sq_sz);
    r->sqes = NULL;
    r->cq_ptr = r->sq_ptr = NULL;
}

/*
 * Create a ring, trying setup flag sets from the most capable down:
 * SINGLE_ISSUER|DEFER_TASKRUN (6.1+), COOP_TASKRUN (5.19+), plain.  Each set
 * also asks for CQSIZE and TASKRUN_FLAG (so an idle iteration can see in
 * sq_flags whether deferred task work is pending and skip the syscall).
 * Returns 0 or -errno; *first_err gets the first refusal's errno.
 *
 * A SINGLE_ISSUER ring belongs to one thread, and without R_DISABLED that
 * is the one creating it: asyncio lets a loop be created on one thread and
 * run on another (a loop thread), whose io_uring_enter would get EEXIST.  So
 * the ring starts disabled and the first thread to enter enables it
 * (IORING_REGISTER_ENABLE_RINGS makes the caller the submitter task).
 *
 * With sqp->on, SQPOLL sets are tried first.  The kernel refuses DEFER_TASKRUN,
 * COOP_TASKRUN and TASKRUN_FLAG with SQPOLL (EINVAL: requests are issued by
 * the SQ thread, so their task work runs there, never in ours); it takes
 * SINGLE_ISSUER (6.0: the SQ thread counts as the one issuer) and R_DISABLED
 * (5.10: the SQ thread submits nothing until the ring is enabled).  Before
 * 5.13 SQPOLL needs privileges (EPERM) and before 5.11 registered files.
 * If every SQPOLL set is refused, sqp->err gets the errno of the plainest
 * one's refusal and the ring is made without SQPOLL.
 */
static int rl_ring_init(rl_ring *r, unsigned sq_entries, unsigned cq_entries,
                        int allow_defer, int *first_err, rl_sqpoll_req *sqp)
{
    static const unsigned flag_sets[] = {
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG
            | IORING_SETUP_R_DISABLED,
        IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
        0,
    };
    static const unsigned sq_flag_sets[] = {
        IORING_SETUP_SQPOLL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_R_DISABLED,
        IORING_SETUP_SQPOLL | IORING_SETUP_R_DISABLED,
        IORING_SETUP_SQPOLL,
    };
    struct io_uring_params p;
    int fd = -1, i;
    *first_err = 0;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (RL_ON_VALGRIND())
        allow_defer = 0;        /* see RINGLINE_VALGRIND above */
    if (sqp && sqp->on) {
        sqp->err = sqp->refuse ? EPERM : 0;
        for (i = 0; i < 3 && !sqp->refuse; i++) {
            memset(&p, 0, sizeof(p));
            p.flags = sq_flag_sets[i] | IORING_SETUP_CQSIZE;
            p.cq_entries = cq_entries;
            p.sq_thread_idle = sqp->idle_ms;
            if (sqp->cpu >= 0) {
                p.flags |= IORING_SETUP_SQ_AFF;
                p.sq_thread_cpu = (unsigned)sqp->cpu;
            }
            fd = rl_setup(sq_entries, &p);
            if (fd >= 0) {
                sqp->err = 0;
                break;
            }
            sqp->err = errno;
            /* Not allowed at all, or no io_uring: fewer flags cannot help. */
            if (errno == ENOSYS || errno == EPERM || errno == EACCES)
                break;
        }
    }
    for (i = allow_defer ? 0 : 1; fd < 0 && i < 3; i++) {
        memset(&p, 0, sizeof(p));
        p.flags = flag_sets[i] | IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
        fd = rl_setup(sq_entries, &p);
        if (fd >= 0)
            break;
        if (!*first_err)
            *first_err = errno;
        /* Refused outright (seccomp, sysctl, no syscall): no point retrying. */
        if (errno == ENOSYS || errno == EPERM || errno == EACCES)
            return -errno;
    }
    if (fd < 0)
        return -errno;
    r->fd = fd;
    r->disabled = (p.flags & IORING_SETUP_R_DISABLED) != 0;
    r->sqpoll = (p.flags & IORING_SETUP_SQPOLL) != 0;
    r->setup_flags = p.flags & ~IORING_SETUP_R_DISABLED;
    r->features = p.features;

    r->sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_sz > r->sq_sz)
            r->sq_sz = r->cq_sz;
        r->cq_sz = r->sq_sz;
    }
    r->sq_ptr = mmap(0, r->sq_sz, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_ptr == MAP_FAILED)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ptr = r->sq_ptr;
    } else {
        r->cq_ptr = mmap(0, r->cq_sz, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_ptr == MAP_FAILED)
            goto fail;
    }
    r->sqes_sz = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(0, r->sqes_sz, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;

    char *sq = (char *)r->sq_ptr, *cq = (char *)r->cq_ptr;
    r->sq_khead = (unsigned *)(sq + p.sq_off.head);
    r->sq_ktail = (unsigned *)(sq + p.sq_off.tail);
    r->sq_kflags = (unsigned *)(sq + p.sq_off.flags);
    r->sq_array = (unsigned *)(sq + p.sq_off.array);
    r->sq_mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    r->sq_entries = *(unsigned *)(sq + p.sq_off.ring_entries);
    r->cq_khead = (unsigned *)(cq + p.cq_off.head);
    r->cq_ktail = (unsigned *)(cq + p.cq_off.tail);
    r->cq_koverflow = (unsigned *)(cq + p.cq_off.overflow);
    r->cq_mask = *(unsigned *)(cq + p.cq_off.ring_mask);
    r->cq_entries = *(unsigned *)(cq + p.cq_off.ring_entries);
    r->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    /* The indirection array is the identity: SQE i is slot i, set once. */
    for (unsigned k = 0; k < r->sq_entries; k++)
        r->sq_array[k] = k;
    r->sqe_head = r->sqe_tail = *r->sq_khead;
    return 0;
fail:;
    int err = errno;
    rl_ring_unmap(r);
    close(fd);
    r->fd = -1;
    return -err;
}

static void rl_ring_exit(rl_ring *r)
{
    rl_ring_unregister_fd(r);
    rl_ring_unmap(r);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* Next free SQE, zeroed, or NULL when the SQ is full (flush, then retry). */
static inline struct io_uring_sqe *rl_get_sqe(rl_ring *r)
{
    unsigned head = RL_LOAD_ACQ(r->sq_khead);
    if (r->sqe_tail - head >= r->sq_entries)
        return NULL;
    struct io_uring_sqe *sqe = &r->sqes[r->sqe_tail & r->sq_mask];
    r->sqe_tail++;
    memset(sqe, 0, sizeof(*sqe));
    return sqe;
}

/* Publish queued SQEs to the kernel; returns how many are pending. */
static inline unsigned rl_flush_sq(rl_ring *r)
{
    if (r->sqe_head != r->sqe_tail) {
        r->sqe_head = r->sqe_tail;
        RL_STORE_REL(r->sq_ktail, r->sqe_tail);
    }
    return r->sqe_tail - RL_LOAD_ACQ(r->sq_khead);
}

static inline unsigned rl_sq_pending(rl_ring *r)
{
    return r->sqe_tail - RL_LOAD_ACQ(r->sq_khead);
}

static inline int rl_needs_enter(rl_ring *r)
{
    /* Deferred task work or overflowed CQEs are flushed only by io_uring_enter. */
    return (RL_LOAD_ACQ(r->sq_kflags) & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
}

static inline int rl_cq_overflow(rl_ring *r)
{
    return (RL_LOAD_ACQ(r->sq_kflags) & IORING_SQ_CQ_OVERFLOW) != 0;
}

/*
 * SQPOLL: whether the SQ thread sleeps (IORING_SQ_NEED_WAKEUP) and must be
 * woken to see the tail just published.  The kernel thread sets the flag,
 * then re-reads the tail before it sleeps; we store the tail, then read the
 * flag.  Each side's load must follow its store, a store->load order only a
 * full barrier gives (liburing: io_uring_smp_mb() in sq_ring_needs_enter).
 */
static inline int rl_sq_thread_asleep(rl_ring *r)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    return (__atomic_load_n(r->sq_kflags, __ATOMIC_RELAXED) & IORING_SQ_NEED_WAKEUP) != 0;
}

/*
 * Whether handing queued SQEs to the kernel takes a syscall.  Without
 * SQPOLL: whenever any are queued.  With it, publishing the tail is enough
 * unless the SQ thread sleeps (or the ring is not enabled yet).
 */
static inline int rl_submit_needs_enter(rl_ring *r)
{
    if (!r->sqpoll)
        return rl_sq_pending(r) != 0;
    if (r->disabled)
        return 1;
    return rl_flush_sq(r) && rl_sq_thread_asleep(r);
}

/*
 * SQPOLL with a full SQ: slots free up only as the SQ thread consumes SQEs,
 * which the application cannot see coming; IORING_ENTER_SQ_WAIT (5.10)
 * waits until one is free.  The thread is woken first if it sleeps.
 */
static inline int rl_sq_wait_space(rl_ring *r)
{
    unsigned flags = IORING_ENTER_SQ_WAIT;
    if (rl_flush_sq(r) && rl_sq_thread_asleep(r)) {
        flags |= IORING_ENTER_SQ_WAKEUP;
        r->n_sq_wakeups++;
    }
    return rl_ring_enter(r, 0, 0, flags, NULL, _NSIG / 8) < 0 ? -errno : 0;
}

/*
 * Submit everything queued and wait for at least `wait_nr` completions or
 * until `timeout_ns` passes (negative: no timeout).  One syscall.  With
 * EXT_ARG the timeout rides along instead of costing an IORING_OP_TIMEOUT
 * SQE.  Returns submitted count or -errno (ETIME and EINTR are normal).
 *
 * With SQPOLL the SQ thread submits what the published tail shows; the
 * syscall is made only to wait, to wake that thread, or to flush overflowed
 * CQEs (the kernel ignores to_submit there).  Waiting is GETEVENTS as ever.
 */
static inline int rl_submit_and_wait(rl_ring *r, unsigned wait_nr, int64_t timeout_ns)
{
    unsigned submit = rl_flush_sq(r);
    unsigned flags = 0;
    struct io_uring_getevents_arg arg;
    struct __kernel_timespec ts;
    if (wait_nr || (r->setup_flags & IORING_SETUP_DEFER_TASKRUN) || rl_needs_enter(r))
        flags |= IORING_ENTER_GETEVENTS;
    if (r->sqpoll) {
        if (submit && rl_sq_thread_asleep(r)) {
            flags |= IORING_ENTER_SQ_WAKEUP;
            r->n_sq_wakeups++;
        }
        if (!flags && !r->disabled)
            return (int)submit;
    }
#ifdef RINGLINE_VALGRIND
    if (wait_nr && RL_ON_VALGRIND()) {
        /* Block in poll(), not in io_uring_enter: see RINGLINE_VALGRIND above. */
        int ret = rl_ring_enter(r, submit, 0, flags, NULL, _NSIG / 8);
        if (ret < 0)
            return -errno;
        if (RL_LOAD_ACQ(r->cq_ktail) - *r->cq_khead < wait_nr && !rl_needs_enter(r)) {
            struct pollfd pfd;
            int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
            pfd.fd = r->fd;
            pfd.events = POLLIN;
            pfd.revents = 0;
            int n = poll(&pfd, 1, ms);
            if (n < 0)
                return -errno;
            if (rl_ring_enter(r, 0, 0, IORING_ENTER_GETEVENTS, NULL, _NSIG / 8) < 0)
                return -errno;
            if (n == 0 && RL_LOAD_ACQ(r->cq_ktail) == *r->cq_khead)
                return -ETIME;
        }
        return ret;
    }
#endif
    if (wait_nr && timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000;
        ts.tv_nsec = timeout_ns % 1000000000;
        memset(&arg, 0, sizeof(arg));
        arg.ts = (uint64_t)(uintptr_t)&ts;
        int ret = rl_ring_enter(r, submit, wait_nr, flags | IORING_ENTER_EXT_ARG,
                           &arg, sizeof(arg));
        return ret < 0 ? -errno : ret;
    }
    int ret = rl_ring_enter(r, submit, wait_nr, flags, NULL, _NSIG / 8);
    return ret < 0 ? -errno : ret;
}

static inline unsigned rl_cq_ready(rl_ring *r)
{
    return RL_LOAD_ACQ(r->cq_ktail) - *r->cq_khead;
}

static inline unsigned rl_cq_khead(rl_ring *r)
{
    return *r->cq_khead;
}

static inline struct io_uring_cqe *rl_cqe_at(rl_ring *r, unsigned head)
{
    return &r->cqes[head & r->cq_mask];
}

static inline void rl_cq_advance_to(rl_ring *r, unsigned head)
{
    RL_STORE_REL(r->cq_khead, head);
}

static inline int64_t rl_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* --- provided-buffer rings (IORING_REGISTER_PBUF_RING, 5.19+) ----------- */

/*
 * Incremental consumption (IOU_PBUF_RING_INC, 6.12): the kernel takes a
 * buffer in pieces.  Each receive reads into the head buffer from where the
 * last one that used it stopped (the kernel advances that entry's addr/len),
 * and the CQE says IORING_CQE_F_BUF_MORE while room is left: the buffer is
 * still the kernel's.  A CQE without it is the buffer's last piece.  So a
 * 1 KiB message takes 1 KiB, not a whole buffer, and the memory in use stays
 * dense and warm (io_uring_provided_buffers(7), io_kbuf_inc_commit()).
 *
 * off[bid] mirrors the kernel's position in each buffer; holds[bid] counts
 * who still needs it: 1 for the kernel until its last piece arrives, plus
 * one per receive handed on without a copy (the runtime's KBuf).  At 0 it
 * goes back to the ring.  Without INC every CQE is a last piece and off
 * stays 0: the same code serves both.  The mirror needs the CQEs of one
 * buffer in the order its pieces were taken, which the kernel keeps: a
 * piece is committed and its CQE posted in one step, and io_req_post_cqe()
 * flushes deferred completions before a multishot CQE.
 */
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#define RL_FEAT_RECVSEND_BUNDLE (1U << 14)      /* IORING_FEAT_RECVSEND_BUNDLE */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* struct io_uring_buf_reg as 6.12 has it: older headers call flags "pad". */
typedef struct rl_buf_reg {
    uint64_t ring_addr;
    uint32_t ring_entries;
    uint16_t bgid;
    uint16_t flags;
    uint64_t resv[3];
} rl_buf_reg;

typedef struct rl_pbuf_ring {
    struct io_uring_buf_ring *br;
    size_t br_sz;
    char *bufs;
    size_t bufs_sz;
    unsigned entries, mask, buf_size;
    unsigned short bgid;
    unsigned short tail;         /* local tail; published with rl_pbuf_commit */
    int inc;                     /* registered with IOU_PBUF_RING_INC */
    int bundle;                  /* receives take bundles (rl_pbuf_bundle_next) */
    unsigned short head;         /* bundles: the kernel's head, mirrored */
    uint32_t *off;               /* per bid: bytes the kernel has filled (INC) */
    uint32_t *holds;             /* per bid: the kernel's hold + handed-on pieces */
} rl_pbuf_ring;

/* inc: ask for incremental consumption; refused (EINVAL before 6.12), the
 * ring is registered without it (pb->inc says which). */
static int rl_pbuf_ring_init(rl_ring *r, rl_pbuf_ring *pb, unsigned entries,
                             unsigned buf_size, unsigned short bgid, int inc)
{
    rl_buf_reg reg;
    memset(pb, 0, sizeof(*pb));
    pb->off = calloc(entries, sizeof(uint32_t));
    pb->holds = calloc(entries, sizeof(uint32_t));
    if (!pb->off || !pb->holds) {
        free(pb->off);
        free(pb->holds);
        pb->off = pb->holds = NULL;
        return -ENOMEM;
    }
    pb->br_sz = entries * sizeof(struct io_uring_buf);
    pb->br = mmap(NULL, pb->br_sz, PROT_READ | PROT_WRITE,
                  MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (pb->br == MAP_FAILED) {
        int err = errno;
        free(pb->off);
        free(pb->holds);
        memset(pb, 0, sizeof(*pb));
        return -err;
    }
    pb->bufs_sz = (size_t)entries * buf_size;
    pb->bufs = mmap(NULL, pb->bufs_sz, PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (pb->bufs == MAP_FAILED) {
        int err = errno;
        munmap(pb->br, pb->br_sz);
        free(pb->off);
        free(pb->holds);
        memset(pb, 0, sizeof(*pb));
        return -err;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)pb->br;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    reg.flags = inc ? IOU_PBUF_RING_INC : 0;
    pb->inc = inc;
    int rc = rl_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    if (rc < 0 && inc && errno == EINVAL) {
        reg.flags = 0;                  /* a kernel before 6.12 */
        pb->inc = 0;
        rc = rl_register(r->fd, IORING_REGISTER_PBUF_RING, &reg, 1);
    }
    if (rc < 0) {
        int err = errno;
        munmap(pb->br, pb->br_sz);
        munmap(pb->bufs, pb->bufs_sz);
        free(pb->off);
        free(pb->holds);
        memset(pb, 0, sizeof(*pb));
        return -err;
    }
    pb->entries = entries;
    pb->mask = entries - 1;
    pb->buf_size = buf_size;
    pb->bgid = bgid;
    pb->tail = 0;
    for (unsigned i = 0; i < entries; i++) {
        struct io_uring_buf *b = &pb->br->bufs[(pb->tail + i) & pb->mask];
        b->addr = (uint64_t)(uintptr_t)(pb->bufs + (size_t)i * buf_size);
        b->len = buf_size;
        b->bid = (unsigned short)i;
        pb->holds[i] = 1;
    }
    pb->tail += entries;
    RL_STORE_REL(&pb->br->tail, pb->tail);
    return 0;
}

static inline char *rl_pbuf_addr(rl_pbuf_ring *pb, unsigned bid)
{
    return pb->bufs + (size_t)bid * pb->buf_size;
}

/* Give buffer `bid` back to the kernel, whole (a buffer ring without
 * holds: the datagram ring; or the last hold let go). */
static inline void rl_pbuf_recycle(rl_pbuf_ring *pb, unsigned bid)
{
    struct io_uring_buf *b = &pb->br->bufs[pb->tail & pb->mask];
    b->addr = (uint64_t)(uintptr_t)rl_pbuf_addr(pb, bid);
    b->len = pb->buf_size;
    b->bid = (unsigned short)bid;
    pb->holds[bid] = 1;
    pb->off[bid] = 0;
    pb->tail++;
    RL_STORE_REL(&pb->br->tail, pb->tail);
}

/* Where the res bytes of a CQE that used buffer `bid` are.  Call once per
 * CQE, in CQ order: with INC it advances the mirror of the kernel's
 * position, and a last piece starts the next use at 0.  bid and res come
 * from the kernel: a bid outside the ring or a piece past the buffer's end
 * would be a kernel bug, and gets NULL rather than a wild pointer. */
static inline char *rl_pbuf_piece(rl_pbuf_ring *pb, unsigned bid, unsigned res,
                                  unsigned cqe_flags)
{
    uint32_t off;
    if (bid >= pb->entries)
        return NULL;
    off = pb->off[bid];
    if ((uint64_t)off + res > pb->buf_size)
        return NULL;
    if (cqe_flags & IORING_CQE_F_BUF_MORE)
        pb->off[bid] = off + res;
    else
        pb->off[bid] = 0;
    return rl_pbuf_addr(pb, bid) + off;
}

/*
 * Recv bundles (IORING_RECVSEND_BUNDLE, 6.10): one CQE for several buffers,
 * taken from the ring's head in ring order; the CQE names the first, res is
 * the total.  With INC the first may be a buffer already partly filled, and
 * BUF_MORE speaks of the last one only.  The ring's order is ours to read
 * (we wrote every entry; the kernel changes only addr/len of an INC head),
 * so the kernel's head is mirrored here: every buffer finished moves it.
 * A ring whose receives take bundles must have every CQE walked by
 * rl_pbuf_bundle_next (a lone buffer is a bundle of one).
 *
 * One piece per call: *left starts at res.  0 with *bid, *ptr, *len set and
 * *done (the kernel has finished that buffer: rl_pbuf_put its hold once
 * the piece is dealt with); 1 when nothing is left; -EIO when the CQE's
 * first buffer is not the mirrored head -- the mirror is wrong, and no
 * piece may be trusted.
 */
static inline int rl_pbuf_bundle_next(rl_pbuf_ring *pb, unsigned *left, unsigned cqe_flags,
                                      int first, unsigned *bid, char **ptr, unsigned *len,
                                      int *done)
{
    unsigned id, off, avail, take;
    if (*left == 0)
        return 1;
    id = pb->br->bufs[pb->head & pb->mask].bid;
    if (id >= pb->entries || (first && id != (cqe_flags >> IORING_CQE_BUFFER_SHIFT)))
        return -EIO;
    off = pb->inc ? pb->off[id] : 0;
    avail = pb->buf_size - off;
    take = *left < avail ? *left : avail;
    *bid = id;
    *ptr = rl_pbuf_addr(pb, id) + off;
    *len = take;
    *left -= take;
    if (*left == 0 && pb->inc && (cqe_flags & IORING_CQE_F_BUF_MORE) && take < avail) {
        pb->off[id] = off + take;       /* the kernel goes on filling it */
        *done = 0;
    } else {
        pb->off[id] = 0;
        pb->head++;
        *done = 1;
    }
    return 0;
}

/* One more holder of buffer `bid` (a piece handed on without a copy). */
static inline void rl_pbuf_hold(rl_pbuf_ring *pb, unsigned bid)
{
    pb->holds[bid]++;
}

/* A holder lets go; the last one gives the buffer back. */
static inline void rl_pbuf_put(rl_pbuf_ring *pb, unsigned bid)
{
    if (--pb->holds[bid] == 0)
        rl_pbuf_recycle(pb, bid);
}

/* The CQE's piece is dealt with: unless the kernel keeps filling the buffer
 * (BUF_MORE), its hold ends. */
static inline void rl_pbuf_cqe_done(rl_pbuf_ring *pb, unsigned bid, unsigned cqe_flags)
{
    if (!(cqe_flags & IORING_CQE_F_BUF_MORE) && bid < pb->entries)
        rl_pbuf_put(pb, bid);
}

static void rl_pbuf_ring_free(rl_ring *r, rl_pbuf_ring *pb)
{
    if (!pb->br)
        return;
    if (r && r->fd >= 0) {
        struct io_uring_buf_reg reg;
        memset(&reg, 0, sizeof(reg));
        reg.bgid = pb->bgid;
        rl_register(r->fd, IORING_UNREGISTER_PBUF_RING, &reg, 1);
    }
    munmap(pb->br, pb->br_sz);
    munmap(pb->bufs, pb->bufs_sz);
    free(pb->off);
    free(pb->holds);
    pb->br = NULL;
    pb->bufs = NULL;
    pb->off = NULL;
    pb->holds = NULL;
}

/* --- direct descriptors (a sparse registered-file table) ------------------ */

#ifndef IORING_FILE_INDEX_ALLOC
#define IORING_FILE_INDEX_ALLOC (~0U)
#endif
#define RL_OP_FIXED_FD_INSTALL 54
#define RL_REGISTER_FILES2 13
#define RL_RSRC_REGISTER_SPARSE (1U << 0)
/* The kernel's table limit (IORING_MAX_FIXED_FILES, io_uring/rsrc.h). */
#define RL_MAX_FIXED_FILES (1U << 20)

struct rl_rsrc_register { uint32_t nr; uint32_t flags; uint64_t resv2; uint64_t data; uint64_t tags; };

/*
 * An empty table of n slots (IORING_REGISTER_FILES2 with
 * IORING_RSRC_REGISTER_SPARSE, 5.19; the kernel refuses n > RLIMIT_NOFILE
 * with EMFILE and n > IORING_MAX_FIXED_FILES with EINVAL).  0 or -errno.
 */
static int rl_register_files_sparse(rl_ring *r, unsigned n)
{
    struct rl_rsrc_register reg;
    memset(&reg, 0, sizeof(reg));
    reg.nr = n;
    reg.flags = RL_RSRC_REGISTER_SPARSE;
    if (rl_register(r->fd, RL_REGISTER_FILES2, &reg, sizeof(reg)) < 0)
        return -errno;
    return 0;
}

/*
 * Wait (up to timeout_ns) for the CQE whose user_data is ud, without
 * consuming the ones before it: it is found in place, its result taken and
 * its user_data zeroed, so the next reap skips it (the kernel never reads a
 * posted CQE back).  0 with *res set, -ETIME, or -EBUSY when the CQ is full
 * before it arrives.  For a short synchronous op (FIXED_FD_INSTALL).
 */
static int rl_steal_cqe(rl_ring *r, uint64_t ud, int64_t timeout_ns, int *res)
{
    int64_t deadline = rl_monotonic_ns() + timeout_ns;
    for (;;) {
        unsigned head = *r->cq_khead, tail = RL_LOAD_ACQ(r->cq_ktail);
        for (unsigned i = head; i != tail; i++) {
            struct io_uring_cqe *c = &r->cqes[i & r->cq_mask];
            if (c->user_data == ud) {
                *res = c->res;
                c->user_data = 0;
                return 0;
            }
        }
        if (tail - head >= r->cq_entries)
            return -EBUSY;
        int64_t left = deadline - rl_monotonic_ns();
        if (left <= 0)
            return -ETIME;
        int ret = rl_submit_and_wait(r, tail - head + 1, left);
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EBUSY && ret != -EAGAIN)
            return ret;
    }
}

/* --- probe ---------------------------------------------------------------- */

/* Fills ops[0..255] with 1 where the kernel supports the opcode. */
static int rl_probe(rl_ring *r, unsigned char *ops, unsigned *last_op)
{
    size_t sz = sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op);
    struct io_uring_probe *probe = calloc(1, sz);
    if (!probe)
        return -ENOMEM;
    if (rl_register(r->fd, IORING_REGISTER_PROBE, probe, 256) < 0) {
        int err = errno;
        free(probe);
        return -err;
    }
    *last_op = probe->last_op;
    for (unsigned i = 0; i < probe->ops_len && i < 256; i++)
        ops[probe->ops[i].op] = (probe->ops[i].flags & IO_URING_OP_SUPPORTED) ? 1 : 0;
    free(probe);
    return 0;
}

#endif /* RINGLINE_URING_H */
