/*
 * model_overhead.c - the cost of a model call through AgentOS against the floor: a raw libcurl
 * loop doing the same POST over a reused connection. Prints median and p99 per call for both
 * and their ratio, and the same against a raw loop tuned the way AgentOS uses libcurl
 * (raw_floor.h: its settings, and yielding rather than sleeping while a quick answer is due),
 * which isolates the cost of AgentOS's own work.
 *
 *   model_overhead URL [CALLS]     (URL like http://127.0.0.1:PORT/v1; see benches/run-model.sh)
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>
#include <curl/curl.h>

#include "raw_floor.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *BODY =
    "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_tokens\":8}";

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static size_t sink(char *p, size_t s, size_t n, void *u) {
    (void)p;
    *(size_t *)u += s * n;
    return s * n;
}

static void report(const char *name, double *v, int n, double *median) {
    qsort(v, (size_t)n, sizeof *v, cmp);
    *median = v[n / 2];
    printf("%-22s median %8.1f us   p99 %8.1f us\n", name, v[n / 2], v[(n * 99) / 100]);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s URL [CALLS]\n", argv[0]);
        return 2;
    }
    const char *base = argv[1];
    int calls = argc > 2 ? atoi(argv[2]) : 2000;
    double *raw = calloc((size_t)calls, sizeof *raw), *ours = calloc((size_t)calls, sizeof *ours);
    double *tuned = calloc((size_t)calls, sizeof *tuned);

    /* The floor: one easy handle, reused connection. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", base);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    h = curl_slist_append(h, "Expect:");
    size_t got = 0;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, BODY);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &got);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    CURL *ct = curl_easy_duphandle(c);
    CURLU *ct_url = raw_floor_tune(ct, url);
    CURLM *mt = curl_multi_init();
    for (int i = 0; i < calls / 10; i++) { /* warm up */
        curl_easy_perform(c);
        raw_floor_perform(mt, ct, RAW_FLOOR_SPIN_US);
    }

    /* AgentOS. */
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 1);
    if (agentos_runtime_new(cfg, &rt, NULL) != AGENTOS_STATUS_OK) return 1;
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"bench\",\"provider\":\"openai\",\"base_url\":\"%s\",\"model\":\"bench\"}", base);
    if (agentos_runtime_add_endpoint(rt, ep, NULL) != AGENTOS_STATUS_OK) return 1;
    const char *req_json = "{\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_tokens\":8}";
    for (int i = 0; i < calls / 10; i++) { /* warm up */
        agentos_request *r = NULL;
        agentos_request_new(rt, "bench", req_json, &r, NULL);
        agentos_request_run(r, NULL);
        agentos_request_free(r);
    }

    /* The three ways run in interleaved blocks of BLOCK calls, the first WARM of each block
       untimed: each is timed with its own code and data warm in the caches, while all three
       see the same drift of the machine over the run (timing them call by call in turn would
       charge each the cache misses of refilling what the previous one evicted). */
    enum { BLOCK = 50, WARM = 5 };
    int done = 0;
    while (done < calls) {
        int n = calls - done < BLOCK - WARM ? calls - done : BLOCK - WARM;
        for (int way = 0; way < 3; way++) {
            for (int j = -WARM; j < n; j++) {
                double t0 = now_us();
                if (way < 2) {
                    CURLcode rc = way == 0 ? curl_easy_perform(c) : raw_floor_perform(mt, ct, RAW_FLOOR_SPIN_US);
                    if (rc != CURLE_OK) return 1;
                } else {
                    agentos_request *r = NULL;
                    agentos_request_new(rt, "bench", req_json, &r, NULL);
                    if (agentos_request_run(r, NULL) != AGENTOS_STATUS_OK) return 1;
                    agentos_request_free(r);
                }
                double dt = now_us() - t0;
                if (j >= 0) (way == 0 ? raw : way == 1 ? tuned : ours)[done + j] = dt;
            }
        }
        done += n;
    }
    double m_raw, m_tuned, m_ours;
    printf("%d sequential calls against %s\n", calls, base);
    report("raw libcurl (floor)", raw, calls, &m_raw);
    report("raw libcurl, tuned", tuned, calls, &m_tuned);
    report("agentos_request_run", ours, calls, &m_ours);
    printf("ratio (median): %.3fx   p99 ratio: %.3fx   overhead: %+.1f us per call\n", m_ours / m_raw,
           ours[(calls * 99) / 100] / raw[(calls * 99) / 100], m_ours - m_raw);
    printf("vs the tuned floor: %.3fx   p99 ratio: %.3fx   overhead: %+.1f us per call\n", m_ours / m_tuned,
           ours[(calls * 99) / 100] / tuned[(calls * 99) / 100], m_ours - m_tuned);
    agentos_runtime_free(rt);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    curl_easy_cleanup(ct);
    curl_multi_cleanup(mt);
    curl_url_cleanup(ct_url);
    curl_global_cleanup();
    free(raw);
    free(ours);
    free(tuned);
    return 0;
}
