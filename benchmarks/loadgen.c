/*
 * loadgen.c -- closed-loop TCP echo load generator (epoll, non-blocking sockets).
 *
 * Opens CONNS connections to HOST:PORT.  Every connection has exactly one request in
 * flight: it writes SIZE bytes, waits until SIZE bytes have come back, then writes the
 * next request.  The first WARMUP seconds are not counted; then DURATION seconds are
 * measured and one JSON line is printed on stdout.
 *
 *   cc -O2 -o loadgen loadgen.c
 *   loadgen -p PORT [-H 127.0.0.1] [-c 64] [-s 1024] [-d 3] [-w 0.5] [-V] [-m]
 *
 *   -V  compare every echoed byte with what was sent (each request uses a different
 *       slice of a pattern, so stale or reordered data is caught too).  Without -V only
 *       byte counts are checked: an echo may never be longer than what was sent.
 *   -m  print "# measure-start" and "# measure-end" lines on stdout (flushed) at the
 *       edges of the measured window, so a caller can sample e.g. the server's CPU time
 *       over exactly that window.
 *
 * JSON fields: requests and rps (requests completed in the window), mbps (echoed
 * payload, one direction, 1 MB = 1e6 bytes), lat_us {p50, p90, p99, p999, max, mean}
 * (write of a request's first byte to receipt of its echo's last byte, requests completed
 * in the window), errors (connections that failed: reset, early close, wrong byte count
 * or content), stalled_conns (connections that completed nothing in the window).
 *
 * Exit status: 0 ok; 2 if there were errors or no request completed; 1 on bad usage
 * or when a connection cannot be opened.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256
#define RECV_BUF (256 * 1024)
#define PATTERN_SLICES 251 /* prime, so consecutive requests rarely share an offset */

typedef struct {
    int fd;
    int id;
    int out_armed;          /* EPOLLOUT currently requested */
    const unsigned char *msg; /* current request's bytes (a slice of the pattern) */
    size_t sent, got;       /* bytes of the current request written / echoed so far */
    uint64_t seq;           /* requests issued on this connection */
    uint64_t t_issue;       /* ns */
    uint64_t done_in_window;
} conn_t;

static int ep;
static size_t msg_size = 1024;
static int verify;
static unsigned char *pattern; /* msg_size + PATTERN_SLICES bytes */
static unsigned char recv_buf[RECV_BUF];
static int measuring;
static uint64_t errors, live_conns;

/* latencies of requests completed in the window, in microseconds */
static float *lat;
static size_t lat_n, lat_cap;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void record_latency(float us)
{
    if (lat_n == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 1 << 20;
        lat = realloc(lat, lat_cap * sizeof *lat);
        if (!lat)
            die("realloc");
    }
    lat[lat_n++] = us;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static double percentile(double q)
{
    if (!lat_n)
        return 0.0;
    double rank = q * (double)lat_n; /* nearest rank: the ceil(rank)-th smallest */
    size_t i = (size_t)rank;
    if ((double)i < rank)
        i++;
    return lat[i ? i - 1 : 0];
}

/* A failed connection is dropped; the others go on.  Only the first few are described. */
static void conn_fail(conn_t *c, const char *why)
{
    if (errors < 5)
        fprintf(stderr, "loadgen: connection %d: %s (request %llu, %zu/%zu bytes sent, %zu echoed)\n",
                c->id, why, (unsigned long long)c->seq, c->sent, msg_size, c->got);
    errors++;
    live_conns--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void set_out_armed(conn_t *c, int on)
{
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
    c->out_armed = on;
}

/* Write as much of the current request as the socket takes. */
static void conn_write(conn_t *c)
{
    while (c->sent < msg_size) {
        ssize_t n = send(c->fd, c->msg + c->sent, msg_size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->out_armed)
                set_out_armed(c, 1);
            return;
        } else {
            conn_fail(c, n < 0 ? strerror(errno) : "send returned 0");
            return;
        }
    }
    if (c->out_armed)
        set_out_armed(c, 0);
}

static void conn_issue(conn_t *c)
{
    /* Without -V the content does not matter: always send the pattern's start. */
    size_t slice = verify ? (size_t)((c->seq * 7 + (uint64_t)c->id * 13) % PATTERN_SLICES) : 0;
    c->msg = pattern + slice;
    c->sent = c->got = 0;
    c->seq++;
    c->t_issue = now_ns();
    conn_write(c);
}

static void conn_read(conn_t *c)
{
    ssize_t n = recv(c->fd, recv_buf, sizeof recv_buf, 0);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            conn_fail(c, strerror(errno));
        return;
    }
    if (n == 0) {
        conn_fail(c, "server closed the connection");
        return;
    }
    /* One request in flight: the echo can never be ahead of what was written. */
    if (c->got + (size_t)n > c->sent) {
        conn_fail(c, "server echoed more bytes than were sent");
        return;
    }
    if (verify && memcmp(recv_buf, c->msg + c->got, (size_t)n) != 0) {
        conn_fail(c, "echoed bytes differ from the bytes sent");
        return;
    }
    c->got += (size_t)n;
    if (c->got < msg_size)
        return;
    if (measuring) {
        record_latency((float)((double)(now_ns() - c->t_issue) / 1000.0));
        c->done_in_window++;
    }
    conn_issue(c);
}

static int connect_to(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
        die("socket");
    /* Blocking connect keeps set-up simple; the server is already listening. */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        die("fcntl");
    return fd;
}

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-d SECONDS] [-w SECONDS] [-V] [-m]\n",
            argv0);
    exit(1);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL;
    int nconns = 64, markers = 0, opt;
    double duration = 3.0, warmup = 0.5;

    while ((opt = getopt(argc, argv, "H:p:c:s:d:w:Vm")) != -1) {
        switch (opt) {
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 's': msg_size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'd': duration = strtod(optarg, NULL); break;
        case 'w': warmup = strtod(optarg, NULL); break;
        case 'V': verify = 1; break;
        case 'm': markers = 1; break;
        default: usage(argv[0]);
        }
    }
    if (!port || nconns < 1 || msg_size < 1 || duration <= 0 || warmup < 0)
        usage(argv[0]);
    signal(SIGPIPE, SIG_IGN);

    pattern = malloc(msg_size + PATTERN_SLICES);
    if (!pattern)
        die("malloc");
    for (size_t i = 0; i < msg_size + PATTERN_SLICES; i++)
        pattern[i] = (unsigned char)((i * 131 + (i >> 8)) & 0xff);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "loadgen: %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }
    ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->fd = connect_to(ai);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    freeaddrinfo(ai);
    live_conns = (uint64_t)nconns;

    uint64_t t0 = now_ns();
    uint64_t t_measure = t0 + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
    for (int i = 0; i < nconns; i++)
        conn_issue(&conns[i]);
    if (warmup == 0) {
        measuring = 1;
        if (markers) {
            printf("# measure-start\n");
            fflush(stdout);
        }
    }

    struct epoll_event evs[MAX_EVENTS];
    uint64_t t_stop;
    for (;;) {
        uint64_t t = now_ns();
        if (!measuring && t >= t_measure) {
            measuring = 1;
            t_measure = t;
            t_end = t + (uint64_t)(duration * 1e9);
            if (markers) {
                printf("# measure-start\n");
                fflush(stdout);
            }
        }
        if (t >= t_end || live_conns == 0) {
            t_stop = t;
            break;
        }
        uint64_t deadline = measuring ? t_end : t_measure;
        int timeout_ms = (int)((deadline - t + 999999) / 1000000);
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                conn_read(c);
            if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                conn_write(c);
        }
    }
    if (markers) {
        printf("# measure-end\n");
        fflush(stdout);
    }

    double window = measuring ? (double)(t_stop - t_measure) / 1e9 : 0.0;
    uint64_t stalled = 0;
    for (int i = 0; i < nconns; i++) {
        stalled += conns[i].done_in_window == 0;
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    }
    qsort(lat, lat_n, sizeof *lat, cmp_float);
    double sum = 0;
    for (size_t i = 0; i < lat_n; i++)
        sum += lat[i];
    double rps = window > 0 ? (double)lat_n / window : 0.0;
    printf("{\"host\": \"%s\", \"port\": %s, \"conns\": %d, \"size\": %zu, \"warmup\": %.3f, "
           "\"duration\": %.3f, \"verify\": %s, \"requests\": %zu, \"rps\": %.1f, \"mbps\": %.3f, "
           "\"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, "
           "\"mean\": %.1f}, \"errors\": %llu, \"stalled_conns\": %llu}\n",
           host, port, nconns, msg_size, warmup, window, verify ? "true" : "false", lat_n, rps,
           rps * (double)msg_size / 1e6, percentile(0.50), percentile(0.90), percentile(0.99),
           percentile(0.999), lat_n ? lat[lat_n - 1] : 0.0, lat_n ? sum / (double)lat_n : 0.0,
           (unsigned long long)errors, (unsigned long long)stalled);
    return errors || lat_n == 0 ? 2 : 0;
}
