/*
 * msg_shm.c - messages between two processes: the shared-memory channel against a baseline of
 * JSON-serialized messages (payload base64-encoded) over a Unix domain socket. For 64 B, 4 KiB
 * and 1 MiB payloads: one-way latency (round trip / 2, p50 and p99) and one-way throughput.
 * The channel's reader sees the bytes in place; the socket's reader must read, parse and decode.
 *
 *   msg_shm [MESSAGES]
 */
#include "bench_util.h"
#include <agentos.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the baseline: newline-framed JSON over a socket ---------------------------------------- */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    return o;
}

static int b64_val(char c) {
    const char *p = strchr(B64, c);
    return p && c ? (int)(p - B64) : -1;
}

static size_t b64_decode(const char *in, size_t n, uint8_t *out) {
    size_t o = 0;
    for (size_t i = 0; i + 3 < n + 0 && i < n; i += 4) {
        int a = b64_val(in[i]), b = b64_val(in[i + 1]), c = in[i + 2] == '=' ? 0 : b64_val(in[i + 2]),
            d = in[i + 3] == '=' ? 0 : b64_val(in[i + 3]);
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        if (in[i + 2] != '=') out[o++] = (uint8_t)(v >> 8);
        if (in[i + 3] != '=') out[o++] = (uint8_t)v;
    }
    return o;
}

static char *json_buf;
static uint8_t *payload_buf;

static void json_send(int fd, long id, const uint8_t *p, size_t n) {
    int h = sprintf(json_buf, "{\"id\":%ld,\"kind\":7,\"sender\":1,\"payload\":\"", id);
    size_t len = (size_t)h + b64_encode(p, n, json_buf + h);
    memcpy(json_buf + len, "\"}\n", 3);
    len += 3;
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, json_buf + off, len - off);
        if (w <= 0) _exit(3);
        off += (size_t)w;
    }
}

/* Reads one line and decodes its payload; returns the payload length. */
static char *rbuf;
static size_t rlen, rcap;
static size_t json_recv(int fd, uint8_t *out) {
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        if (nl) {
            char *p = strstr(rbuf, "\"payload\":\"");
            if (!p || p > nl) abort();
            p += 11;
            char *end = memchr(p, '"', (size_t)(nl - p));
            size_t n = b64_decode(p, (size_t)(end - p), out);
            size_t used = (size_t)(nl - rbuf) + 1;
            memmove(rbuf, rbuf + used, rlen - used);
            rlen -= used;
            return n;
        }
        ssize_t r = read(fd, rbuf + rlen, rcap - rlen);
        if (r <= 0) abort();
        rlen += (size_t)r;
    }
}

/* ---- helpers --------------------------------------------------------------------------------- */

static agentos_channel *child_end(const char *spec) {
    agentos_channel *c = NULL;
    if (agentos_channel_attach(spec, &c) != AGENTOS_STATUS_OK) _exit(2);
    return c;
}

static void report(const char *what, size_t size, double *lat, int n, double secs, long msgs) {
    printf("%-26s %8zu B  latency p50 %8.2f us  p99 %8.2f us   throughput %10.0f msgs/s %9.1f MB/s\n", what, size,
           bench_quantile(lat, n, 0.5), bench_quantile(lat, n, 0.99), msgs / secs, msgs * (double)size / secs / 1e6);
}

static void run_shm(size_t size, long msgs, int pings) {
    agentos_channel *ch = NULL;
    char *spec = NULL;
    agentos_channel_new(size > 65536 ? (size_t)8 << 20 : (size_t)1 << 20, &ch);
    agentos_channel_child_spec(ch, &spec);
    pid_t pid = fork();
    if (pid == 0) {
        agentos_channel *c = child_end(spec);
        /* Echo `pings` messages, then stream `msgs` of them. */
        for (int i = 0; i < pings; i++) {
            agentos_shm_view *v = NULL;
            if (agentos_channel_recv(c, -1, &v) != AGENTOS_STATUS_OK) _exit(4);
            const uint8_t *d;
            size_t n;
            agentos_shm_view_data(v, &d, &n);
            agentos_channel_send(c, 1, d, n, -1);
            agentos_shm_view_free(v);
        }
        for (long i = 0; i < msgs; i++)
            if (agentos_channel_send(c, 2, payload_buf, size, -1) != AGENTOS_STATUS_OK) _exit(5);
        agentos_channel_free(c);
        _exit(0);
    }
    agentos_string_free(spec);
    agentos_channel_close_child_fds(ch);
    agentos_channel_set_peer(ch, pid);
    double *lat = calloc((size_t)pings, sizeof *lat);
    for (int i = 0; i < pings; i++) {
        double t0 = bench_now_us();
        agentos_channel_send(ch, 1, payload_buf, size, -1);
        agentos_shm_view *v = NULL;
        if (agentos_channel_recv(ch, -1, &v) != AGENTOS_STATUS_OK) abort();
        agentos_shm_view_free(v);
        lat[i] = (bench_now_us() - t0) / 2;
    }
    double t0 = bench_now_us();
    uint64_t sum = 0;
    for (long i = 0; i < msgs; i++) {
        agentos_shm_view *v = NULL;
        if (agentos_channel_recv(ch, -1, &v) != AGENTOS_STATUS_OK) abort();
        const uint8_t *d;
        size_t n;
        agentos_shm_view_data(v, &d, &n);
        sum += d[n - 1]; /* touch the bytes in place */
        agentos_shm_view_free(v);
    }
    double secs = (bench_now_us() - t0) / 1e6;
    waitpid(pid, NULL, 0);
    report("shared-memory channel", size, lat, pings, secs, msgs);
    (void)sum;
    free(lat);
    agentos_channel_free(ch);
}

static void run_uds(size_t size, long msgs, int pings) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        for (int i = 0; i < pings; i++) {
            size_t n = json_recv(sv[1], payload_buf + size);
            json_send(sv[1], i, payload_buf + size, n);
        }
        for (long i = 0; i < msgs; i++) json_send(sv[1], i, payload_buf, size);
        _exit(0);
    }
    close(sv[1]);
    double *lat = calloc((size_t)pings, sizeof *lat);
    for (int i = 0; i < pings; i++) {
        double t0 = bench_now_us();
        json_send(sv[0], i, payload_buf, size);
        json_recv(sv[0], payload_buf + size);
        lat[i] = (bench_now_us() - t0) / 2;
    }
    double t0 = bench_now_us();
    for (long i = 0; i < msgs; i++)
        if (json_recv(sv[0], payload_buf + size) != size) abort();
    double secs = (bench_now_us() - t0) / 1e6;
    waitpid(pid, NULL, 0);
    report("JSON over a Unix socket", size, lat, pings, secs, msgs);
    free(lat);
    close(sv[0]);
}

int main(int argc, char **argv) {
    long base = argc > 1 ? atol(argv[1]) : 200000;
    size_t sizes[] = {64, 4096, 1 << 20};
    json_buf = malloc((2 << 20) * 2 + 1024);
    rcap = (size_t)(4 << 20);
    rbuf = malloc(rcap);
    payload_buf = malloc((size_t)(2 << 20) + 16);
    for (size_t i = 0; i < (size_t)(2 << 20); i++) payload_buf[i] = (uint8_t)(i * 31);
    for (int s = 0; s < 3; s++) {
        long msgs = sizes[s] >= (1u << 20) ? base / 1000 + 50 : (sizes[s] >= 4096 ? base / 4 : base);
        int pings = sizes[s] >= (1u << 20) ? 200 : 20000;
        run_shm(sizes[s], msgs, pings);
        run_uds(sizes[s], msgs, pings);
    }
    return 0;
}
