/* What a registered ring fd (IORING_REGISTER_RING_FDS, 5.18+) saves per
 * io_uring_enter: one NOP submitted and waited for per call, alternating
 * rounds with the plain ring fd and with the registered index, in a process
 * with a second thread (a shared fd table, as any Python process with a
 * thread has: fdget then takes a reference).  ringline registers its ring fd
 * while a loop runs (src/ringline/_core/driver/uring.h).
 *
 *   gcc -O2 -o /tmp/uring_enter benchmarks/uring_enter.c -lpthread
 *   taskset -c 0 /tmp/uring_enter 1000000
 */
#include <linux/io_uring.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static int setup(unsigned n, struct io_uring_params *p) { return syscall(__NR_io_uring_setup, n, p); }
static int enter(int fd, unsigned s, unsigned m, unsigned f) { return syscall(__NR_io_uring_enter, fd, s, m, f, NULL, 0); }
static void *idle(void *a) { pause(); return a; }
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
    int N = argc > 1 ? atoi(argv[1]) : 2000000;
    pthread_t th; pthread_create(&th, NULL, idle, NULL);
    struct io_uring_params p; memset(&p, 0, sizeof p);
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
    int fd = setup(8, &p);
    if (fd < 0) { perror("setup"); return 1; }
    size_t sqsz = p.sq_off.array + p.sq_entries * 4, cqsz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (cqsz > sqsz) sqsz = cqsz;
    char *sq = mmap(0, sqsz, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    struct io_uring_sqe *sqes = mmap(0, p.sq_entries * sizeof *sqes, PROT_READ|PROT_WRITE, MAP_SHARED|MAP_POPULATE, fd, IORING_OFF_SQES);
    unsigned *sq_tail = (unsigned *)(sq + p.sq_off.tail), *sq_array = (unsigned *)(sq + p.sq_off.array);
    unsigned *cq_head = (unsigned *)(sq + p.cq_off.head);
    unsigned mask = *(unsigned *)(sq + p.sq_off.ring_mask);
    struct io_uring_rsrc_update up = { .offset = -1U, .data = fd };
    if (syscall(__NR_io_uring_register, fd, IORING_REGISTER_RING_FDS, &up, 1) != 1) { perror("register"); return 1; }
    for (int round = 0; round < 6; round++) {
        int reg = round % 2;
        double t0 = now();
        for (int i = 0; i < N; i++) {
            unsigned tail = *sq_tail;
            struct io_uring_sqe *s = &sqes[tail & mask];
            memset(s, 0, sizeof *s); s->opcode = IORING_OP_NOP;
            sq_array[tail & mask] = tail & mask;
            __atomic_store_n(sq_tail, tail + 1, __ATOMIC_RELEASE);
            int r = reg ? enter(up.offset, 1, 1, IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING)
                        : enter(fd, 1, 1, IORING_ENTER_GETEVENTS);
            if (r != 1) { perror("enter"); return 1; }
            __atomic_store_n(cq_head, *cq_head + 1, __ATOMIC_RELEASE);
        }
        double dt = now() - t0;
        printf("%s: %.1f ns per enter\n", reg ? "registered" : "plain fd  ", dt / N * 1e9);
    }
    return 0;
}
