/* kqueue for the poll backend's kqueue driver (driver/kqueue.pxi).
 *
 * The real <sys/event.h> on macOS and the BSDs, or libkqueue's (a kqueue
 * emulation over epoll, Linux) when RINGLINE_LIBKQUEUE is defined and its
 * include directory is on the path.  Anywhere else this header declares a
 * minimal kqueue API (FreeBSD's names and values) whose functions fail with
 * ENOSYS: the driver is compiled and type-checked on every build but can
 * only ever run where kqueue exists.
 *
 * Field types differ between systems (NetBSD's filter and flags are
 * uint32_t, FreeBSD 12+ has ext[4], macOS's data is intptr_t), so kevents
 * are only filled in here, in C, with memset + named fields.
 */
#ifndef RINGLINE_KQ_H
#define RINGLINE_KQ_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__APPLE__) || defined(__FreeBSD__) || defined(__NetBSD__) \
    || defined(__OpenBSD__) || defined(__DragonFly__) || defined(RINGLINE_LIBKQUEUE)

#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#define RL_HAVE_KQUEUE 1

#else

#define RL_HAVE_KQUEUE 0

struct kevent {
    uintptr_t ident;
    short filter;
    unsigned short flags;
    unsigned int fflags;
    int64_t data;
    void *udata;
};

#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EVFILT_USER (-11)
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ONESHOT 0x0010
#define EV_CLEAR 0x0020
#define EV_RECEIPT 0x0040
#define EV_ERROR 0x4000
#define EV_EOF 0x8000
#define NOTE_TRIGGER 0x01000000

static inline int kqueue(void) { errno = ENOSYS; return -1; }
static inline int kevent(int kq, const struct kevent *changes, int nchanges,
                         struct kevent *events, int nevents, const struct timespec *timeout) {
    (void)kq; (void)changes; (void)nchanges; (void)events; (void)nevents; (void)timeout;
    errno = ENOSYS;
    return -1;
}

#endif

/* EVFILT_USER (a user-triggered event, the wakeup) is missing on older
 * OpenBSD and NetBSD < 10: the driver falls back to a pipe there. */
#ifdef EVFILT_USER
#define RL_HAVE_EVFILT_USER 1
#define RL_EVFILT_USER EVFILT_USER
#define RL_NOTE_TRIGGER NOTE_TRIGGER
#else
#define RL_HAVE_EVFILT_USER 0
#define RL_EVFILT_USER (-32767)     /* matches no filter; never registered */
#define RL_NOTE_TRIGGER 0
#endif

#define RL_KQ_MAX_CHANGES 4
/* The ident of the EVFILT_USER wakeup (its own namespace, not an fd). */
#define RL_KQ_WAKE_IDENT 0

static inline void rl_kev_set(struct kevent *ev, uintptr_t ident, int filter,
                              unsigned flags, unsigned fflags) {
    memset(ev, 0, sizeof(*ev));
    ev->ident = ident;
    ev->filter = filter;
    ev->flags = flags;
    ev->fflags = fflags;
}

/* Apply n <= RL_KQ_MAX_CHANGES changes without taking any event from the
 * queue; errs[i] is 0 or change i's errno.  Returns the kevent() calls made,
 * or -1 with errno when kevent() itself failed (bad kq).
 *
 * With EV_RECEIPT every change reports back as an EV_ERROR entry (data 0 on
 * success) and kevent() returns without scanning for events once any entry
 * was written (FreeBSD kern_kevent_fp, XNU kevent_internal), so one call
 * applies them all and steals nothing.  Without it, kevent() with no event
 * list stops at the first failing change and returns -1: one call each. */
static inline int rl_kq_apply(int kq, struct kevent *ch, int n, int *errs) {
    int i;
#ifdef EV_RECEIPT
    struct kevent out[RL_KQ_MAX_CHANGES];
    struct timespec zero = {0, 0};
    int r, j;
    if (n <= 0 || n > RL_KQ_MAX_CHANGES) {
        errno = EINVAL;
        return -1;
    }
    for (i = 0; i < n; i++) {
        ch[i].flags |= EV_RECEIPT;
        errs[i] = 0;
    }
    r = kevent(kq, ch, n, out, n, &zero);
    if (r < 0)
        return -1;
    for (j = 0; j < r; j++) {
        if (!(out[j].flags & EV_ERROR) || out[j].data == 0)
            continue;
        /* Receipts come back in change order; match to be sure. */
        if (j < n && out[j].ident == ch[j].ident && out[j].filter == ch[j].filter) {
            errs[j] = (int)out[j].data;
            continue;
        }
        for (i = 0; i < n; i++) {
            if (out[j].ident == ch[i].ident && out[j].filter == ch[i].filter && errs[i] == 0) {
                errs[i] = (int)out[j].data;
                break;
            }
        }
    }
    return 1;
#else
    int calls = 0;
    for (i = 0; i < n; i++) {
        int r;
        do {
            r = kevent(kq, &ch[i], 1, NULL, 0, NULL);
            calls++;
        } while (r < 0 && errno == EINTR);
        if (r < 0 && errno == EBADF && fcntl(kq, F_GETFD) < 0) {
            errno = EBADF;  /* the kqueue itself is gone */
            return -1;
        }
        errs[i] = r < 0 ? errno : 0;
    }
    return calls;
#endif
}

/* Wake a kevent() blocked in another thread (EVFILT_USER registered with
 * EV_CLEAR at setup).  Safe from any thread, without the GIL. */
static inline int rl_kq_trigger(int kq) {
    struct kevent ev;
    rl_kev_set(&ev, RL_KQ_WAKE_IDENT, RL_EVFILT_USER, 0, RL_NOTE_TRIGGER);
    return kevent(kq, &ev, 1, NULL, 0, NULL);
}

/* A non-blocking close-on-exec pipe (the wakeup without EVFILT_USER);
 * pipe2() is not on macOS. */
static inline int rl_pipe_nb(int fds[2]) {
    int i;
    if (pipe(fds) < 0)
        return -1;
    for (i = 0; i < 2; i++) {
        int fl = fcntl(fds[i], F_GETFL);
        if (fl < 0 || fcntl(fds[i], F_SETFL, fl | O_NONBLOCK) < 0
                || fcntl(fds[i], F_SETFD, FD_CLOEXEC) < 0) {
            int err = errno;
            close(fds[0]);
            close(fds[1]);
            errno = err;
            return -1;
        }
    }
    return 0;
}

#endif /* RINGLINE_KQ_H */
