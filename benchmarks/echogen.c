/*
 * echogen.c -- closed-loop UDP and TLS echo load generator (epoll, non-blocking).
 *
 * The companion of loadgen.c (plain TCP) for the datagram and TLS echo benchmarks
 * (udp_echo.py, tls_echo.py).  Same JSON output, same -m window markers.
 *
 *   cc -O2 -o echogen echogen.c -lssl -lcrypto
 *   echogen -u -p PORT [-H 127.0.0.1] [-c 64] [-s 1024] [-d 3] [-w 0.5] [-V] [-m]
 *   echogen -t -p PORT [-H 127.0.0.1] [-c 64] [-s 1024] [-d 3] [-w 0.5] [-V] [-m]
 *
 *   -u  UDP: CONNS flows, each its own connected UDP socket with exactly one datagram
 *       of SIZE bytes in flight: send it, wait for the echo, send the next.  A datagram
 *       whose echo has not come back within -T ms (default 200) counts as lost and the
 *       flow sends the next one (a late echo of an earlier datagram is recognised by
 *       its sequence number and ignored).
 *   -t  TLS: CONNS TLS connections (OpenSSL, TLS 1.2+, the server's certificate is not
 *       verified), each with exactly one request in flight: write SIZE bytes, read until
 *       SIZE bytes have come back.  Handshakes happen before the warm-up.
 *   -V  compare every echoed byte with what was sent.
 *   -m  print "# measure-start" / "# measure-end" (flushed) at the edges of the window.
 *
 * JSON fields: requests, rps, mbps (echoed payload one way, 1 MB = 1e6 bytes),
 * lat_us {p50, p90, p99, p999, max, mean}, errors (TLS: failed connections; UDP: echoes
 * with wrong size or content), lost (UDP: datagrams never echoed within -T), stalled_conns.
 *
 * Exit status: 0 ok; 2 if there were errors or no request completed; 1 on bad usage or
 * when the set-up (socket, connect, TLS handshake) fails.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
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
#define PATTERN_SLICES 251
#define SEQ_BYTES 8 /* UDP: each datagram starts with its flow's sequence number */

typedef struct {
    int fd;
    int id;
    SSL *ssl;
    int want_write;          /* TLS: the current SSL_write is waiting for EPOLLOUT */
    const unsigned char *msg;
    size_t sent, got;
    uint64_t seq;
    uint64_t t_issue;
    uint64_t done_in_window;
} conn_t;

static int ep, udp_mode, tls_mode, verify, measuring;
static size_t msg_size = 1024;
static unsigned char *pattern;
static unsigned char recv_buf[RECV_BUF];
static unsigned char send_buf[65536];
static uint64_t errors, lost, live_conns, timeout_ns = 200000000ull;
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

static void die_ssl(const char *what)
{
    fprintf(stderr, "echogen: %s: ", what);
    ERR_print_errors_fp(stderr);
    fprintf(stderr, "\n");
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
    double rank = q * (double)lat_n;
    size_t i = (size_t)rank;
    if ((double)i < rank)
        i++;
    return lat[i ? i - 1 : 0];
}

static void conn_fail(conn_t *c, const char *why)
{
    if (errors < 5)
        fprintf(stderr, "echogen: connection %d: %s (request %llu)\n", c->id, why,
                (unsigned long long)c->seq);
    errors++;
    live_conns--;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
}

static void set_events(conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl");
}

static void request_done(conn_t *c)
{
    if (measuring) {
        record_latency((float)((now_ns() - c->t_issue) / 1000.0));
        c->done_in_window++;
    }
}

/* ------------------------------------------------------------------ UDP */

static void udp_issue(conn_t *c)
{
    size_t slice = verify ? (size_t)((c->seq * 7 + (uint64_t)c->id * 13) % PATTERN_SLICES) : 0;
    c->seq++;
    memcpy(send_buf, pattern + slice, msg_size);
    if (msg_size >= SEQ_BYTES)
        memcpy(send_buf, &c->seq, SEQ_BYTES);
    c->msg = pattern + slice;
    c->t_issue = now_ns();
    ssize_t n = send(c->fd, send_buf, msg_size, 0);
    if (n < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) {
        conn_fail(c, strerror(errno));
        return;
    }
    /* EAGAIN/ENOBUFS/ECONNREFUSED: the datagram is lost; the timeout resends. */
}

static void udp_read(conn_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, recv_buf, sizeof recv_buf, 0);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED)
                conn_fail(c, strerror(errno));
            return;
        }
        uint64_t seq = c->seq;
        if (msg_size >= SEQ_BYTES)
            memcpy(&seq, recv_buf, SEQ_BYTES);
        if (seq != c->seq)
            continue; /* a late echo of a datagram already counted as lost */
        if ((size_t)n != msg_size) {
            errors++;
            if (errors < 5)
                fprintf(stderr, "echogen: flow %d: echo of %zd bytes, sent %zu\n", c->id, n, msg_size);
        } else if (verify && memcmp(recv_buf + SEQ_BYTES, c->msg + SEQ_BYTES, msg_size - SEQ_BYTES)) {
            errors++;
            if (errors < 5)
                fprintf(stderr, "echogen: flow %d: echo differs from what was sent\n", c->id);
        } else {
            request_done(c);
        }
        udp_issue(c);
        if (c->fd < 0)
            return;
    }
}

static void udp_check_timeouts(conn_t *conns, int n)
{
    uint64_t now = now_ns();
    for (int i = 0; i < n; i++) {
        conn_t *c = &conns[i];
        if (c->fd >= 0 && now - c->t_issue > timeout_ns) {
            if (measuring)
                lost++;
            udp_issue(c);
        }
    }
}

/* ------------------------------------------------------------------ TLS */

static void tls_write(conn_t *c)
{
    while (c->sent < msg_size) {
        ERR_clear_error();
        int n = SSL_write(c->ssl, c->msg + c->sent, (int)(msg_size - c->sent));
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_WRITE) {
            if (!c->want_write) {
                c->want_write = 1;
                set_events(c, EPOLLIN | EPOLLOUT);
            }
            return;
        }
        if (err == SSL_ERROR_WANT_READ)
            return;
        conn_fail(c, "SSL_write failed");
        return;
    }
    if (c->want_write) {
        c->want_write = 0;
        set_events(c, EPOLLIN);
    }
}

static void tls_issue(conn_t *c)
{
    size_t slice = verify ? (size_t)((c->seq * 7 + (uint64_t)c->id * 13) % PATTERN_SLICES) : 0;
    c->msg = pattern + slice;
    c->sent = c->got = 0;
    c->seq++;
    c->t_issue = now_ns();
    tls_write(c);
}

static void tls_read(conn_t *c)
{
    for (;;) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, recv_buf, sizeof recv_buf);
        if (n <= 0) {
            int err = SSL_get_error(c->ssl, n);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
                return;
            conn_fail(c, err == SSL_ERROR_ZERO_RETURN ? "server closed the connection" : "SSL_read failed");
            return;
        }
        if (c->got + (size_t)n > c->sent) {
            conn_fail(c, "echo longer than the request");
            return;
        }
        if (verify && memcmp(recv_buf, c->msg + c->got, (size_t)n)) {
            conn_fail(c, "echo differs from what was sent");
            return;
        }
        c->got += (size_t)n;
        if (c->got == msg_size) {
            request_done(c);
            tls_issue(c);
            if (c->fd < 0)
                return;
            /* One request in flight: its echo cannot be here yet unless
               OpenSSL already holds bytes; otherwise the next SSL_read would
               only cost a read() that returns EAGAIN.  The epoll registration
               is level-triggered, so nothing on the socket is missed. */
            if (!SSL_has_pending(c->ssl))
                return;
        }
    }
}

static void tls_handshake(conn_t *c, SSL_CTX *ctx)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl)
        die_ssl("SSL_new");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    for (;;) {
        ERR_clear_error();
        int r = SSL_do_handshake(c->ssl);
        if (r == 1)
            return;
        int err = SSL_get_error(c->ssl, r);
        struct epoll_event ev = {.events = err == SSL_ERROR_WANT_WRITE ? EPOLLOUT : EPOLLIN, .data.ptr = c};
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE)
            die_ssl("TLS handshake");
        /* One connection at a time during set-up: wait on a private epoll. */
        int tmp = epoll_create1(EPOLL_CLOEXEC);
        epoll_ctl(tmp, EPOLL_CTL_ADD, c->fd, &ev);
        struct epoll_event out;
        if (epoll_wait(tmp, &out, 1, 10000) != 1) {
            fprintf(stderr, "echogen: TLS handshake timed out\n");
            exit(1);
        }
        close(tmp);
    }
}

/* ------------------------------------------------------------------ main */

static void usage(void)
{
    fprintf(stderr, "usage: echogen -u|-t -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-d SECONDS] "
                    "[-w WARMUP] [-T TIMEOUT_MS] [-V] [-m]\n");
    exit(1);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, nconns = 64, opt, markers = 0;
    double duration = 3.0, warmup = 0.5;
    while ((opt = getopt(argc, argv, "utH:p:c:s:d:w:T:Vm")) != -1) {
        switch (opt) {
        case 'u': udp_mode = 1; break;
        case 't': tls_mode = 1; break;
        case 'H': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': nconns = atoi(optarg); break;
        case 's': msg_size = (size_t)atol(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'T': timeout_ns = (uint64_t)(atof(optarg) * 1e6); break;
        case 'V': verify = 1; break;
        case 'm': markers = 1; break;
        default: usage();
        }
    }
    if (udp_mode == tls_mode || port <= 0 || nconns <= 0 || msg_size == 0)
        usage();
    if (udp_mode && (msg_size > sizeof send_buf || msg_size < SEQ_BYTES)) {
        fprintf(stderr, "echogen: UDP size must be %d..%zu bytes\n", SEQ_BYTES, sizeof send_buf);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    pattern = malloc(msg_size + PATTERN_SLICES);
    if (!pattern)
        die("malloc");
    for (size_t i = 0; i < msg_size + PATTERN_SLICES; i++)
        pattern[i] = (unsigned char)((i * 131 + 7) ^ (i >> 8));

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echogen: bad IPv4 address %s\n", host);
        return 1;
    }
    SSL_CTX *ctx = NULL;
    if (tls_mode) {
        ctx = SSL_CTX_new(TLS_client_method());
        if (!ctx)
            die_ssl("SSL_CTX_new");
        SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        /* One read() per burst of records instead of two per record (header,
           then body): the client's own cost per request is part of what caps
           the measurement once it nears a core. */
        SSL_CTX_set_read_ahead(ctx, 1);
    }

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->fd = socket(AF_INET, (udp_mode ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (c->fd < 0)
            die("socket");
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die("connect");
        if (tls_mode) {
            int one = 1;
            setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            tls_handshake(c, ctx);
        }
        int fl = fcntl(c->fd, F_GETFL);
        if (fl < 0 || fcntl(c->fd, F_SETFL, fl | O_NONBLOCK) < 0)
            die("fcntl");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    live_conns = (uint64_t)nconns;

    uint64_t t0 = now_ns();
    uint64_t t_start = t0 + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_start + (uint64_t)(duration * 1e9);
    if (warmup <= 0) {
        measuring = 1;
        if (markers) {
            printf("# measure-start\n");
            fflush(stdout);
        }
    }
    for (int i = 0; i < nconns; i++) {
        if (udp_mode)
            udp_issue(&conns[i]);
        else
            tls_issue(&conns[i]);
    }

    struct epoll_event events[MAX_EVENTS];
    uint64_t last_timeout_check = t0;
    for (;;) {
        uint64_t now = now_ns();
        if (!measuring && now >= t_start) {
            measuring = 1;
            if (markers) {
                printf("# measure-start\n");
                fflush(stdout);
            }
        }
        if (now >= t_end || !live_conns)
            break;
        if (udp_mode && now - last_timeout_check > timeout_ns / 4) {
            udp_check_timeouts(conns, nconns);
            last_timeout_check = now;
        }
        int wait_ms = (int)((t_end - now) / 1000000) + 1;
        if (!measuring && (int)((t_start - now) / 1000000) + 1 < wait_ms)
            wait_ms = (int)((t_start - now) / 1000000) + 1;
        if (udp_mode && wait_ms > (int)(timeout_ns / 4000000) + 1)
            wait_ms = (int)(timeout_ns / 4000000) + 1;
        int n = epoll_wait(ep, events, MAX_EVENTS, wait_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (c->fd < 0)
                continue;
            if (udp_mode) {
                udp_read(c);
                continue;
            }
            if (events[i].events & (EPOLLERR | EPOLLHUP | EPOLLIN))
                tls_read(c);
            if (c->fd >= 0 && (events[i].events & EPOLLOUT) && c->sent < msg_size)
                tls_write(c);
        }
    }
    uint64_t t_done = now_ns();
    if (markers) {
        printf("# measure-end\n");
        fflush(stdout);
    }
    double window = (double)((t_done < t_end ? t_done : t_end) - t_start) / 1e9;
    if (window <= 0)
        window = 1e-9;
    uint64_t requests = 0, stalled = 0;
    for (int i = 0; i < nconns; i++) {
        requests += conns[i].done_in_window;
        if (!conns[i].done_in_window)
            stalled++;
    }
    double sum = 0;
    for (size_t i = 0; i < lat_n; i++)
        sum += lat[i];
    qsort(lat, lat_n, sizeof *lat, cmp_float);
    printf("{\"mode\": \"%s\", \"requests\": %llu, \"rps\": %.1f, \"mbps\": %.2f, "
           "\"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f, "
           "\"mean\": %.1f}, \"errors\": %llu, \"lost\": %llu, \"stalled_conns\": %llu, "
           "\"conns\": %d, \"size\": %zu, \"window_s\": %.3f}\n",
           udp_mode ? "udp" : "tls", (unsigned long long)requests, requests / window,
           requests * (double)msg_size / window / 1e6, percentile(0.50), percentile(0.90),
           percentile(0.99), percentile(0.999), lat_n ? lat[lat_n - 1] : 0.0, lat_n ? sum / lat_n : 0.0,
           (unsigned long long)errors, (unsigned long long)lost, (unsigned long long)stalled, nconns,
           msg_size, window);
    fflush(stdout);
    return (errors || !requests) ? 2 : 0;
}
