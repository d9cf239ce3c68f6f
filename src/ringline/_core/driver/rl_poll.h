/* epoll and eventfd for the poll backend's epoll driver (driver/epoll.pxi).
 *
 * Linux has them.  Elsewhere this header declares them with stubs that
 * fail with ENOSYS, so the epoll driver still compiles (and is type-checked)
 * on a macOS/BSD build, where backend="poll" picks the kqueue driver
 * (driver/kqueue.pxi) instead.  The readiness drivers speak poll(2) bits;
 * RL_POLLRDHUP is the "peer shut its write side" bit (POLLRDHUP, Linux only).
 */
#ifndef RINGLINE_RL_POLL_H
#define RINGLINE_RL_POLL_H

#include <errno.h>
#include <poll.h>
#include <stdint.h>

#if defined(__linux__)

#include <sys/epoll.h>
#include <sys/eventfd.h>

#define RL_HAVE_EPOLL 1
#define RL_POLLRDHUP EPOLLRDHUP
/* poll(2) understands POLLRDHUP too (with _GNU_SOURCE, which Python.h sets). */
#define RL_POLL_SYSCALL_RDHUP POLLRDHUP

/* The drivers pass epoll masks to poll(2) and poll masks to epoll: Linux
 * gives both the same values (include/uapi/linux/eventpoll.h). */
_Static_assert(EPOLLIN == POLLIN && EPOLLPRI == POLLPRI && EPOLLOUT == POLLOUT
               && EPOLLERR == POLLERR && EPOLLHUP == POLLHUP
               && EPOLLRDHUP == POLLRDHUP,
               "epoll and poll event bits differ");

#else  /* not Linux: declarations only, every call fails with ENOSYS */

#define RL_HAVE_EPOLL 0
#define RL_POLLRDHUP 0x2000     /* Linux's value; never reaches a syscall here */
#define RL_POLL_SYSCALL_RDHUP 0

typedef union epoll_data {
    void *ptr;
    int fd;
    uint32_t u32;
    uint64_t u64;
} epoll_data_t;

struct epoll_event {
    uint32_t events;
    epoll_data_t data;
};

#define EPOLL_CLOEXEC 02000000
#define EPOLL_CTL_ADD 1
#define EPOLL_CTL_DEL 2
#define EPOLL_CTL_MOD 3
#define EPOLLIN POLLIN
#define EPOLLPRI POLLPRI
#define EPOLLOUT POLLOUT
#define EPOLLERR POLLERR
#define EPOLLHUP POLLHUP
#define EPOLLRDHUP RL_POLLRDHUP
#define EPOLLONESHOT (1u << 30)
#define EPOLLET (1u << 31)

static inline int epoll_create1(int flags) { (void)flags; errno = ENOSYS; return -1; }
static inline int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev) {
    (void)epfd; (void)op; (void)fd; (void)ev; errno = ENOSYS; return -1;
}
static inline int epoll_wait(int epfd, struct epoll_event *evs, int n, int timeout) {
    (void)epfd; (void)evs; (void)n; (void)timeout; errno = ENOSYS; return -1;
}

#define EFD_CLOEXEC 02000000
#define EFD_NONBLOCK 04000
static inline int eventfd(unsigned int initval, int flags) {
    (void)initval; (void)flags; errno = ENOSYS; return -1;
}

#endif

#endif /* RINGLINE_RL_POLL_H */
