/*
 * pbuf_semantics.c -- print what the running kernel does with provided buffer rings in
 * multishot recv: plain, incremental (IOU_PBUF_RING_INC), bundles (IORING_RECVSEND_BUNDLE),
 * both, and when the ring runs dry (ENOBUFS).  A TCP pair over loopback; the test writes
 * known bytes, reaps CQEs one write at a time, and prints bid, res, flags and where in
 * the buffer memory the bytes landed (found by content, so offsets are observed, not
 * assumed).  Raw syscalls, no liburing.  Exit status 1 if a step's observation is not
 * what the kernel documentation describes.
 *
 *   cc -O2 -o pbuf_semantics pbuf_semantics.c && ./pbuf_semantics
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

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

#define NB 4
#define BS 1024

static int rfd;
static unsigned *sq_tail, *sq_mask, *cq_head, *cq_tail, *cq_mask, sq_local;
static struct io_uring_sqe *sqes;
static struct io_uring_cqe *cqes;
static struct io_uring_buf_ring *br;
static uint16_t br_tail;
static char *mem;
static int failures;

/* wait (up to 200 ms, so a missing CQE shows as a failed step instead of a hang) */
static int enter(unsigned submit, unsigned wait)
{
    struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 200000000};
    struct io_uring_getevents_arg arg = {.sigmask = 0, .sigmask_sz = _NSIG / 8, .ts = (uint64_t)(uintptr_t)&ts};
    if (!wait)
        return (int)syscall(__NR_io_uring_enter, rfd, submit, 0, 0, NULL, 0);
    return (int)syscall(__NR_io_uring_enter, rfd, submit, wait, IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG,
                        &arg, sizeof arg);
}

static void setup(unsigned ring_flags, unsigned *features)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    rfd = (int)syscall(__NR_io_uring_setup, 16, &p);
    if (rfd < 0) {
        perror("io_uring_setup");
        exit(2);
    }
    *features = p.features;
    size_t sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.sq_off.array + p.sq_entries * sizeof(unsigned) > sz)
        sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    char *r = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd, IORING_OFF_SQ_RING);
    sqes = mmap(NULL, p.sq_entries * sizeof *sqes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, rfd,
                IORING_OFF_SQES);
    if (r == MAP_FAILED || sqes == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    sq_tail = (unsigned *)(r + p.sq_off.tail);
    sq_mask = (unsigned *)(r + p.sq_off.ring_mask);
    unsigned *arr = (unsigned *)(r + p.sq_off.array);
    for (unsigned i = 0; i < p.sq_entries; i++)
        arr[i] = i;
    sq_local = *sq_tail;
    cq_head = (unsigned *)(r + p.cq_off.head);
    cq_tail = (unsigned *)(r + p.cq_off.tail);
    cq_mask = (unsigned *)(r + p.cq_off.ring_mask);
    cqes = (struct io_uring_cqe *)(r + p.cq_off.cqes);

    br = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    mem = mmap(NULL, NB * BS, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof reg);
    reg.ring_addr = (uint64_t)(uintptr_t)br;
    reg.ring_entries = NB;
    reg.bgid = 1;
    uint16_t fl = (uint16_t)ring_flags; /* `flags` (6.12+ headers) = `pad` here */
    memcpy((char *)&reg + 14, &fl, 2);
    if (syscall(__NR_io_uring_register, rfd, IORING_REGISTER_PBUF_RING, &reg, 1) < 0) {
        perror("IORING_REGISTER_PBUF_RING");
        exit(2);
    }
    br_tail = 0;
}

static void add_buf(unsigned bid)
{
    struct io_uring_buf *b = &br->bufs[br_tail & (NB - 1)];
    b->addr = (uint64_t)(uintptr_t)(mem + bid * BS);
    b->len = BS;
    b->bid = (uint16_t)bid;
    br_tail++;
    __atomic_store_n(&br->tail, br_tail, __ATOMIC_RELEASE);
}

static void arm_recv(int fd, int bundle)
{
    struct io_uring_sqe *s = &sqes[sq_local & *sq_mask];
    memset(s, 0, sizeof *s);
    s->opcode = IORING_OP_RECV;
    s->fd = fd;
    s->ioprio = IORING_RECV_MULTISHOT | (bundle ? IORING_RECVSEND_BUNDLE : 0);
    s->flags = IOSQE_BUFFER_SELECT;
    s->buf_group = 1;
    s->user_data = 7;
    sq_local++;
    __atomic_store_n(sq_tail, sq_local, __ATOMIC_RELEASE);
    if (enter(1, 0) != 1) {
        perror("submit");
        exit(2);
    }
}

static unsigned char next_byte; /* bytes written are a counter: content locates them */

static void write_n(int fd, unsigned n)
{
    unsigned char buf[8192];
    for (unsigned i = 0; i < n; i++)
        buf[i] = next_byte++;
    if (write(fd, buf, n) != (ssize_t)n) {
        perror("write");
        exit(2);
    }
    usleep(20000); /* loopback: the bytes are in the receive queue */
}

struct obs {
    int res;
    unsigned flags, bid;
};

/* reap every CQE now available; print each; return how many */
static int reap(const char *step, struct obs *out, int max)
{
    int n = 0;
    enter(0, 1);
    unsigned h = *cq_head, t = __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE);
    for (; h != t; h++) {
        struct io_uring_cqe *c = &cqes[h & *cq_mask];
        char fl[128] = "";
        if (c->flags & IORING_CQE_F_BUFFER) strcat(fl, "BUFFER ");
        if (c->flags & IORING_CQE_F_MORE) strcat(fl, "MORE ");
        if (c->flags & IORING_CQE_F_SOCK_NONEMPTY) strcat(fl, "SOCK_NONEMPTY ");
        if (c->flags & IORING_CQE_F_BUF_MORE) strcat(fl, "BUF_MORE ");
        printf("  %-34s res=%-6d bid=%-2u flags=%s\n", step, c->res,
               (c->flags & IORING_CQE_F_BUFFER) ? c->flags >> IORING_CQE_BUFFER_SHIFT : 0, fl);
        if (n < max)
            out[n] = (struct obs){c->res, c->flags, c->flags >> IORING_CQE_BUFFER_SHIFT};
        n++;
    }
    __atomic_store_n(cq_head, h, __ATOMIC_RELEASE);
    return n;
}

/* did the `len` bytes of a write starting with value `first` land at `off` of the buffer memory */
static int at(long off, unsigned char first, unsigned len)
{
    for (unsigned k = 0; k < len; k++)
        if ((unsigned char)mem[off + k] != (unsigned char)(first + k))
            return 0;
    return 1;
}

static void expect(int cond, const char *what)
{
    printf("  %s: %s\n", cond ? "ok  " : "FAIL", what);
    if (!cond)
        failures++;
}

static void pair(int *a, int *b)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (bind(l, (struct sockaddr *)&sa, sizeof sa) || listen(l, 1) || getsockname(l, (struct sockaddr *)&sa, &sl)) {
        perror("listen");
        exit(2);
    }
    *a = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(*a, (struct sockaddr *)&sa, sizeof sa)) {
        perror("connect");
        exit(2);
    }
    *b = accept(l, NULL, NULL);
    setsockopt(*a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    close(l);
}

static void teardown(int a, int b)
{
    close(a);
    close(b);
    close(rfd);
    munmap(br, 4096);
    munmap(mem, NB * BS);
}

int main(void)
{
    unsigned feat;
    int w, r, n;
    struct obs o[8];
    unsigned char first;
    setvbuf(stdout, NULL, _IOLBF, 0);

    printf("1. INC ring (%d x %d B), multishot recv, no bundle\n", NB, BS);
    setup(IOU_PBUF_RING_INC, &feat);
    for (unsigned i = 0; i < NB; i++)
        add_buf(i);
    pair(&w, &r);
    arm_recv(r, 0);
    first = next_byte;
    write_n(w, 300);
    n = reap("write 300", o, 8);
    expect(n == 1 && o[0].res == 300 && o[0].bid == 0 && (o[0].flags & IORING_CQE_F_BUF_MORE),
           "300 B into bid 0, BUF_MORE set (bid 0 stays with the kernel)");
    expect(at(0, first, 300), "bytes at offset 0 of bid 0");
    first = next_byte;
    write_n(w, 300);
    n = reap("write 300", o, 8);
    expect(n == 1 && o[0].res == 300 && o[0].bid == 0 && (o[0].flags & IORING_CQE_F_BUF_MORE),
           "next 300 B again bid 0, BUF_MORE");
    expect(at(300, first, 300), "bytes at offset 300 of bid 0 (where the previous piece ended)");
    first = next_byte;
    write_n(w, 600);
    n = reap("write 600 (424 left in bid 0)", o, 8);
    expect(n == 2 && o[0].res == 424 && o[0].bid == 0 && !(o[0].flags & IORING_CQE_F_BUF_MORE) &&
               o[1].res == 176 && o[1].bid == 1 && (o[1].flags & IORING_CQE_F_BUF_MORE),
           "without bundles: one CQE fills bid 0 to its end (no BUF_MORE: kernel done with it), "
           "a second starts bid 1");
    expect(at(600, first, 424) && at(BS, (unsigned char)(first + 424), 176),
           "offsets 600 in bid 0, then 0 in bid 1");
    teardown(w, r);

    if (!(feat & IORING_FEAT_RECVSEND_BUNDLE)) {
        printf("kernel lacks IORING_FEAT_RECVSEND_BUNDLE: bundle steps skipped\n");
        return failures ? 1 : 0;
    }

    printf("2. plain ring (%d x %d B), multishot recv with BUNDLE\n", NB, BS);
    next_byte = 0;
    setup(0, &feat);
    for (unsigned i = 0; i < NB; i++)
        add_buf(i);
    pair(&w, &r);
    arm_recv(r, 1);
    first = next_byte;
    write_n(w, 300);
    n = reap("write 300", o, 8);
    expect(n == 1 && o[0].res == 300 && o[0].bid == 0 && !(o[0].flags & IORING_CQE_F_BUF_MORE),
           "300 B in bid 0; the rest of bid 0 is lost to this recv (no INC)");
    first = next_byte;
    write_n(w, 2500);
    n = reap("write 2500", o, 8);
    expect(n >= 1 && o[0].bid == 1 && o[0].res > BS && o[0].res + (n > 1 ? o[1].res : 0) == 2500 &&
               (n == 1 || o[1].bid == 1 + (unsigned)(o[0].res + BS - 1) / BS),
           "bundle: first CQE starts at bid 1 and spans several bids in ring order; if the data is "
           "split over two CQEs the second starts at the next unused bid");
    expect(at(BS, first, 2500), "data contiguous from bid 1 (adjacent memory here)");
    first = next_byte;
    write_n(w, 100);
    n = reap("write 100, ring empty", o, 8);
    expect(n == 1 && o[0].res == -ENOBUFS && !(o[0].flags & IORING_CQE_F_MORE),
           "ENOBUFS ends the multishot recv (no F_MORE)");
    add_buf(0);
    arm_recv(r, 1);
    n = reap("re-add bid 0, re-arm", o, 8);
    expect(n == 1 && o[0].res == 100 && o[0].bid == 0 && at(0, first, 100),
           "re-armed recv delivers the 100 B that waited in the socket: no data lost");
    expect(n == 1 && !(o[0].flags & IORING_CQE_F_MORE),
           "bundle recv that took every buffer in the ring ends its multishot (data CQE without F_MORE)");
    teardown(w, r);

    printf("3. INC ring (%d x %d B), multishot recv with BUNDLE\n", NB, BS);
    next_byte = 0;
    setup(IOU_PBUF_RING_INC, &feat);
    for (unsigned i = 0; i < NB; i++)
        add_buf(i);
    pair(&w, &r);
    arm_recv(r, 1);
    first = next_byte;
    write_n(w, 300);
    n = reap("write 300", o, 8);
    expect(n == 1 && o[0].res == 300 && o[0].bid == 0 && (o[0].flags & IORING_CQE_F_BUF_MORE),
           "300 B in bid 0, BUF_MORE");
    first = next_byte;
    write_n(w, 2000);
    n = reap("write 2000", o, 8);
    expect(n == 1 && o[0].res == 2000 && o[0].bid == 0 && (o[0].flags & IORING_CQE_F_BUF_MORE),
           "one CQE: starts in bid 0 at offset 300, fills it, all of bid 1, 252 B of bid 2; "
           "BUF_MORE refers to the last buffer (bid 2)");
    expect(at(300, first, 2000), "data from offset 300 of bid 0 on");
    first = next_byte;
    write_n(w, 100);
    n = reap("write 100", o, 8);
    expect(n == 1 && o[0].res == 100 && o[0].bid == 2 && (o[0].flags & IORING_CQE_F_BUF_MORE) &&
               at(2 * BS + 252, first, 100),
           "next CQE continues in bid 2 at offset 252");
    if (n >= 1 && !(o[n - 1].flags & IORING_CQE_F_MORE)) {
        printf("  (multishot ended: its last peek took every buffer left in the ring; re-arm)\n");
        arm_recv(r, 1);
    }
    first = next_byte;
    write_n(w, 2000);
    n = reap("write 2000 (672 + 1024 left)", o, 8);
    printf("  (ring holds bid 2 remainder 672 B and bid 3 1024 B: 1696 B for 2000 B)\n");
    int got = 0;
    for (int i = 0; i < n && i < 8; i++)
        got += o[i].res > 0 ? o[i].res : 0;
    expect(got == 1696 && at(2 * BS + 352, first, 672) && at(3 * BS, (unsigned char)(first + 672), 1024) &&
               !(o[n - 1].flags & IORING_CQE_F_MORE),
           "INC+BUNDLE: delivers what fits (1696 B: bid 2 from 352, bid 3), and the multishot ends");
    add_buf(0);
    arm_recv(r, 1);
    n = reap("re-add bid 0, re-arm", o, 8);
    expect(n == 1 && o[0].res == 304 && o[0].bid == 0 && at(0, (unsigned char)(first + 1696), 304),
           "the 304 B left in the socket arrive after re-arming: nothing lost");
    teardown(w, r);

    printf(failures ? "%d step(s) differ from the documented behaviour\n" : "all steps as documented\n", failures);
    return failures ? 1 : 0;
}
