/*
 * fake_openai_server.c - a small, fast OpenAI-compatible server for the benchmarks: one thread,
 * epoll, HTTP/1.1 keep-alive and pipelining. A drop-in replacement for fake_openai_server.py
 * (same command line, same reply bytes) that costs far less CPU per request, so that on a
 * small machine the server does not compete with the code being measured.
 *
 *   fake_openai_server PORT [--delay SECONDS] [--stream-chunks N --chunk-interval SECONDS]
 *                           [--tool-steps N]
 *
 * Every request (headers up to \r\n\r\n, then a Content-Length body) gets the same
 * chat.completion reply after --delay. With "stream":true in the body it sends N SSE chunks
 * (default 20) --chunk-interval apart (default 0.01 s); each chunk's content is the server's send
 * time in nanoseconds (CLOCK_REALTIME), so the client can measure chunk-to-caller latency.
 * With --tool-steps N, a request whose current turn (after the last "role":"user" message)
 * holds fewer than N tool results ("role":"tool") gets a tool call to "step" back
 * (finish_reason tool_calls), so an agent runs an N-step tool loop every turn. Listens on 127.0.0.1 only, prints "ready" once listening, and stops on
 * SIGTERM/SIGINT.
 *
 * Delays and chunk intervals are deadlines in one binary min-heap, served by a single timerfd
 * armed at the earliest deadline, so 10,000 pending replies cost O(log n) each.
 *
 *   cc -std=c11 -O2 -Wall -Wextra -D_GNU_SOURCE benches/fake_openai_server.c -o fake_openai_server
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define HEAD_LIMIT 65536u             /* like asyncio's StreamReader limit */
#define BODY_LIMIT (1024u * 1024u * 1024u)
#define IN_SOFT_LIMIT (1024u * 1024u) /* stop reading a busy connection beyond this */
#define IN_MIN_ROOM 4096u
#define OUT_SOFT_LIMIT (256u * 1024u) /* stop answering a client that does not read */
#define OUT_KEEP 16384u               /* free larger output buffers once flushed */
#define TIMER_SLACK_NS 20000u         /* fire up to 20 us late to batch nearby deadlines */
#define MAX_EVENTS 1024
#define ACCEPT_BATCH 1024

/* ---- replies (the same bytes as json.dumps in fake_openai_server.py) ---- */

#define PLAIN_BODY                                                                             \
    "{\"id\": \"chatcmpl-bench\", \"object\": \"chat.completion\", \"created\": 1, "            \
    "\"model\": \"bench\", \"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", " \
    "\"content\": \"pong\"}, \"finish_reason\": \"stop\"}], \"usage\": {\"prompt_tokens\": 8, " \
    "\"completion_tokens\": 1, \"total_tokens\": 9}}"

#define TOOL_BODY_FMT                                                                          \
    "{\"id\": \"chatcmpl-bench\", \"object\": \"chat.completion\", \"created\": 1, "            \
    "\"model\": \"bench\", \"choices\": [{\"index\": 0, \"finish_reason\": \"tool_calls\", "    \
    "\"message\": {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": "      \
    "\"call_%zu\", \"type\": \"function\", \"function\": {\"name\": \"step\", \"arguments\": "  \
    "\"{\\\"n\\\": %zu}\"}}]}}], \"usage\": {\"prompt_tokens\": 8, \"completion_tokens\": 4, "  \
    "\"total_tokens\": 12}}"

#define JSON_HEAD "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
#define STREAM_HEAD                                                                            \
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
#define STOP_DATA                                                                              \
    "data: {\"choices\": [{\"index\": 0, \"delta\": {}, \"finish_reason\": \"stop\"}]}\n\n"
#define DONE_DATA "data: [DONE]\n\n"

static char plain_reply[512];
static size_t plain_reply_len;

/* ---- configuration ---- */

static uint64_t delay_ns;          /* 0: reply at once */
static long stream_chunks = 20;
static uint64_t interval_ns = 10000000;
static long tool_steps;

/* ---- connections ---- */

enum { ST_IDLE, ST_DELAYED, ST_STREAM };
enum { K_PLAIN, K_TOOL, K_STREAM };

struct conn {
    int fd;
    unsigned char state, kind;
    bool can_read;     /* readable edge seen and not yet drained to EAGAIN */
    bool peer_eof;     /* the client shut down its side */
    bool close_when_flushed;
    bool stalled_out;  /* requests wait because unsent output passed OUT_SOFT_LIMIT */
    bool closed;
    size_t tool_n;
    long chunks_sent;
    char *in;          /* bytes [in_off, in_len) not yet consumed */
    size_t in_off, in_len, in_cap;
    size_t scan;       /* how far (from in_off) the head has been searched for \r\n\r\n */
    size_t head_len;   /* current request's head length, once found */
    size_t need;       /* current request's total length once its head is parsed, else 0 */
    char *out;         /* bytes [out_off, out_len) not yet sent */
    size_t out_off, out_len, out_cap;
    uint64_t deadline;
    long heap_idx;     /* -1: no timer */
    struct conn *prev, *next; /* live list, or the graveyard once closed */
};

static struct conn *live;
static struct conn *graveyard;
static int ep = -1, tfd = -1;
static uint64_t armed; /* deadline the timerfd is armed for, 0 if none */

static void die(const char *what) {
    fprintf(stderr, "fake_openai_server: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- min-heap of deadlines ---- */

static struct conn **heap;
static size_t heap_n, heap_cap;

static void heap_set(size_t i, struct conn *c) {
    heap[i] = c;
    c->heap_idx = (long)i;
}

static void heap_up(size_t i) {
    struct conn *c = heap[i];
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (heap[p]->deadline <= c->deadline) break;
        heap_set(i, heap[p]);
        i = p;
    }
    heap_set(i, c);
}

static void heap_down(size_t i) {
    struct conn *c = heap[i];
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        uint64_t best = c->deadline;
        if (l < heap_n && heap[l]->deadline < best) m = l, best = heap[l]->deadline;
        if (l + 1 < heap_n && heap[l + 1]->deadline < best) m = l + 1;
        if (m == i) break;
        heap_set(i, heap[m]);
        i = m;
    }
    heap_set(i, c);
}

static void heap_push(struct conn *c, uint64_t deadline) {
    if (heap_n == heap_cap) {
        size_t cap = heap_cap ? heap_cap * 2 : 1024;
        struct conn **h = realloc(heap, cap * sizeof *h);
        if (!h) die("realloc");
        heap = h;
        heap_cap = cap;
    }
    c->deadline = deadline;
    heap[heap_n] = c;
    heap_up(heap_n++);
}

static void heap_remove(struct conn *c) {
    if (c->heap_idx < 0) return;
    size_t i = (size_t)c->heap_idx;
    c->heap_idx = -1;
    if (--heap_n == i) return;
    struct conn *moved = heap[heap_n];
    heap_set(i, moved);
    heap_up(i);
    heap_down((size_t)moved->heap_idx);
}

/* Arm the timerfd for the earliest deadline (plus slack) unless it already is. */
static void timer_rearm(void) {
    if (heap_n == 0) return; /* a stale expiry only costs one empty wake-up */
    uint64_t want = heap[0]->deadline + TIMER_SLACK_NS;
    if (armed && armed <= want && armed + TIMER_SLACK_NS >= want) return;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)(want / 1000000000u);
    its.it_value.tv_nsec = (long)(want % 1000000000u);
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die("timerfd_settime");
    armed = want;
}

/* ---- buffers ---- */

static void close_conn(struct conn *c) {
    if (c->closed) return;
    c->closed = true;
    close(c->fd); /* also leaves the epoll set: the fd is never duplicated */
    heap_remove(c);
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    if (c->prev) c->prev->next = c->next; else live = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = NULL;
    c->next = graveyard; /* freed after the current batch of events */
    graveyard = c;
}

static bool out_reserve(struct conn *c, size_t n) {
    if (c->out_cap - c->out_len >= n) return true;
    if (c->out_off) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_cap - c->out_len >= n) return true;
    }
    size_t cap = c->out_cap ? c->out_cap : 1024;
    while (cap - c->out_len < n) cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) return false;
    c->out = p;
    c->out_cap = cap;
    return true;
}

static void out_put(struct conn *c, const char *s, size_t n) {
    if (!out_reserve(c, n)) {
        close_conn(c);
        return;
    }
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
}

static void out_printf(struct conn *c, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > 0 && (size_t)n < sizeof buf) out_put(c, buf, (size_t)n);
}

/* One HTTP chunk holding "data: " JSON "\n\n". */
static void out_sse(struct conn *c, const char *data, size_t n) {
    out_printf(c, "%zx\r\n", n);
    if (c->closed) return;
    out_put(c, data, n);
    if (c->closed) return;
    out_put(c, "\r\n", 2);
}

/* ---- replies ---- */

static void stream_step(struct conn *c) {
    for (;;) {
        if (c->chunks_sent < stream_chunks) {
            struct timespec ts;
            char data[160];
            clock_gettime(CLOCK_REALTIME, &ts);
            int n = snprintf(data, sizeof data,
                             "data: {\"choices\": [{\"index\": 0, \"delta\": {\"content\": "
                             "\"%llu \"}}]}\n\n",
                             (unsigned long long)ts.tv_sec * 1000000000ull +
                                 (unsigned long long)ts.tv_nsec);
            out_sse(c, data, (size_t)n);
            if (c->closed) return;
            c->chunks_sent++;
            if (interval_ns) {
                heap_push(c, mono_ns() + interval_ns);
                return;
            }
        } else {
            char usage[128];
            int n = snprintf(usage, sizeof usage,
                             "data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 8, "
                             "\"completion_tokens\": %ld}}\n\n",
                             stream_chunks);
            out_sse(c, STOP_DATA, sizeof STOP_DATA - 1);
            if (c->closed) return;
            out_sse(c, usage, (size_t)n);
            if (c->closed) return;
            out_put(c, "e\r\n" DONE_DATA "\r\n0\r\n\r\n", sizeof "e\r\n" DONE_DATA "\r\n0\r\n\r\n" - 1);
            c->state = ST_IDLE;
            return;
        }
    }
}

static void begin_reply(struct conn *c) {
    c->state = ST_IDLE;
    if (c->kind == K_PLAIN) {
        out_put(c, plain_reply, plain_reply_len);
    } else if (c->kind == K_TOOL) {
        char body[768];
        int n = snprintf(body, sizeof body, TOOL_BODY_FMT, c->tool_n, c->tool_n);
        out_printf(c, JSON_HEAD "%d\r\n\r\n", n);
        if (!c->closed) out_put(c, body, (size_t)n);
    } else {
        out_put(c, STREAM_HEAD, sizeof STREAM_HEAD - 1);
        if (c->closed) return;
        c->state = ST_STREAM;
        c->chunks_sent = 0;
        stream_step(c);
    }
}

/* ---- requests ---- */

static size_t count_occurrences(const char *s, size_t n, const char *pat, size_t m) {
    size_t count = 0;
    const char *p = s, *end = s + n;
    while ((p = memmem(p, (size_t)(end - p), pat, m)) != NULL) {
        count++;
        p += m;
    }
    return count;
}

/* Content-Length as Python's int() takes it (surrounding whitespace, a sign); -1 if invalid. */
static long long parse_length(const char *s, const char *end) {
    while (s < end && (*s == ' ' || *s == '\t' || *s == '\v' || *s == '\f')) s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\v' || end[-1] == '\f'))
        end--;
    bool neg = false;
    if (s < end && (*s == '+' || *s == '-')) neg = *s++ == '-';
    if (s == end) return -1;
    long long v = 0;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v > (long long)BODY_LIMIT) return -1;
    }
    return neg && v ? -1 : v;
}

/* The body length from a head (which ends in \r\n\r\n), or -1 if a Content-Length is bad. */
static long long head_body_length(const char *h, size_t n) {
    static const char key[] = "content-length:";
    const size_t klen = sizeof key - 1;
    long long length = 0;
    const char *end = h + n, *line = h;
    while (line < end) {
        const char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
        if (!eol) eol = end;
        if ((size_t)(eol - line) >= klen && strncasecmp(line, key, klen) == 0) {
            length = parse_length(line + klen, eol);
            if (length < 0) return -1;
        }
        line = eol + 2;
    }
    return length;
}

/* Take complete requests off the input while the connection is idle; reply or schedule. */
static void process(struct conn *c) {
    c->stalled_out = false;
    while (c->state == ST_IDLE && !c->closed) {
        size_t avail = c->in_len - c->in_off;
        if (avail == 0) return;
        if (c->out_len - c->out_off >= OUT_SOFT_LIMIT) { /* backpressure, like drain() */
            c->stalled_out = true;
            return;
        }
        const char *base = c->in + c->in_off;
        if (!c->need) {
            size_t from = c->scan > 3 ? c->scan - 3 : 0;
            const char *p = avail > from ? memmem(base + from, avail - from, "\r\n\r\n", 4) : NULL;
            if (!p) {
                c->scan = avail;
                if (avail > HEAD_LIMIT) close_conn(c);
                return;
            }
            c->head_len = (size_t)(p - base) + 4;
            if (c->head_len > HEAD_LIMIT) {
                close_conn(c);
                return;
            }
            long long body = head_body_length(base, c->head_len);
            if (body < 0) {
                close_conn(c);
                return;
            }
            c->need = c->head_len + (size_t)body;
        }
        if (avail < c->need) return;
        const char *body = base + c->head_len;
        size_t blen = c->need - c->head_len;
        /* Tool results of the current turn: those after the last user message, so an agent
           that keeps its history runs the same N-step loop every turn. */
        const char *turn = body, *u;
        while ((u = memmem(turn, blen - (size_t)(turn - body), "\"role\":\"user\"", 13)) != NULL)
            turn = u + 13;
        size_t tools_done = count_occurrences(turn, blen - (size_t)(turn - body), "\"role\":\"tool\"", 13);
        if (tool_steps && (long long)tools_done < (long long)tool_steps) {
            c->kind = K_TOOL;
            c->tool_n = tools_done;
        } else if (memmem(body, blen, "\"stream\":true", 13)) {
            c->kind = K_STREAM;
        } else {
            c->kind = K_PLAIN;
        }
        c->in_off += c->need;
        c->need = c->head_len = c->scan = 0;
        if (c->in_off == c->in_len) { /* idle connections hold no input buffer */
            free(c->in);
            c->in = NULL;
            c->in_off = c->in_len = c->in_cap = 0;
        }
        if (delay_ns) {
            c->state = ST_DELAYED;
            heap_push(c, mono_ns() + delay_ns);
            return;
        }
        begin_reply(c);
    }
}

/* Read what the socket holds (up to the soft limit while requests are pending). */
static void do_read(struct conn *c, bool drain_all) {
    while (c->can_read && !c->closed) {
        size_t avail = c->in_len - c->in_off;
        if (avail >= IN_SOFT_LIMIT && c->need <= avail) return; /* paused; can_read stays set */
        if (c->in_cap - c->in_len < IN_MIN_ROOM) {
            if (c->in_off) {
                memmove(c->in, c->in + c->in_off, avail);
                c->in_len = avail;
                c->in_off = 0;
            }
            if (c->in_cap - c->in_len < IN_MIN_ROOM) {
                size_t cap = c->in_cap ? c->in_cap * 2 : IN_MIN_ROOM;
                if (cap < c->need) cap = c->need;
                char *p = realloc(c->in, cap);
                if (!p) {
                    close_conn(c);
                    return;
                }
                c->in = p;
                c->in_cap = cap;
            }
        }
        size_t room = c->in_cap - c->in_len;
        ssize_t r = recv(c->fd, c->in + c->in_len, room, 0);
        if (r > 0) {
            c->in_len += (size_t)r;
            /* A short read drained the socket; new data will raise a new edge. */
            if ((size_t)r < room && !drain_all) c->can_read = false;
        } else if (r == 0) {
            c->peer_eof = true;
            c->can_read = false;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->can_read = false;
        } else if (errno != EINTR) {
            close_conn(c);
        }
    }
}

static void flush(struct conn *c) {
    while (c->out_off < c->out_len) {
        size_t left = c->out_len - c->out_off;
        ssize_t r = send(c->fd, c->out + c->out_off, left, MSG_NOSIGNAL);
        if (r > 0) {
            c->out_off += (size_t)r;
            if ((size_t)r < left) return; /* socket buffer full: wait for the EPOLLOUT edge */
        } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else if (r < 0 && errno == EINTR) {
            continue;
        } else {
            close_conn(c);
            return;
        }
    }
    c->out_off = c->out_len = 0;
    if (c->out_cap > OUT_KEEP) {
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
    if (c->close_when_flushed) close_conn(c);
}

/* Read, answer what can be answered, write; close once the client is done and answered. */
static void service(struct conn *c, bool drain_all) {
    for (;;) {
        do_read(c, drain_all);
        if (c->closed) return;
        process(c);
        if (c->closed) return;
        flush(c);
        if (c->closed) return;
        /* Go on if reading was paused at the soft limit and processing made room, or if
         * processing waited for output and writing made room. */
        bool read_more = c->can_read && c->in_len - c->in_off < IN_SOFT_LIMIT;
        bool answer_more = c->stalled_out && c->out_len - c->out_off < OUT_SOFT_LIMIT;
        if (!read_more && !answer_more) break;
    }
    if (c->peer_eof && !c->can_read && !c->stalled_out && c->state == ST_IDLE) {
        /* No more requests can complete; like the Python server, finish writing, then close. */
        if (c->out_off == c->out_len) close_conn(c);
        else c->close_when_flushed = true;
    }
}

static void run_timers(void) {
    uint64_t now = mono_ns();
    while (heap_n && heap[0]->deadline <= now) {
        struct conn *c = heap[0];
        heap_remove(c);
        if (c->state == ST_DELAYED) begin_reply(c);
        else if (c->state == ST_STREAM) stream_step(c);
        if (!c->closed) service(c, false);
    }
}

/* ---- listening ---- */

static int spare_fd = -1; /* given up to accept-and-drop when out of descriptors */

static void accept_all(int lfd) {
    for (int i = 0; i < ACCEPT_BATCH; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            if ((errno == EMFILE || errno == ENFILE) && spare_fd >= 0) {
                static bool warned;
                if (!warned) fprintf(stderr, "fake_openai_server: out of descriptors, dropping\n");
                warned = true;
                close(spare_fd);
                fd = accept(lfd, NULL, NULL);
                if (fd >= 0) close(fd);
                spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                continue;
            }
            return; /* EAGAIN, or nothing sensible to do (ENOBUFS, ENOMEM) */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->heap_idx = -1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
            close(fd);
            free(c);
            continue;
        }
        c->next = live;
        if (live) live->prev = c;
        live = c;
    }
}

static void usage(void) {
    fprintf(stderr, "usage: fake_openai_server PORT [--delay SECONDS] [--stream-chunks N] "
                    "[--chunk-interval SECONDS] [--tool-steps N]\n");
    exit(2);
}

static double arg_double(const char *s) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end) usage();
    return v;
}

static long arg_long(const char *s) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) usage();
    return v;
}

static uint64_t seconds_ns(double s) {
    return s > 0 ? (uint64_t)(s * 1e9 + 0.5) : 0;
}

int main(int argc, char **argv) {
    if (argc < 2) usage();
    long port = arg_long(argv[1]);
    if (port < 0 || port > 65535) usage();
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        bool known = !strcmp(a, "--delay") || !strcmp(a, "--stream-chunks") ||
                     !strcmp(a, "--tool-steps") || !strcmp(a, "--chunk-interval");
        if (!known) continue; /* the Python server ignores other words too */
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--delay")) delay_ns = seconds_ns(arg_double(v));
        else if (!strcmp(a, "--stream-chunks")) stream_chunks = arg_long(v);
        else if (!strcmp(a, "--tool-steps")) tool_steps = arg_long(v);
        else interval_ns = seconds_ns(arg_double(v));
    }

    int body_len = (int)strlen(PLAIN_BODY);
    plain_reply_len = (size_t)snprintf(plain_reply, sizeof plain_reply, JSON_HEAD "%d\r\n\r\n%s",
                                       body_len, PLAIN_BODY);

    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0) die("sigprocmask");
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die("signalfd");
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create");
    spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("socket");
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(lfd, 16384) < 0) die("listen");

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    /* Tags for the three non-connection descriptors (level-triggered). */
    static char tag_listen, tag_timer, tag_signal;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tag_listen};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0) die("epoll_ctl");
    ev.data.ptr = &tag_timer;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev) < 0) die("epoll_ctl");
    ev.data.ptr = &tag_signal;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev) < 0) die("epoll_ctl");

    printf("ready\n");
    fflush(stdout);

    static struct epoll_event evs[MAX_EVENTS];
    bool running = true;
    while (running) {
        int n = epoll_wait(ep, evs, MAX_EVENTS, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            if (p == &tag_listen) {
                accept_all(lfd);
            } else if (p == &tag_timer) {
                uint64_t expirations;
                if (read(tfd, &expirations, sizeof expirations) > 0) armed = 0;
                run_timers();
            } else if (p == &tag_signal) {
                struct signalfd_siginfo si;
                while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) running = false;
            } else {
                struct conn *c = p;
                if (c->closed) continue;
                if (e & (EPOLLHUP | EPOLLERR)) { /* reset, or both sides shut: nothing to send to */
                    close_conn(c);
                    continue;
                }
                if (e & (EPOLLIN | EPOLLRDHUP)) c->can_read = true;
                service(c, (e & EPOLLRDHUP) != 0);
            }
        }
        while (graveyard) {
            struct conn *c = graveyard;
            graveyard = c->next;
            free(c);
        }
        timer_rearm();
    }

    while (live) close_conn(live);
    while (graveyard) {
        struct conn *c = graveyard;
        graveyard = c->next;
        free(c);
    }
    free(heap);
    close(lfd);
    close(ep);
    close(tfd);
    close(sfd);
    if (spare_fd >= 0) close(spare_fd);
    return 0;
}
