/*
 * runtime_lifecycle.c - how long it takes to start and free a runtime, and what it costs in RSS.
 * Prints the median and p99 of agentos_runtime_new + agentos_runtime_free over many rounds,
 * and the resident set size before, while running (peak) and after.
 *
 * Build and run: benches/run.sh runtime_lifecycle
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static long status_kb(const char *field) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0) kb = strtol(line + n + 1, NULL, 10);
    }
    if (f) fclose(f);
    return kb;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 500;
    uint32_t workers = argc > 2 ? (uint32_t)atoi(argv[2]) : 0;
    double *samples = calloc((size_t)rounds, sizeof *samples);
    long rss_before = status_kb("VmRSS:");
    agentos_config *cfg = NULL;
    if (agentos_config_new(&cfg) != AGENTOS_STATUS_OK) return 1;
    agentos_config_set_workers(cfg, workers);

    /* RSS with one runtime alive. */
    agentos_runtime *rt = NULL;
    if (agentos_runtime_new(cfg, &rt, NULL) != AGENTOS_STATUS_OK) return 1;
    uint32_t n = 0;
    agentos_runtime_worker_count(rt, &n);
    long rss_alive = status_kb("VmRSS:");
    agentos_runtime_free(rt);

    for (int i = 0; i < rounds; i++) {
        double t0 = now_us();
        if (agentos_runtime_new(cfg, &rt, NULL) != AGENTOS_STATUS_OK) return 1;
        agentos_runtime_free(rt);
        samples[i] = now_us() - t0;
    }
    agentos_config_free(cfg);
    qsort(samples, (size_t)rounds, sizeof *samples, cmp);
    printf("runtime_new+free (%u workers, %d rounds): median %.1f us, p99 %.1f us\n", n, rounds,
           samples[rounds / 2], samples[(rounds * 99) / 100]);
    printf("RSS: before %ld KB, one runtime alive %ld KB, after %ld KB, peak %ld KB\n", rss_before,
           rss_alive, status_kb("VmRSS:"), status_kb("VmHWM:"));
    free(samples);
    return 0;
}
