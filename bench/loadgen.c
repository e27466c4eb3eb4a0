/* The load generator's compiled engine: the same requests, schedule and records as the
 * Python engine in loadgen.py, for a fraction of its CPU.
 *
 * Why it exists: the bench runs the generator on the same two cores as the stack. The
 * Python engine (uvloop) spent ~0.19 ms of CPU a request at 1,000/s, three quarters of
 * it in the interpreter, and ~0.45 of a core at 2,000-4,000/s offered (half of those
 * answers quick 503s): the box the stack was measured on was that much smaller. What is
 * left here is mostly the kernel's cost of the sockets.
 *
 * Behaviour (loadgen.py's docstring is the specification; keep the two in step):
 * open loop: request i is due at t0 + i/rate and is dispatched when due, over an idle
 * keep-alive connection (the most recently freed one; one idle for 3 s or more is closed
 * instead, the server may be closing it), else it waits for the next freed connection
 * and a new one is opened while fewer than --max-connections exist. Closed loop: N
 * connections, each sending its next request as soon as its answer arrives.
 *
 * Called by loadgen.py, which writes the plan as raw files and turns the result into its
 * usual .npz and summary:
 *   loadgen-engine BLOB OFFSETS OUT HOST PORT RATE CLOSED SECONDS MAX_CONN WARM TIMEOUT
 * BLOB holds every request's bytes, OFFSETS n+1 int64 boundaries. OUT receives, for the
 * planned requests, due, dispatched, sent and done times (float64, CLOCK_MONOTONIC
 * seconds, as Python's time.monotonic) one array after the other, then status (int16:
 * the HTTP status, 0 connection failed, -1 no answer). A JSON line on stdout gives the
 * run's facts. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CONNECTION_FAILED 0
#define NO_ANSWER (-1)
#define IDLE_REUSE_SECONDS 3.0

typedef struct Conn {
    int fd;
    int connecting;
    int alive;
    int idle; /* in the idle stack */
    long current; /* the request awaiting its answer, or -1 */
    double idle_since;
    size_t woff, wlen; /* the part of the current request not yet written */
    char *rbuf;
    size_t rlen, rcap;
} Conn;

static const char *blob;
static int64_t *offsets;
static long n;
static double *due_at, *dispatched_at, *sent_at, *done_at;
static int16_t *status_of;

static int ep;
static struct sockaddr_storage addr;
static socklen_t addrlen;
static long max_connections;
static long connections, opening, connect_failures, outstanding;
static Conn **idle;
static long nidle;
static long *waiting;
static long wait_head, wait_tail;
static int closed_mode;
static double closed_until;
static long next_closed;
static Conn **all_conns;
static long nall, all_cap;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *xmalloc(size_t size) {
    void *p = calloc(1, size ? size : 1);
    if (!p) die("calloc");
    return p;
}

static void watch(Conn *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(ep, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static void open_one(void) {
    int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        connect_failures++;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn *c = xmalloc(sizeof *c);
    c->fd = fd;
    c->connecting = 1;
    c->current = -1;
    if (nall == all_cap) {
        all_cap = all_cap ? all_cap * 2 : 1024;
        all_conns = realloc(all_conns, (size_t)all_cap * sizeof *all_conns);
        if (!all_conns) die("realloc");
    }
    all_conns[nall++] = c;
    opening++;
    if (connect(fd, (struct sockaddr *)&addr, addrlen) < 0 && errno != EINPROGRESS) {
        opening--;
        connect_failures++;
        close(fd);
        c->fd = -1;
        return;
    }
    watch(c, EPOLLOUT, EPOLL_CTL_ADD);
}

static void free_conn(Conn *c);
static void lost(Conn *c);

static void flush(Conn *c) {
    while (c->woff < c->wlen) {
        const char *start = blob + offsets[c->current] + c->woff;
        ssize_t w = send(c->fd, start, c->wlen - c->woff, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
                return;
            }
            lost(c);
            return;
        }
        c->woff += (size_t)w;
    }
}

static void send_request(Conn *c, long i) {
    c->current = i;
    sent_at[i] = now();
    c->woff = 0;
    c->wlen = (size_t)(offsets[i + 1] - offsets[i]);
    flush(c);
}

static void answered(Conn *c, long i, int status, int close_after) {
    done_at[i] = now();
    status_of[i] = (int16_t)status;
    outstanding--;
    if (close_after)
        lost(c);
    else
        free_conn(c);
}

/* The connection is gone (closed by either side, or failed): its request, if any, is
 * answered as failed; a waiting request gets a new connection if there is room. */
static void lost(Conn *c) {
    if (!c->alive) return;
    c->alive = 0;
    close(c->fd);
    connections--;
    if (c->idle) { /* rare (the server closed an idle one): the stack stays dense */
        for (long k = 0; k < nidle; k++)
            if (idle[k] == c) {
                memmove(&idle[k], &idle[k + 1], (size_t)(nidle - k - 1) * sizeof *idle);
                nidle--;
                break;
            }
        c->idle = 0;
    }
    if (c->current >= 0) {
        long i = c->current;
        c->current = -1;
        done_at[i] = now();
        status_of[i] = CONNECTION_FAILED;
        outstanding--;
    }
    if (wait_head < wait_tail && connections + opening < max_connections) open_one();
}

static void free_conn(Conn *c) {
    if (!c->alive) return;
    if (closed_mode && closed_until > 0) {
        double t = now();
        if (t < closed_until && next_closed < n) {
            long i = next_closed++;
            due_at[i] = dispatched_at[i] = t;
            outstanding++;
            send_request(c, i);
        }
        return;
    }
    if (wait_head < wait_tail) {
        send_request(c, waiting[wait_head++]);
    } else {
        c->idle_since = now();
        c->idle = 1;
        idle[nidle++] = c; /* LIFO: the least used ones may idle out harmlessly */
    }
}

static void dispatch(long i, double due) {
    due_at[i] = due;
    dispatched_at[i] = now();
    outstanding++;
    while (nidle > 0) {
        Conn *c = idle[--nidle];
        c->idle = 0;
        if (c->alive && dispatched_at[i] - c->idle_since < IDLE_REUSE_SECONDS) {
            send_request(c, i);
            return;
        }
        /* The server may be closing it this very moment (keep-alive timeout): a request
         * written into that race fails for a reason no real client suffers. */
        lost(c);
    }
    waiting[wait_tail++] = i;
    if (connections + opening < max_connections) open_one();
}

/* Answers are parsed only as far as the status line and the body's length. */
static void parse(Conn *c) {
    while (c->alive && c->current >= 0) {
        char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
        if (!end) return;
        size_t head_len = (size_t)(end - c->rbuf);
        size_t total = head_len + 4;
        int close_after = 0;
        int chunked = 0;
        long length = -1;
        for (char *line = memmem(c->rbuf, head_len, "\r\n", 2); line && line < end;) {
            line += 2;
            char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
            size_t len = (size_t)(eol - line);
            if (len > 15 && strncasecmp(line, "content-length:", 15) == 0)
                length = strtol(line + 15, NULL, 10);
            else if (len >= 17 && strncasecmp(line, "connection: close", 17) == 0)
                close_after = 1;
            else if (len >= 26 && strncasecmp(line, "transfer-encoding: chunked", 26) == 0)
                chunked = 1;
            line = eol;
        }
        if (length >= 0) {
            total += (size_t)length;
        } else if (chunked) {
            char *last = memmem(end, c->rlen - head_len, "\r\n0\r\n\r\n", 7);
            if (!last) return;
            total = (size_t)(last - c->rbuf) + 7;
        }
        if (c->rlen < total) return;
        int status = c->rlen >= 12 ? atoi((char[4]){c->rbuf[9], c->rbuf[10], c->rbuf[11], 0}) : 0;
        memmove(c->rbuf, c->rbuf + total, c->rlen - total);
        c->rlen -= total;
        long i = c->current;
        c->current = -1;
        answered(c, i, status, close_after);
    }
}

static void readable(Conn *c) {
    for (;;) {
        if (c->rcap - c->rlen < 4096) {
            c->rcap = c->rcap ? c->rcap * 2 : 8192;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) die("realloc");
        }
        size_t room = c->rcap - c->rlen;
        ssize_t r = recv(c->fd, c->rbuf + c->rlen, room, 0);
        if (r > 0) {
            c->rlen += (size_t)r;
            /* Level-triggered: whatever is left is reported again; no EAGAIN round trip. */
            if ((size_t)r < room) break;
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        parse(c); /* an answer completed by the close itself */
        lost(c);
        return;
    }
    parse(c);
}

static void on_event(Conn *c, uint32_t events) {
    if (c->connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        opening--;
        c->connecting = 0;
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            connect_failures++;
            close(c->fd);
            return;
        }
        c->alive = 1;
        connections++;
        watch(c, EPOLLIN, EPOLL_CTL_MOD);
        free_conn(c);
        return;
    }
    if (!c->alive) return;
    if (events & EPOLLOUT) {
        if (c->woff < c->wlen) flush(c);
        if (c->alive && c->woff >= c->wlen) watch(c, EPOLLIN, EPOLL_CTL_MOD);
    }
    if (c->alive && (events & (EPOLLIN | EPOLLERR | EPOLLHUP))) readable(c);
}

/* Waits for socket events until `until` (monotonic seconds) at the latest, and handles
 * those that came: returns after the first batch, so callers loop. */
static void poll_once(double until) {
    struct epoll_event events[256];
    double left = until - now();
    if (left < 0) left = 0;
    struct timespec ts = {.tv_sec = (time_t)left, .tv_nsec = (long)((left - floor(left)) * 1e9)};
    int k = epoll_pwait2(ep, events, 256, &ts, NULL);
    if (k < 0) {
        if (errno == EINTR) return;
        die("epoll_pwait2");
    }
    for (int j = 0; j < k; j++) on_event(events[j].data.ptr, events[j].events);
}

static char *read_file(const char *path, size_t *size) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat");
    char *data = xmalloc((size_t)st.st_size);
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, data + got, (size_t)st.st_size - got);
        if (r <= 0) die("read");
        got += (size_t)r;
    }
    close(fd);
    *size = got;
    return data;
}

int main(int argc, char **argv) {
    if (argc != 12) {
        fprintf(stderr, "usage: %s BLOB OFFSETS OUT HOST PORT RATE CLOSED SECONDS MAX_CONN WARM "
                        "TIMEOUT\n", argv[0]);
        return 2;
    }
    size_t size;
    blob = read_file(argv[1], &size);
    offsets = (int64_t *)read_file(argv[2], &size);
    n = (long)(size / sizeof(int64_t)) - 1;
    const char *out = argv[3];
    double rate = atof(argv[6]);
    long closed = atol(argv[7]);
    double seconds = atof(argv[8]);
    max_connections = atol(argv[9]);
    long warm = atol(argv[10]);
    double answer_timeout = atof(argv[11]);
    closed_mode = closed > 0;

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(argv[4], argv[5], &hints, &res) != 0) {
        fprintf(stderr, "cannot resolve %s\n", argv[4]);
        return 2;
    }
    memcpy(&addr, res->ai_addr, res->ai_addrlen);
    addrlen = res->ai_addrlen;
    freeaddrinfo(res);

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max < 65536 ? rl.rlim_max : 65536;
    setrlimit(RLIMIT_NOFILE, &rl);
    signal(SIGPIPE, SIG_IGN);

    due_at = xmalloc((size_t)n * sizeof(double));
    dispatched_at = xmalloc((size_t)n * sizeof(double));
    sent_at = xmalloc((size_t)n * sizeof(double));
    done_at = xmalloc((size_t)n * sizeof(double));
    status_of = xmalloc((size_t)n * sizeof(int16_t));
    for (long i = 0; i < n; i++) {
        due_at[i] = dispatched_at[i] = sent_at[i] = done_at[i] = NAN;
        status_of[i] = NO_ANSWER;
    }
    waiting = xmalloc((size_t)n * sizeof(long));
    idle = xmalloc((size_t)(max_connections + closed + warm + 1) * sizeof(Conn *));
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");

    long want = closed ? closed : (warm < max_connections ? warm : max_connections);
    for (long k = 0; k < want; k++) open_one();
    double deadline = now() + 10;
    while (connections + connect_failures < want && now() < deadline) poll_once(deadline);

    double cpu0 = cpu_seconds(), wall0 = now();
    double start, end;
    long planned;
    if (closed_mode) {
        start = now();
        closed_until = start + seconds;
        long held = nidle;
        nidle = 0;
        for (long k = 0; k < held; k++) {
            idle[k]->idle = 0;
            free_conn(idle[k]);
        }
        while (connections + opening < closed) open_one();
        while (now() < closed_until) poll_once(closed_until);
        end = closed_until;
        planned = next_closed;
    } else {
        long count = (long)(rate * seconds);
        if (count > n) count = n;
        double t0 = now() + 0.05;
        long i = 0;
        while (i < count) {
            double due = floor((now() - t0) * rate) + 1;
            long upto = due < 0 ? 0 : (due > (double)count ? count : (long)due);
            for (; i < upto; i++) dispatch(i, t0 + (double)i / rate);
            if (i < count) poll_once(t0 + (double)i / rate);
        }
        start = t0;
        end = t0 + (double)count / rate;
        planned = count;
    }
    double cpu_send = cpu_seconds() - cpu0, wall_send = now() - wall0;
    double give_up = now() + answer_timeout;
    while (outstanding > 0 && now() < give_up) poll_once(give_up);
    double cpu_all = cpu_seconds() - cpu0, wall_all = now() - wall0;
    long open_at_end = connections;
    for (long k = 0; k < nall; k++)
        if (all_conns[k]->alive) close(all_conns[k]->fd);

    FILE *f = fopen(out, "wb");
    if (!f) die(out);
    double *arrays[] = {due_at, dispatched_at, sent_at, done_at};
    for (int a = 0; a < 4; a++)
        if (fwrite(arrays[a], sizeof(double), (size_t)planned, f) != (size_t)planned) die("fwrite");
    if (fwrite(status_of, sizeof(int16_t), (size_t)planned, f) != (size_t)planned) die("fwrite");
    if (fclose(f) != 0) die("fclose");
    printf("{\"start\": %.6f, \"end\": %.6f, \"planned\": %ld, \"connections_open_at_end\": %ld, "
           "\"connect_failures\": %ld, \"cpu_seconds_sending\": %.6f, \"wall_seconds_sending\": "
           "%.6f, \"cpu_seconds_total\": %.6f, \"wall_seconds_total\": %.6f}\n",
           start, end, planned, open_at_end, connect_failures, cpu_send, wall_send, cpu_all,
           wall_all);
    return 0;
}
