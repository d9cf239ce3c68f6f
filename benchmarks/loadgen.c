/*
 * loadgen.c -- closed-loop echo load generator (epoll, non-blocking sockets): TCP, UDP
 * and TLS modes in one client (run_echo.py: TCP; udp_echo.py: -u; tls_echo.py: -t).
 *
 * Opens CONNS connections (UDP: flows) to HOST:PORT.  Every one has exactly one request
 * in flight: it writes SIZE bytes, waits until SIZE bytes have come back, then writes the
 * next request.  The first WARMUP seconds are not counted; then DURATION seconds are
 * measured and one JSON line is printed on stdout.
 *
 *   cc -O2 -o loadgen loadgen.c                                       # TCP and UDP
 *   cc -O2 -DWITH_TLS -o loadgen-tls loadgen.c -lssl -lcrypto         # and TLS (libssl-dev)
 *   loadgen [-u|-t] -p PORT [-H 127.0.0.1] [-c 64] [-s 1024] [-d 3] [-w 0.5] [-T 200] [-V] [-m]
 *
 *   (no mode flag)  TCP: CONNS connections (TCP_NODELAY).
 *   -u  UDP: CONNS flows, each its own connected UDP socket with one datagram of SIZE
 *       bytes (8..65536; the first 8 carry the flow's sequence number) in flight.  A
 *       datagram whose echo has not come back within -T ms (default 200) counts as lost
 *       (never as a request) and the flow sends the next one; a late echo of an earlier
 *       datagram is recognised by its sequence number and ignored.
 *   -t  TLS: CONNS TLS connections (OpenSSL, TLS 1.2+, read-ahead, the server's
 *       certificate is not verified), handshakes done before the warm-up; reads only
 *       until the echo is complete.  Only in a build with -DWITH_TLS.
 *   -V  compare every echoed byte with what was sent (each request uses a different
 *       slice of a pattern, so stale or reordered data is caught too).  Without -V only
 *       byte counts are checked: an echo may never be longer than what was sent.
 *   -m  print "# measure-start" and "# measure-end" lines on stdout (flushed) at the
 *       edges of the measured window, so a caller can sample e.g. the server's CPU time
 *       over exactly that window.
 *
 * JSON fields: mode, host, port, conns, size, warmup, duration (the measured window, s),
 * verify, requests and rps (requests completed in the window), mbps (echoed payload, one
 * direction, 1 MB = 1e6 bytes), lat_us {p50, p90, p99, p999, max, mean} (write of a
 * request's first byte to receipt of its echo's last byte, requests completed in the
 * window), errors (TCP/TLS: connections that failed: reset, early close, wrong byte count
 * or content; UDP: echoes of the wrong size or content), lost (UDP: datagrams of the
 * window never echoed within -T; 0 otherwise), stalled_conns (connections that completed
 * nothing in the window).
 *
 * Exit status: 0 ok; 2 if there were errors or no request completed; 1 on bad usage
 * or when the set-up (address, socket, connect, TLS handshake) fails.
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
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define MAX_EVENTS 256
#define RECV_BUF (256 * 1024)
#define PATTERN_SLICES 251 /* prime, so consecutive requests rarely share an offset */
#define SEQ_BYTES 8        /* UDP: each datagram starts with its flow's sequence number */
#define UDP_MAX 65536

enum { MODE_TCP, MODE_UDP, MODE_TLS };
static const char *const mode_names[] = {"tcp", "udp", "tls"};

typedef struct {
    int fd;
    int id;
    int out_armed;            /* EPOLLOUT currently requested */
    const unsigned char *msg; /* current request's bytes (a slice of the pattern) */
    size_t sent, got;         /* bytes of the current request written / echoed so far */
    uint64_t seq;             /* requests issued on this connection */
    uint64_t t_issue;         /* ns */
    uint64_t done_in_window;
#ifdef WITH_TLS
    SSL *ssl;
#endif
} conn_t;

static int ep, mode = MODE_TCP;
static size_t msg_size = 1024;
static int verify;
static unsigned char *pattern; /* msg_size + PATTERN_SLICES bytes */
static unsigned char recv_buf[RECV_BUF];
static unsigned char send_buf[UDP_MAX];
static int measuring;
static uint64_t errors, lost, live_conns, timeout_ns = 200000000ull;

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
#ifdef WITH_TLS
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
#endif
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

/* The request's echo is complete. */
static void request_done(conn_t *c)
{
    if (measuring) {
        record_latency((float)((double)(now_ns() - c->t_issue) / 1000.0));
        c->done_in_window++;
    }
}

static const unsigned char *next_slice(conn_t *c)
{
    /* Without -V the content does not matter: always send the pattern's start. */
    size_t slice = verify ? (size_t)((c->seq * 7 + (uint64_t)c->id * 13) % PATTERN_SLICES) : 0;
    return pattern + slice;
}

static void issue(conn_t *c);

/* ------------------------------------------------------------------ TCP */

/* Write as much of the current request as the socket takes. */
static void tcp_write(conn_t *c)
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

/* Checks N freshly echoed bytes in recv_buf; returns 1 when the request is complete. */
static int stream_echoed(conn_t *c, size_t n)
{
    /* One request in flight: the echo can never be ahead of what was written. */
    if (c->got + n > c->sent) {
        conn_fail(c, "server echoed more bytes than were sent");
        return 0;
    }
    if (verify && memcmp(recv_buf, c->msg + c->got, n) != 0) {
        conn_fail(c, "echoed bytes differ from the bytes sent");
        return 0;
    }
    c->got += n;
    return c->got == msg_size;
}

static void tcp_read(conn_t *c)
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
    if (stream_echoed(c, (size_t)n)) {
        request_done(c);
        issue(c);
    }
}

/* ------------------------------------------------------------------ UDP */

static void udp_issue(conn_t *c)
{
    c->msg = next_slice(c);
    c->seq++;
    memcpy(send_buf, c->msg, msg_size);
    memcpy(send_buf, &c->seq, SEQ_BYTES);
    c->t_issue = now_ns();
    ssize_t n = send(c->fd, send_buf, msg_size, 0);
    if (n < 0 && errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED && errno != EINTR)
        conn_fail(c, strerror(errno));
    /* EAGAIN/ENOBUFS/ECONNREFUSED: the datagram is lost; the timeout sends the next. */
}

static void udp_read(conn_t *c)
{
    for (;;) {
        ssize_t n = recv(c->fd, recv_buf, sizeof recv_buf, 0);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNREFUSED)
                conn_fail(c, strerror(errno));
            return;
        }
        uint64_t seq = c->seq;
        if ((size_t)n >= SEQ_BYTES)
            memcpy(&seq, recv_buf, SEQ_BYTES);
        if (seq != c->seq)
            continue; /* a late echo of a datagram already counted as lost */
        if ((size_t)n != msg_size) {
            if (errors++ < 5)
                fprintf(stderr, "loadgen: flow %d: echo of %zd bytes, sent %zu\n", c->id, n, msg_size);
        } else if (verify && memcmp(recv_buf + SEQ_BYTES, c->msg + SEQ_BYTES, msg_size - SEQ_BYTES)) {
            if (errors++ < 5)
                fprintf(stderr, "loadgen: flow %d: echo differs from what was sent\n", c->id);
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
#ifdef WITH_TLS
static void die_ssl(const char *what)
{
    fprintf(stderr, "loadgen: %s: ", what);
    ERR_print_errors_fp(stderr);
    fprintf(stderr, "\n");
    exit(1);
}

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
            if (!c->out_armed)
                set_out_armed(c, 1);
            return;
        }
        if (err == SSL_ERROR_WANT_READ)
            return;
        conn_fail(c, "SSL_write failed");
        return;
    }
    if (c->out_armed)
        set_out_armed(c, 0);
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
        if (!stream_echoed(c, (size_t)n)) {
            if (c->fd < 0)
                return;
            continue;
        }
        request_done(c);
        issue(c);
        if (c->fd < 0)
            return;
        /* One request in flight: its echo cannot be here yet unless OpenSSL already
           holds bytes; otherwise the next SSL_read would only cost a read() that returns
           EAGAIN.  The epoll registration is level-triggered, so nothing is missed. */
        if (!SSL_has_pending(c->ssl))
            return;
    }
}

static SSL_CTX *tls_context(void)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx)
        die_ssl("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* One read() per burst of records instead of two per record (header, then body):
       the client's own cost per request is part of what caps the measurement once it
       nears a core. */
    SSL_CTX_set_read_ahead(ctx, 1);
    return ctx;
}

/* On the still-blocking socket, before the warm-up. */
static void tls_handshake(conn_t *c, SSL_CTX *ctx)
{
    c->ssl = SSL_new(ctx);
    if (!c->ssl)
        die_ssl("SSL_new");
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_connect_state(c->ssl);
    ERR_clear_error();
    if (SSL_do_handshake(c->ssl) != 1)
        die_ssl("TLS handshake");
}
#endif

/* ------------------------------------------------------------------ main */

/* The next request: UDP sends one datagram, TCP/TLS write what the socket takes. */
static void issue(conn_t *c)
{
    if (mode == MODE_UDP) {
        udp_issue(c);
        return;
    }
    c->msg = next_slice(c);
    c->sent = c->got = 0;
    c->seq++;
    c->t_issue = now_ns();
#ifdef WITH_TLS
    if (mode == MODE_TLS) {
        tls_write(c);
        return;
    }
#endif
    tcp_write(c);
}

static int open_conn(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0)
        die("socket");
    /* Blocking connect keeps set-up simple; the server is already listening. */
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
        die("connect");
    if (mode != MODE_UDP) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

static void set_nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("fcntl");
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-u|-t] -p PORT [-H HOST] [-c CONNS] [-s SIZE] [-d SECONDS] [-w SECONDS] "
            "[-T TIMEOUT_MS] [-V] [-m]\n"
            "  no mode flag: TCP; -u: UDP; -t: TLS%s\n",
            argv0,
#ifdef WITH_TLS
            ""
#else
            " (not in this build: compile with -DWITH_TLS ... -lssl -lcrypto)"
#endif
    );
    exit(1);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *port = NULL;
    int nconns = 64, markers = 0, opt, modes = 0;
    double duration = 3.0, warmup = 0.5;

    while ((opt = getopt(argc, argv, "utH:p:c:s:d:w:T:Vm")) != -1) {
        switch (opt) {
        case 'u': mode = MODE_UDP; modes++; break;
        case 't': mode = MODE_TLS; modes++; break;
        case 'H': host = optarg; break;
        case 'p': port = optarg; break;
        case 'c': nconns = atoi(optarg); break;
        case 's': msg_size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'd': duration = strtod(optarg, NULL); break;
        case 'w': warmup = strtod(optarg, NULL); break;
        case 'T': timeout_ns = (uint64_t)(strtod(optarg, NULL) * 1e6); break;
        case 'V': verify = 1; break;
        case 'm': markers = 1; break;
        default: usage(argv[0]);
        }
    }
    if (!port || modes > 1 || nconns < 1 || msg_size < 1 || duration <= 0 || warmup < 0 || !timeout_ns)
        usage(argv[0]);
#ifndef WITH_TLS
    if (mode == MODE_TLS) {
        fprintf(stderr, "loadgen: -t (TLS) needs a build with -DWITH_TLS and -lssl -lcrypto\n");
        return 1;
    }
#endif
    if (mode == MODE_UDP && (msg_size > UDP_MAX || msg_size < SEQ_BYTES)) {
        fprintf(stderr, "loadgen: UDP size must be %d..%d bytes\n", SEQ_BYTES, UDP_MAX);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    pattern = malloc(msg_size + PATTERN_SLICES);
    if (!pattern)
        die("malloc");
    for (size_t i = 0; i < msg_size + PATTERN_SLICES; i++)
        pattern[i] = (unsigned char)((i * 131 + (i >> 8)) & 0xff);

    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = mode == MODE_UDP ? SOCK_DGRAM : SOCK_STREAM},
                    *ai;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai) {
        fprintf(stderr, "loadgen: %s:%s: %s\n", host, port, gai_strerror(gai));
        return 1;
    }
#ifdef WITH_TLS
    SSL_CTX *ctx = mode == MODE_TLS ? tls_context() : NULL;
#endif
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    conn_t *conns = calloc((size_t)nconns, sizeof *conns);
    if (!conns)
        die("calloc");
    for (int i = 0; i < nconns; i++) {
        conn_t *c = &conns[i];
        c->id = i;
        c->fd = open_conn(ai);
#ifdef WITH_TLS
        if (mode == MODE_TLS)
            tls_handshake(c, ctx);
#endif
        set_nonblocking(c->fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
            die("epoll_ctl");
    }
    freeaddrinfo(ai);
    live_conns = (uint64_t)nconns;

    uint64_t t0 = now_ns();
    uint64_t t_measure = t0 + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
    if (warmup == 0) {
        measuring = 1;
        if (markers) {
            printf("# measure-start\n");
            fflush(stdout);
        }
    }
    for (int i = 0; i < nconns; i++)
        issue(&conns[i]);

    struct epoll_event evs[MAX_EVENTS];
    uint64_t t_stop, last_timeout_check = t0;
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
        if (mode == MODE_UDP && t - last_timeout_check > timeout_ns / 4) {
            udp_check_timeouts(conns, nconns);
            last_timeout_check = t;
        }
        uint64_t deadline = measuring ? t_end : t_measure;
        int timeout_ms = (int)((deadline - t + 999999) / 1000000);
        if (mode == MODE_UDP && timeout_ms > (int)(timeout_ns / 4000000) + 1)
            timeout_ms = (int)(timeout_ns / 4000000) + 1;
        int n = epoll_wait(ep, evs, MAX_EVENTS, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            switch (mode) {
            case MODE_UDP:
                udp_read(c);
                break;
            case MODE_TCP:
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    tcp_read(c);
                if (c->fd >= 0 && (evs[i].events & EPOLLOUT))
                    tcp_write(c);
                break;
#ifdef WITH_TLS
            case MODE_TLS:
                if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    tls_read(c);
                if (c->fd >= 0 && (evs[i].events & EPOLLOUT) && c->sent < msg_size)
                    tls_write(c);
                break;
#endif
            }
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
    printf("{\"mode\": \"%s\", \"host\": \"%s\", \"port\": %s, \"conns\": %d, \"size\": %zu, "
           "\"warmup\": %.3f, \"duration\": %.3f, \"verify\": %s, \"requests\": %zu, \"rps\": %.1f, "
           "\"mbps\": %.3f, \"lat_us\": {\"p50\": %.1f, \"p90\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
           "\"max\": %.1f, \"mean\": %.1f}, \"errors\": %llu, \"lost\": %llu, \"stalled_conns\": %llu}\n",
           mode_names[mode], host, port, nconns, msg_size, warmup, window, verify ? "true" : "false",
           lat_n, rps, rps * (double)msg_size / 1e6, percentile(0.50), percentile(0.90),
           percentile(0.99), percentile(0.999), lat_n ? lat[lat_n - 1] : 0.0,
           lat_n ? sum / (double)lat_n : 0.0, (unsigned long long)errors, (unsigned long long)lost,
           (unsigned long long)stalled);
    return errors || lat_n == 0 ? 2 : 0;
}
