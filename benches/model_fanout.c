/*
 * model_fanout.c - many concurrent calls in flight on one I/O thread. Starts N requests at
 * once against a server that waits before answering, waits for all of them, and prints the
 * wall time, the process's thread count, and its peak RSS.
 *
 *   model_fanout URL [N]     (the server should delay ~1 s; see benches/run-model.sh)
 */
#include "bench_util.h"
#include <agentos.h>

#include <sys/resource.h>

static double now_s(void) { return bench_now_us() / 1e6; }

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int n = argc > 2 ? atoi(argv[2]) : 10000;
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 2);
    if (agentos_runtime_new(cfg, &rt, NULL) != AGENTOS_STATUS_OK) return 1;
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"slow\",\"provider\":\"openai\",\"base_url\":\"%s\",\"model\":\"bench\","
             "\"timeouts_ms\":{\"connect\":30000}}", argv[1]);
    agentos_error *err = NULL;
    if (agentos_runtime_add_endpoint(rt, ep, &err) != AGENTOS_STATUS_OK) return 1;
    int base_threads = bench_threads();
    agentos_request **reqs = calloc((size_t)n, sizeof *reqs);
    const char *body = "{\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}],\"max_tokens\":8}";
    double t0 = now_s(), cpu0 = bench_cpu_s();
    for (int i = 0; i < n; i++) {
        if (agentos_request_new(rt, "slow", body, &reqs[i], NULL) != AGENTOS_STATUS_OK) return 1;
        if (agentos_request_start(reqs[i], NULL) != AGENTOS_STATUS_OK) return 1;
    }
    double submitted = now_s() - t0;
    int peak_threads = bench_threads();
    int ok = 0, failed = 0;
    for (int i = 0; i < n; i++) {
        agentos_status st = agentos_request_wait(reqs[i], -1, &err);
        if (st == AGENTOS_STATUS_OK) ok++;
        else {
            if (failed++ == 0) fprintf(stderr, "first failure: %s\n", agentos_error_message(err));
            agentos_error_free(err);
            err = NULL;
        }
        agentos_request_free(reqs[i]);
    }
    double wall = now_s() - t0, cpu = bench_cpu_s() - cpu0;
    printf("%d concurrent calls: %d ok, %d failed\n", n, ok, failed);
    printf("wall time %.2f s (submit %.3f s); threads: %d before calls, %d during (library: %d workers + %d I/O)\n",
           wall, submitted, base_threads, peak_threads, 2, peak_threads - base_threads);
    printf("process CPU %.2f s (user+system, all threads) = %.0f us per call\n", cpu, cpu * 1e6 / n);
    printf("peak RSS %ld KB (%.1f MB)\n", bench_status_kb("VmHWM:"), bench_status_kb("VmHWM:") / 1024.0);
    free(reqs);
    agentos_runtime_free(rt);
    return failed != 0;
}
