/*
 * msg_inprocess.c - in-process message passing through the C API: send-to-receive latency
 * (p50/p99, one message in flight) and throughput with 1 and 4 producers, for 64 B, 4 KiB and
 * 1 MiB payloads. A message is made once and sent many times: sending moves a reference, so the
 * payload size should not matter.
 *
 *   msg_inprocess [MESSAGES]
 */
#include "bench_util.h"
#include <agentos.h>
#include <pthread.h>
#include <stdatomic.h>

static agentos_runtime *rt;
static agentos_mailbox_id inbox;
static atomic_long received;

struct producer {
    agentos_message *msg;
    long count;
};

static void *produce(void *arg) {
    struct producer *p = arg;
    agentos_mailbox_id me = 0;
    agentos_mailbox_new(rt, 1, &me);
    for (long i = 0; i < p->count; i++)
        if (agentos_mailbox_send(rt, me, inbox, p->msg, -1, NULL) != AGENTOS_STATUS_OK) abort();
    agentos_mailbox_free(rt, me);
    return NULL;
}

static void throughput(size_t size, int producers, long total) {
    uint8_t *buf = calloc(1, size);
    agentos_message *msg = NULL;
    agentos_message_new(1000, buf, size, &msg);
    free(buf);
    pthread_t t[8];
    struct producer p[8];
    double t0 = bench_now_us();
    for (int i = 0; i < producers; i++) {
        p[i].msg = msg;
        p[i].count = total / producers;
        pthread_create(&t[i], NULL, produce, &p[i]);
    }
    long got = 0;
    const uint8_t *first = NULL;
    while (got < (total / producers) * producers) {
        agentos_message *m = NULL;
        if (agentos_mailbox_recv(rt, inbox, 10000, &m) != AGENTOS_STATUS_OK) abort();
        const uint8_t *d;
        size_t len;
        agentos_message_data(m, &d, &len);
        if (!first) first = d;
        if (d != first || len != size) abort(); /* every delivery shares the one payload */
        agentos_message_free(m);
        got++;
    }
    double secs = (bench_now_us() - t0) / 1e6;
    for (int i = 0; i < producers; i++) pthread_join(t[i], NULL);
    printf("throughput %8zu B, %d producer%s: %10.0f msgs/s (%ld messages, zero copy checked)\n", size,
           producers, producers > 1 ? "s" : " ", got / secs, got);
    agentos_message_free(msg);
}

static _Atomic double sent_at;
static atomic_int turn;

static void *ping(void *arg) {
    long n = (long)arg;
    agentos_message *msg = NULL;
    uint8_t b[64] = {0};
    agentos_message_new(1000, b, sizeof b, &msg);
    for (long i = 0; i < n; i++) {
        while (atomic_load_explicit(&turn, memory_order_acquire) != 0) {}
        atomic_store_explicit(&turn, 1, memory_order_relaxed);
        sent_at = bench_now_us();
        agentos_mailbox_send(rt, 0, inbox, msg, -1, NULL);
    }
    agentos_message_free(msg);
    return NULL;
}

static void latency(long n) {
    double *lat = calloc((size_t)n, sizeof *lat);
    pthread_t t;
    atomic_store(&turn, 0);
    pthread_create(&t, NULL, ping, (void *)n);
    for (long i = 0; i < n; i++) {
        agentos_message *m = NULL;
        if (agentos_mailbox_recv(rt, inbox, 10000, &m) != AGENTOS_STATUS_OK) abort();
        lat[i] = (bench_now_us() - sent_at) * 1000.0;
        agentos_message_free(m);
        atomic_store_explicit(&turn, 0, memory_order_release);
    }
    pthread_join(t, NULL);
    printf("latency 64 B, one in flight: p50 %.0f ns, p99 %.0f ns (%ld messages; includes the C calls "
           "to send, receive and free)\n", bench_quantile(lat, (int)n, 0.5), bench_quantile(lat, (int)n, 0.99), n);
    free(lat);
}

int main(int argc, char **argv) {
    long total = argc > 1 ? atol(argv[1]) : 2000000;
    agentos_config *cfg = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 1);
    agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    agentos_mailbox_new(rt, 4096, &inbox);
    latency(200000);
    size_t sizes[] = {64, 4096, 1 << 20};
    for (int s = 0; s < 3; s++) {
        throughput(sizes[s], 1, total);
        throughput(sizes[s], 4, total);
    }
    agentos_runtime_free(rt);
    return 0;
}
