/*
 * uring_echo_variants.c -- /work/shared/bench/uring_echo.c with the receive path's
 * design as options, to measure what a C server can reach with each (issue 18).
 *
 * Raw syscalls, no liburing.  Base design (= uring_echo.c): multishot accept,
 * multishot recv selecting from one provided buffer ring shared by all connections,
 * IORING_OP_SEND straight from the ring buffer, one send in flight per connection,
 * a buffer goes back to the ring when the kernel no longer holds it and every byte
 * received into it has been sent.  SINGLE_ISSUER|DEFER_TASKRUN.
 *
 *   -p PORT     (required)            -H HOST (127.0.0.1)
 *   -e ENTRIES  buffers in the ring, power of two (64)
 *   -s BUFSIZE  bytes per buffer (131072)   -- 64 x 128 KiB = ringline's default
 *   -i          incremental consumption: IOU_PBUF_RING_INC (6.12).  A buffer is
 *               filled in pieces; IORING_CQE_F_BUF_MORE = the kernel keeps it and the
 *               next piece starts where this one ended.
 *   -b          recv bundles: IORING_RECVSEND_BUNDLE (6.10).  One CQE covers several
 *               ring buffers: res = total bytes, first bid in the flags, the rest
 *               follow in ring order.
 *   -g N        gather up to N queued pieces into one IORING_OP_SENDMSG (1 = one
 *               IORING_OP_SEND per piece, as uring_echo.c)
 *   -B          send bundles: IORING_OP_SEND with IOSQE_BUFFER_SELECT|IORING_RECVSEND_BUNDLE
 *               (6.10) from a provided-buffer ring of the connection's own (one buffer
 *               group per connection, its entries pointing at the received pieces, so
 *               no copy).  One send per connection in flight; pieces that arrive while
 *               it runs are appended to the ring and the kernel keeps sending them
 *               (one CQE with F_MORE per batch) until it finds the ring empty.
 *   -c          copy mode: memcpy received data into a per-connection send buffer
 *               and recycle the ring buffer at once (instead of sending from it)
 *   -q N        SQ entries (1024; CQ 4x)      -D  no DEFER_TASKRUN|SINGLE_ISSUER
 * Prints "READY port=N ..." once listening; on SIGINT/SIGTERM prints counters to
 * stderr (CQE flags seen, buffers per CQE, ENOBUFS, io_uring_enter calls) and exits.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/io_uring.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* uapi values newer than this machine's /usr/include/linux/io_uring.h */
#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif
#ifndef IORING_RECVSEND_BUNDLE
#define IORING_RECVSEND_BUNDLE (1U << 4)
#endif
#ifndef IORING_FEAT_RECVSEND_BUNDLE
#define IORING_FEAT_RECVSEND_BUNDLE (1U << 14)
#endif

#define BGID 1
#define SEND_BGID_BASE 2 /* -B: connection fd's send ring is group SEND_BGID_BASE + fd */
#define MAX_GATHER 64
enum { OP_ACCEPT = 1, OP_RECV = 2, OP_SEND = 3 };

static inline uint64_t ud_make(unsigned op, int fd) { return ((uint64_t)op << 56) | (uint32_t)fd; }
#define UD_OP(u) ((unsigned)((u) >> 56))
#define UD_FD(u) ((int)(uint32_t)(u))

static void die(const char *what)
{
    fprintf(stderr, "uring_echo_variants: %s\n", what);
    exit(1);
}

/* ---------------- counters ---------------- */
static struct {
    unsigned long long enter, recv_cqe, recv_bytes, bufs, multi, max_bufs, buf_more, enobufs, rearm, mshot_end,
        sends, sendmsgs, send_short, recycles, bundle_cqes, bundle_bufs, bundle_enobufs;
} S;
static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

/* ---------------- ring ---------------- */
static struct {
    int fd;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array, sq_entries;
    unsigned sq_local_tail, sq_submitted;
    struct io_uring_sqe *sqes;
    unsigned *cq_head, *cq_tail, *cq_mask, cq_entries;
    struct io_uring_cqe *cqes;
    unsigned features;
} R;

static int sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}
static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}
static int sys_register(int fd, unsigned op, void *arg, unsigned nr)
{
    return (int)syscall(__NR_io_uring_register, fd, op, arg, nr);
}

static const char *g_setup_desc = "";

static int ring_init(unsigned entries, int want_defer)
{
    struct io_uring_params p;
    static const struct {
        unsigned flags;
        const char *desc;
    } tries[] = {
        {IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_SUBMIT_ALL,
         "SINGLE_ISSUER|DEFER_TASKRUN"},
        {IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL, "COOP_TASKRUN"},
        {0, "plain"},
    };
    int fd = -1;
    for (unsigned i = want_defer ? 0 : 1; i < sizeof tries / sizeof tries[0]; i++) {
        memset(&p, 0, sizeof p);
        p.flags = tries[i].flags | IORING_SETUP_CQSIZE;
        p.cq_entries = entries * 4;
        fd = sys_setup(entries, &p);
        if (fd >= 0) {
            g_setup_desc = tries[i].desc;
            break;
        }
    }
    if (fd < 0) {
        perror("io_uring_setup");
        return -1;
    }
    if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
        fprintf(stderr, "kernel lacks IORING_FEAT_SINGLE_MMAP\n");
        return -1;
    }
    R.fd = fd;
    R.features = p.features;
    size_t sring = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cring = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t sz = sring > cring ? sring : cring;
    char *ring = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (ring == MAP_FAILED) {
        perror("mmap ring");
        return -1;
    }
    R.sq_head = (unsigned *)(ring + p.sq_off.head);
    R.sq_tail = (unsigned *)(ring + p.sq_off.tail);
    R.sq_mask = (unsigned *)(ring + p.sq_off.ring_mask);
    R.sq_array = (unsigned *)(ring + p.sq_off.array);
    R.sq_entries = p.sq_entries;
    R.cq_head = (unsigned *)(ring + p.cq_off.head);
    R.cq_tail = (unsigned *)(ring + p.cq_off.tail);
    R.cq_mask = (unsigned *)(ring + p.cq_off.ring_mask);
    R.cq_entries = p.cq_entries;
    R.cqes = (struct io_uring_cqe *)(ring + p.cq_off.cqes);
    R.sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (R.sqes == MAP_FAILED) {
        perror("mmap sqes");
        return -1;
    }
    for (unsigned i = 0; i < p.sq_entries; i++)
        R.sq_array[i] = i;
    R.sq_local_tail = R.sq_submitted = *R.sq_tail;
    return 0;
}

static int ring_submit(unsigned wait)
{
    __atomic_store_n(R.sq_tail, R.sq_local_tail, __ATOMIC_RELEASE);
    unsigned pending = R.sq_local_tail - R.sq_submitted;
    if (!pending && !wait)
        return 0;
    for (;;) {
        S.enter++;
        int r = sys_enter(R.fd, pending, wait, wait ? IORING_ENTER_GETEVENTS : 0);
        if (r >= 0) {
            R.sq_submitted += (unsigned)r;
            return r;
        }
        if (errno == EINTR) {
            if (g_stop)
                return 0;
            continue;
        }
        if (errno == EAGAIN || errno == EBUSY)
            return 0; /* CQ backlog: reap first */
        perror("io_uring_enter");
        exit(1);
    }
}

static struct io_uring_sqe *get_sqe(void)
{
    for (;;) {
        unsigned head = __atomic_load_n(R.sq_head, __ATOMIC_ACQUIRE);
        if (R.sq_local_tail - head < R.sq_entries) {
            struct io_uring_sqe *sqe = &R.sqes[R.sq_local_tail & *R.sq_mask];
            R.sq_local_tail++;
            memset(sqe, 0, sizeof *sqe);
            return sqe;
        }
        ring_submit(0);
    }
}

/* ---------------- provided buffer ring ---------------- */
static struct io_uring_buf_ring *g_br;
static unsigned g_nbufs = 64, g_bufsz = 131072;
static int g_inc, g_bundle, g_copy, g_gather = 1, g_sbundle;
static unsigned g_sring = 64; /* -B: entries of each connection's send ring */
static uint16_t g_br_tail;
static char *g_bufs;
static uint16_t *g_slot_bid; /* ring position (mod entries) -> bid put there */
static uint16_t *g_bid_pos;  /* bid -> ring position (16-bit counter) it was put at */
static unsigned *g_kfill;    /* bid -> bytes the kernel has written into it (INC offsets) */
static unsigned char *g_kheld; /* bid -> the kernel may still write into it */
static unsigned *g_refs;     /* bid -> queued pieces not yet sent */
static unsigned g_out;       /* buffers not in the ring */

static void buf_put(unsigned bid)
{
    struct io_uring_buf *b = &g_br->bufs[g_br_tail & (g_nbufs - 1)];
    b->addr = (uint64_t)(uintptr_t)(g_bufs + (size_t)bid * g_bufsz);
    b->len = g_bufsz;
    b->bid = (uint16_t)bid;
    g_slot_bid[g_br_tail & (g_nbufs - 1)] = (uint16_t)bid;
    g_bid_pos[bid] = g_br_tail;
    g_kfill[bid] = 0;
    g_kheld[bid] = 1;
    g_br_tail++;
    __atomic_store_n(&g_br->tail, g_br_tail, __ATOMIC_RELEASE);
}

static void buf_maybe_recycle(unsigned bid)
{
    if (!g_kheld[bid] && g_refs[bid] == 0) {
        S.recycles++;
        g_out--;
        buf_put(bid);
    }
}

static int bufring_init(void)
{
    size_t ringsz = (size_t)g_nbufs * sizeof(struct io_uring_buf);
    g_br = mmap(NULL, ringsz, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (g_br == MAP_FAILED) {
        perror("mmap buf ring");
        return -1;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)g_br;
    reg.ring_entries = g_nbufs;
    reg.bgid = BGID;
    /* the u16 after bgid is `flags` in 6.12+ headers (`pad` in older ones) */
    memcpy((char *)&reg + 14, &(uint16_t){g_inc ? IOU_PBUF_RING_INC : 0}, 2);
    if (sys_register(R.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        perror(g_inc ? "IORING_REGISTER_PBUF_RING(IOU_PBUF_RING_INC)" : "IORING_REGISTER_PBUF_RING");
        return -1;
    }
    if (posix_memalign((void **)&g_bufs, 4096, (size_t)g_nbufs * g_bufsz)) {
        perror("posix_memalign");
        return -1;
    }
    g_slot_bid = calloc(g_nbufs, sizeof *g_slot_bid);
    g_bid_pos = calloc(g_nbufs, sizeof *g_bid_pos);
    g_kfill = calloc(g_nbufs, sizeof *g_kfill);
    g_kheld = calloc(g_nbufs, sizeof *g_kheld);
    g_refs = calloc(g_nbufs, sizeof *g_refs);
    if (!g_slot_bid || !g_bid_pos || !g_kfill || !g_kheld || !g_refs)
        die("out of memory");
    g_br_tail = 0;
    for (unsigned i = 0; i < g_nbufs; i++)
        buf_put(i);
    return 0;
}

/* ---------------- pieces: a received run of bytes waiting to be sent ---------------- */
typedef struct {
    uint16_t bid;
    unsigned off, len;
    int next;
} piece_t;
static piece_t *g_pieces;
static int g_npieces, g_pfree = -1;

static int piece_new(unsigned bid, unsigned off, unsigned len)
{
    int i = g_pfree;
    if (i < 0) {
        int n = g_npieces ? g_npieces * 2 : 1024;
        g_pieces = realloc(g_pieces, (size_t)n * sizeof *g_pieces);
        if (!g_pieces)
            die("out of memory");
        for (int k = n - 1; k >= g_npieces; k--) {
            g_pieces[k].next = g_pfree;
            g_pfree = k;
        }
        g_npieces = n;
        i = g_pfree;
    }
    g_pfree = g_pieces[i].next;
    g_pieces[i] = (piece_t){.bid = (uint16_t)bid, .off = off, .len = len, .next = -1};
    g_refs[bid]++;
    return i;
}

static void piece_free(int i)
{
    unsigned bid = g_pieces[i].bid;
    g_pieces[i].next = g_pfree;
    g_pfree = i;
    g_refs[bid]--;
    buf_maybe_recycle(bid);
}

/* ---------------- connections ---------------- */
typedef struct {
    int used, recv_armed, send_busy, closing, starved;
    int qhead, qtail;  /* FIFO of pieces (indexes into g_pieces) */
    unsigned qoff;     /* bytes of the head piece already sent */
    int nsent;         /* pieces in the send in flight */
    struct msghdr msg; /* for SENDMSG (must stay valid until the send completes) */
    struct iovec iov[MAX_GATHER];
    /* copy mode: obuf is being sent; pbuf collects what arrives meanwhile */
    char *obuf, *pbuf;
    size_t olen, osent, ocap, plen, pcap;
    /* -B: the connection's send ring; its first `inring` queued pieces are in it */
    struct io_uring_buf_ring *sbr;
    uint16_t sbr_tail;
    unsigned inring;
    int sbr_reg;
} conn_t;

static conn_t *g_conns;
static int g_nconns, g_nstarved;

static conn_t *conn_at(int fd)
{
    if (fd >= g_nconns) {
        int n = g_nconns ? g_nconns : 1024;
        while (n <= fd)
            n *= 2;
        g_conns = realloc(g_conns, (size_t)n * sizeof *g_conns);
        if (!g_conns)
            die("out of memory");
        memset(g_conns + g_nconns, 0, (size_t)(n - g_nconns) * sizeof *g_conns);
        g_nconns = n;
    }
    return &g_conns[fd];
}

static void arm_accept(int lfd)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_ACCEPT;
    sqe->fd = lfd;
    sqe->ioprio = IORING_ACCEPT_MULTISHOT;
    sqe->accept_flags = SOCK_CLOEXEC;
    sqe->user_data = ud_make(OP_ACCEPT, lfd);
}

static void arm_recv(int fd)
{
    struct io_uring_sqe *sqe = get_sqe();
    sqe->opcode = IORING_OP_RECV;
    sqe->fd = fd;
    sqe->ioprio = IORING_RECV_MULTISHOT | (g_bundle ? IORING_RECVSEND_BUNDLE : 0);
    sqe->flags = IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    sqe->user_data = ud_make(OP_RECV, fd);
    g_conns[fd].recv_armed = 1;
}

/* -B: register the connection's send ring (kept mapped across reuse of the slot) */
static void sring_open(int fd)
{
    conn_t *c = &g_conns[fd];
    if (fd + SEND_BGID_BASE > 0xffff)
        die("fd too large for a send buffer group");
    if (!c->sbr) {
        c->sbr = mmap(NULL, (size_t)g_sring * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
        if (c->sbr == MAP_FAILED)
            die("mmap send ring");
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)c->sbr;
    reg.ring_entries = g_sring;
    reg.bgid = (uint16_t)(fd + SEND_BGID_BASE);
    if (sys_register(R.fd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        perror("IORING_REGISTER_PBUF_RING (send ring)");
        exit(1);
    }
    c->sbr_tail = 0;
    __atomic_store_n(&c->sbr->tail, 0, __ATOMIC_RELEASE);
    c->inring = 0;
    c->sbr_reg = 1;
}

static void sring_close(int fd)
{
    conn_t *c = &g_conns[fd];
    if (!c->sbr_reg)
        return;
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.bgid = (uint16_t)(fd + SEND_BGID_BASE);
    if (sys_register(R.fd, IORING_UNREGISTER_PBUF_RING, &reg, 1) < 0)
        perror("IORING_UNREGISTER_PBUF_RING");
    c->sbr_reg = 0;
}

/* -B: append queued pieces not yet in the ring, while it has room */
static void sring_fill(conn_t *c)
{
    int p = c->qhead;
    unsigned k = 0, off = c->qoff;
    for (; p >= 0 && k < c->inring; p = g_pieces[p].next, k++)
        off = 0;
    for (; p >= 0 && c->inring < g_sring; p = g_pieces[p].next) {
        piece_t *pc = &g_pieces[p];
        struct io_uring_buf *b = &c->sbr->bufs[c->sbr_tail & (g_sring - 1)];
        b->addr = (uint64_t)(uintptr_t)(g_bufs + (size_t)pc->bid * g_bufsz + pc->off + off);
        b->len = pc->len - off;
        b->bid = c->sbr_tail & (g_sring - 1);
        off = 0;
        c->sbr_tail++;
        c->inring++;
    }
    __atomic_store_n(&c->sbr->tail, c->sbr_tail, __ATOMIC_RELEASE);
}

static void start_send(int fd)
{
    conn_t *c = &g_conns[fd];
    struct io_uring_sqe *sqe = get_sqe();
    sqe->fd = fd;
    sqe->msg_flags = MSG_NOSIGNAL | MSG_WAITALL; /* WAITALL: the kernel retries short sends */
    sqe->user_data = ud_make(OP_SEND, fd);
    c->send_busy = 1;
    if (g_copy) {
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)(c->obuf + c->osent);
        sqe->len = (unsigned)(c->olen - c->osent);
        S.sends++;
        return;
    }
    if (g_sbundle) {
        /* len 0: as much as the ring holds; the kernel takes the buffers from the ring's
         * head in order and sends them as one iovec array (io_send_select_buffer) */
        sring_fill(c);
        sqe->opcode = IORING_OP_SEND;
        sqe->flags = IOSQE_BUFFER_SELECT;
        sqe->buf_group = (uint16_t)(fd + SEND_BGID_BASE);
        sqe->ioprio = IORING_RECVSEND_BUNDLE;
        S.sends++;
        return;
    }
    int n = 0;
    unsigned off = c->qoff;
    for (int p = c->qhead; p >= 0 && n < g_gather; p = g_pieces[p].next, n++) {
        piece_t *pc = &g_pieces[p];
        c->iov[n].iov_base = g_bufs + (size_t)pc->bid * g_bufsz + pc->off + off;
        c->iov[n].iov_len = pc->len - off;
        off = 0;
    }
    c->nsent = n;
    if (n == 1) {
        sqe->opcode = IORING_OP_SEND;
        sqe->addr = (uint64_t)(uintptr_t)c->iov[0].iov_base;
        sqe->len = (unsigned)c->iov[0].iov_len;
        S.sends++;
    } else {
        memset(&c->msg, 0, sizeof c->msg);
        c->msg.msg_iov = c->iov;
        c->msg.msg_iovlen = (size_t)n;
        sqe->opcode = IORING_OP_SENDMSG;
        sqe->addr = (uint64_t)(uintptr_t)&c->msg;
        sqe->len = 1;
        S.sendmsgs++;
    }
}

static void drop_queue(conn_t *c)
{
    while (c->qhead >= 0) {
        int p = c->qhead;
        c->qhead = g_pieces[p].next;
        piece_free(p);
    }
    c->qtail = -1;
    c->qoff = 0;
    c->olen = c->osent = c->plen = 0;
}

static int has_queued(conn_t *c) { return c->qhead >= 0 || c->olen > c->osent || c->plen > 0; }

static void maybe_close(int fd)
{
    conn_t *c = &g_conns[fd];
    if (!c->closing || c->recv_armed || c->send_busy || has_queued(c))
        return;
    if (c->starved) {
        c->starved = 0;
        g_nstarved--;
    }
    if (g_sbundle)
        sring_close(fd);
    close(fd);
    free(c->obuf);
    free(c->pbuf);
    c->obuf = c->pbuf = NULL;
    c->ocap = c->pcap = 0;
    c->used = 0;
}

static void fail_conn(int fd)
{
    conn_t *c = &g_conns[fd];
    if (!c->closing) {
        c->closing = 1;
        shutdown(fd, SHUT_RDWR); /* terminates the multishot recv */
    }
    if (!c->send_busy)
        drop_queue(c);
    maybe_close(fd);
}

static void rearm_starved(void)
{
    static int cursor;
    for (int i = 0; g_nstarved > 0 && i < g_nconns; i++) {
        int fd = (cursor + i) % g_nconns;
        conn_t *c = &g_conns[fd];
        if (c->used && c->starved) {
            c->starved = 0;
            g_nstarved--;
            S.rearm++;
            if (!c->closing)
                arm_recv(fd);
            else
                maybe_close(fd);
            cursor = fd + 1;
        }
    }
}

static void append_copy(conn_t *c, const char *src, unsigned len)
{
    /* while a send is in flight obuf must not move: collect into pbuf */
    char **buf = c->send_busy ? &c->pbuf : &c->obuf;
    size_t *blen = c->send_busy ? &c->plen : &c->olen;
    size_t *cap = c->send_busy ? &c->pcap : &c->ocap;
    if (!c->send_busy && c->osent == c->olen)
        c->olen = c->osent = 0;
    if (*blen + len > *cap) {
        size_t n = *cap ? *cap : 65536;
        while (n < *blen + len)
            n *= 2;
        char *nb = realloc(*buf, n);
        if (!nb)
            die("out of memory");
        *buf = nb;
        *cap = n;
    }
    memcpy(*buf + *blen, src, len);
    *blen += len;
}

/* a recv CQE with data: split it into pieces per ring buffer, queue them on the connection */
static void on_recv_data(int fd, const struct io_uring_cqe *cqe)
{
    conn_t *c = &g_conns[fd];
    if (!(cqe->flags & IORING_CQE_F_BUFFER))
        die("recv completion without a buffer");
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    unsigned remaining = (unsigned)cqe->res, nb = 0;
    int buf_more = (cqe->flags & IORING_CQE_F_BUF_MORE) != 0;
    uint16_t pos = g_bid_pos[bid];
    S.recv_cqe++;
    S.recv_bytes += remaining;
    if (buf_more)
        S.buf_more++;
    while (remaining) {
        if (nb && !g_bundle)
            die("data beyond one buffer without a bundle");
        bid = g_slot_bid[pos & (g_nbufs - 1)];
        if (!g_kheld[bid])
            die("CQE names a buffer the kernel had already finished");
        /* INC: data goes where the previous piece of this bid ended (kernel bumps
         * the ring entry's addr/len in place); otherwise every buffer starts at 0 */
        unsigned off = g_inc ? g_kfill[bid] : 0;
        unsigned take = remaining < g_bufsz - off ? remaining : g_bufsz - off;
        remaining -= take;
        nb++;
        /* earlier buffers of a bundle were used up; the last one stays with the
         * kernel only if it says so (BUF_MORE, INC only) */
        int done = remaining > 0 || !buf_more;
        if (g_inc) {
            g_kfill[bid] += take;
            if (g_kfill[bid] == g_bufsz && !done)
                die("BUF_MORE on a full buffer");
        }
        if (done) {
            g_kheld[bid] = 0;
            g_out++;
        }
        if (g_copy || c->closing) {
            if (!c->closing)
                append_copy(c, g_bufs + (size_t)bid * g_bufsz + off, take);
            buf_maybe_recycle(bid);
        } else {
            int p = piece_new(bid, off, take);
            if (c->qtail >= 0)
                g_pieces[c->qtail].next = p;
            else
                c->qhead = p;
            c->qtail = p;
        }
        pos++;
    }
    S.bufs += nb;
    if (nb > 1)
        S.multi++;
    if (nb > S.max_bufs)
        S.max_bufs = nb;
    if (!c->send_busy && !c->closing && has_queued(c))
        start_send(fd);
    else if (g_sbundle && c->send_busy && !c->closing)
        sring_fill(c); /* the send in flight picks these up before it ends */
}

static void on_send_done(int fd, int res, int more)
{
    conn_t *c = &g_conns[fd];
    if (!more)
        c->send_busy = 0;
    if (g_sbundle && res == -ENOBUFS) {
        /* the bundle found the ring empty (all its pieces went in earlier CQEs) */
        S.bundle_enobufs++;
        if (has_queued(c))
            start_send(fd);
        else
            maybe_close(fd);
        return;
    }
    if (res < 0) {
        if (g_sbundle && more)
            return; /* the final CQE follows */
        fail_conn(fd);
        return;
    }
    if (g_sbundle) {
        /* the kernel consumed the ring entries covering res bytes; with MSG_WAITALL
         * (forced for bundles by io_send_prep) none is left half sent */
        unsigned left = (unsigned)res, nb = 0;
        S.bundle_cqes++;
        while (left && c->qhead >= 0) {
            piece_t *pc = &g_pieces[c->qhead];
            unsigned rest = pc->len - c->qoff;
            if (left < rest)
                die("bundle send ended inside a buffer");
            left -= rest;
            int p = c->qhead;
            c->qhead = pc->next;
            if (c->qhead < 0)
                c->qtail = -1;
            c->qoff = 0;
            piece_free(p);
            nb++;
        }
        if (nb > c->inring)
            die("bundle send consumed more buffers than were in the ring");
        c->inring -= nb;
        S.bundle_bufs += nb;
        if (more) {
            if (!c->closing)
                sring_fill(c);
            return;
        }
        if (has_queued(c))
            start_send(fd);
        else
            maybe_close(fd);
        return;
    }
    if (g_copy) {
        c->osent += (size_t)res;
        if (c->osent < c->olen)
            S.send_short++;
        else {
            /* swap: what arrived during the send goes next */
            char *t = c->obuf;
            size_t tc = c->ocap;
            c->obuf = c->pbuf;
            c->ocap = c->pcap;
            c->olen = c->plen;
            c->osent = 0;
            c->pbuf = t;
            c->pcap = tc;
            c->plen = 0;
        }
    } else {
        unsigned left = (unsigned)res;
        for (int n = 0; n < c->nsent && c->qhead >= 0; n++) {
            piece_t *pc = &g_pieces[c->qhead];
            unsigned rest = pc->len - c->qoff;
            if (left < rest) {
                c->qoff += left;
                S.send_short++;
                break;
            }
            left -= rest;
            int p = c->qhead;
            c->qhead = pc->next;
            if (c->qhead < 0)
                c->qtail = -1;
            c->qoff = 0;
            piece_free(p);
        }
    }
    /* after EOF too: finish echoing what is queued, then close */
    if (has_queued(c))
        start_send(fd);
    else
        maybe_close(fd);
}

static void on_cqe(const struct io_uring_cqe *cqe, int lfd)
{
    uint64_t ud = cqe->user_data;
    int res = cqe->res;
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    int fd = UD_FD(ud);
    switch (UD_OP(ud)) {
    case OP_ACCEPT:
        if (res >= 0) {
            int one = 1;
            setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            conn_t *c = conn_at(res);
            char *ob = c->obuf, *pb = c->pbuf;
            size_t oc = c->ocap, pcap = c->pcap;
            struct io_uring_buf_ring *sbr = c->sbr;
            memset(c, 0, sizeof *c);
            c->obuf = ob, c->pbuf = pb, c->ocap = oc, c->pcap = pcap;
            c->sbr = sbr;
            c->used = 1;
            c->qhead = c->qtail = -1;
            if (g_sbundle)
                sring_open(res);
            arm_recv(res);
        } else if (res != -EAGAIN && res != -EINTR && res != -ECONNABORTED) {
            fprintf(stderr, "accept: %s\n", strerror(-res));
        }
        if (!more)
            arm_accept(lfd);
        break;
    case OP_RECV: {
        conn_t *c = &g_conns[fd];
        if (!more)
            c->recv_armed = 0;
        if (res > 0) {
            on_recv_data(fd, cqe);
            if (!more && !c->closing) {
                /* multishot ended with data: CQ pressure, or (bundles) the peek took
                 * every buffer left in the ring (REQ_F_BL_EMPTY): re-arm */
                S.mshot_end++;
                arm_recv(fd);
            }
        } else if (res == -ENOBUFS) {
            /* the ring ran dry: the multishot recv ends (no F_MORE) and consumed nothing */
            S.enobufs++;
            if (cqe->flags & IORING_CQE_F_BUFFER)
                die("ENOBUFS with a buffer");
            if (!more && !c->closing) {
                c->starved = 1;
                g_nstarved++;
            }
        } else if (res == 0) {
            c->closing = 1; /* EOF: finish sending what is queued, then close */
        } else {
            c->closing = 1;
            if (!c->send_busy)
                drop_queue(c);
        }
        maybe_close(fd);
        break;
    }
    case OP_SEND:
        on_send_done(fd, res, more);
        break;
    default:
        fprintf(stderr, "unknown completion %llx\n", (unsigned long long)ud);
    }
}

static void print_stats(void)
{
    fprintf(stderr,
            "uring_echo_variants stats: enter=%llu recv_cqe=%llu recv_bytes=%llu bufs=%llu "
            "multi_buf_cqe=%llu max_bufs_per_cqe=%llu buf_more=%llu enobufs=%llu rearm=%llu mshot_end=%llu "
            "sends=%llu sendmsgs=%llu short_sends=%llu recycles=%llu buffers_out=%u "
            "bundle_cqes=%llu bundle_bufs=%llu bundle_enobufs=%llu\n",
            S.enter, S.recv_cqe, S.recv_bytes, S.bufs, S.multi, S.max_bufs, S.buf_more, S.enobufs,
            S.rearm, S.mshot_end, S.sends, S.sendmsgs, S.send_short, S.recycles, g_out, S.bundle_cqes,
            S.bundle_bufs, S.bundle_enobufs);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL;
    unsigned sq_entries = 1024;
    int want_defer = 1, opt;
    const char *usage = "usage: %s -p PORT [-H HOST] [-e ENTRIES] [-s BUFSIZE] [-i] [-b] [-B] [-g N] [-c] [-q SQ] [-D]\n";
    while ((opt = getopt(argc, argv, "H:p:e:s:ibBg:cq:D")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'e': g_nbufs = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': g_bufsz = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'i': g_inc = 1; break;
        case 'b': g_bundle = 1; break;
        case 'B': g_sbundle = 1; break;
        case 'g': g_gather = atoi(optarg); break;
        case 'c': g_copy = 1; break;
        case 'q': sq_entries = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'D': want_defer = 0; break;
        default: fprintf(stderr, usage, argv[0]); return 1;
        }
    }
    if (!port || g_nbufs == 0 || (g_nbufs & (g_nbufs - 1)) || g_nbufs > 32768 || g_bufsz == 0 ||
        g_bufsz > (1u << 30) || g_gather < 1 || g_gather > MAX_GATHER) {
        fprintf(stderr, usage, argv[0]);
        return 1;
    }
    struct sigaction sa = {.sa_handler = on_signal}; /* no SA_RESTART: io_uring_enter gets EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "getaddrinfo: %s\n", gai_strerror(gai));
        return 1;
    }
    int lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(lfd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(lfd, 4096) < 0) {
        perror("bind/listen");
        return 1;
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    int actual = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);

    if (ring_init(sq_entries, want_defer) < 0)
        return 1;
    if (g_sbundle && g_copy) {
        fprintf(stderr, "-B sends the received pieces: not with -c\n");
        return 1;
    }
    if (g_sring < g_nbufs)
        g_sring = g_nbufs; /* without -i a connection never queues more pieces than buffers */
    if ((g_bundle || g_sbundle) && !(R.features & IORING_FEAT_RECVSEND_BUNDLE)) {
        fprintf(stderr, "kernel lacks IORING_FEAT_RECVSEND_BUNDLE\n");
        return 1;
    }
    if (bufring_init() < 0) /* INC unsupported (< 6.12): register fails with EINVAL */
        return 1;
    conn_at(lfd);
    arm_accept(lfd);

    printf("READY port=%d server=uring_echo_variants setup=%s bufs=%ux%u inc=%d bundle=%d gather=%d copy=%d send_bundle=%d\n",
           actual, g_setup_desc, g_nbufs, g_bufsz, g_inc, g_bundle, g_gather, g_copy, g_sbundle);
    fflush(stdout);

    while (!g_stop) {
        ring_submit(1);
        unsigned head = *R.cq_head;
        unsigned tail = __atomic_load_n(R.cq_tail, __ATOMIC_ACQUIRE);
        while (head != tail) {
            on_cqe(&R.cqes[head & *R.cq_mask], lfd);
            head++;
            if (head == tail) {
                __atomic_store_n(R.cq_head, head, __ATOMIC_RELEASE);
                tail = __atomic_load_n(R.cq_tail, __ATOMIC_ACQUIRE);
            }
        }
        __atomic_store_n(R.cq_head, head, __ATOMIC_RELEASE);
        if (g_nstarved > 0 && g_out < g_nbufs)
            rearm_starved();
    }
    print_stats();
    return 0;
}
