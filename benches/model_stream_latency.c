/*
 * model_stream_latency.c - time from a streamed chunk leaving the server to the C caller
 * holding it, through agentos_request_next_delta (pull) and through the delta callback, against
 * a raw libcurl write callback as the floor. The server writes its send time (CLOCK_REALTIME,
 * ns) as each chunk's content; both ends run on this machine.
 *
 *   model_stream_latency URL    (the server streams chunks ~10 ms apart; see benches/run-model.sh)
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>
#include <curl/curl.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXS 100000
static double samples[3][MAXS];
static int counts[3];

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void record(int which, const char *data, size_t len) {
    double now = now_ns();
    char buf[64];
    if (len == 0 || len >= sizeof buf) return;
    memcpy(buf, data, len);
    buf[len] = 0;
    double sent = strtod(buf, NULL);
    if (sent > 0 && counts[which] < MAXS) samples[which][counts[which]++] = (now - sent) / 1e3;
}

static void on_delta(void *user, int32_t kind, const char *data, size_t len) {
    (void)user;
    if (kind == AGENTOS_DELTA_TEXT) record(1, data, len);
}

/* Raw libcurl: find "content":"<digits> in each received piece. */
static size_t raw_write(char *p, size_t s, size_t n, void *u) {
    (void)u;
    size_t len = s * n;
    const char *key = "\"content\": \"";
    for (size_t i = 0; i + strlen(key) < len; i++) {
        if (memcmp(p + i, key, strlen(key)) == 0) {
            const char *d = p + i + strlen(key);
            size_t k = 0;
            while (d + k < p + len && d[k] >= '0' && d[k] <= '9') k++;
            record(0, d, k);
        }
    }
    return len;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void report(const char *name, int which) {
    int n = counts[which];
    if (n == 0) {
        printf("%-34s no samples\n", name);
        return;
    }
    qsort(samples[which], (size_t)n, sizeof(double), cmp);
    printf("%-34s n=%5d  median %7.1f us   p99 %7.1f us\n", name, n, samples[which][n / 2],
           samples[which][(n * 99) / 100]);
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    const char *body = "{\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"t\"}]}";
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", argv[1]);

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, "{\"stream\":true,\"messages\":[]}");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, raw_write);

    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 1);
    agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep, "{\"name\":\"s\",\"provider\":\"openai\",\"base_url\":\"%s\"}", argv[1]);
    agentos_runtime_add_endpoint(rt, ep, NULL);

    for (int r = 0; r < rounds; r++) {
        curl_easy_perform(c);
        /* Pull, with the callback also installed: one stream measures both paths. */
        agentos_request *req = NULL;
        agentos_request_new(rt, "s", body, &req, NULL);
        agentos_request_set_delta_callback(req, on_delta, NULL);
        agentos_request_start(req, NULL);
        for (;;) {
            int32_t kind;
            const char *data;
            size_t len;
            if (agentos_request_next_delta(req, 10000, &kind, &data, &len) != AGENTOS_STATUS_OK) return 1;
            if (kind == AGENTOS_DELTA_END) break;
            record(2, data, len);
        }
        agentos_request_free(req);
    }
    report("raw libcurl write callback (floor)", 0);
    report("agentos delta callback", 1);
    report("agentos_request_next_delta (pull)", 2);
    agentos_runtime_free(rt);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    curl_global_cleanup();
    return 0;
}
