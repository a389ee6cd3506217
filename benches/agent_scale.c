/*
 * agent_scale.c - N agents at once, each running a 3-step tool loop (4 model calls, 3 tool
 * calls) against a server that waits before every answer. Prints the wall time, the threads
 * and the peak RSS, and the RSS cost of an idle agent.
 *
 *   agent_scale URL [N]   (server: fake_openai_server.c --tool-steps 3 --delay 0.2)
 */
#include "bench_util.h"
#include <agentos.h>
#include <sys/resource.h>

static int32_t step_tool(void *u, agentos_tool_call *call) {
    (void)u;
    agentos_tool_call_complete(call, "{\"ok\":true}", false);
    return AGENTOS_TOOL_DONE;
}

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
    agentos_config_set_json(cfg, "{\"event_capacity\":1000}", NULL);
    agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"b\",\"provider\":\"openai\",\"base_url\":\"%s\",\"timeouts_ms\":{\"connect\":30000}}", argv[1]);
    agentos_runtime_add_endpoint(rt, ep, NULL);
    agentos_runtime_add_tool(rt, "step", "one step", "{\"type\":\"object\"}", 0, step_tool, NULL, NULL);

    long rss0 = bench_status_kb("VmRSS:");
    agentos_agent_id *ids = calloc((size_t)n, sizeof *ids);
    char cfg_json[256];
    for (int i = 0; i < n; i++) {
        snprintf(cfg_json, sizeof cfg_json,
                 "{\"name\":\"a%d\",\"endpoint\":\"b\",\"tools\":[\"step\"],\"stream\":false,\"max_tokens\":16}", i);
        if (agentos_agent_new(rt, cfg_json, &ids[i], NULL) != AGENTOS_STATUS_OK) return 1;
    }
    long rss1 = bench_status_kb("VmRSS:");
    printf("%d idle agents: RSS +%ld KB = %.0f bytes per idle agent\n", n, rss1 - rss0,
           (double)(rss1 - rss0) * 1024.0 / n);

    double t0 = bench_now_us(), cpu0 = bench_cpu_s(), io0 = bench_threads_cpu_s("agentos-io"),
           w0 = bench_threads_cpu_s("agentos-w");
    for (int i = 0; i < n; i++)
        if (agentos_agent_send(rt, ids[i], "run the loop", NULL) != AGENTOS_STATUS_OK) return 1;
    int threads = bench_threads();
    if (agentos_runtime_wait_idle(rt, 600000) != AGENTOS_STATUS_OK) return 1;
    double wall = (bench_now_us() - t0) / 1e6, cpu = bench_cpu_s() - cpu0;
    double io = bench_threads_cpu_s("agentos-io") - io0, workers = bench_threads_cpu_s("agentos-w") - w0;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        agentos_usage u = {.struct_size = sizeof u};
        int32_t st = -1;
        agentos_agent_state(rt, ids[i], &st);
        agentos_agent_usage(rt, ids[i], &u);
        ok += st == AGENTOS_AGENT_IDLE && u.retries == 3;
    }
    printf("%d agents x 3-step tool loop (4 model calls each): %d completed, wall %.2f s\n", n, ok, wall);
    printf("library CPU %.2f s (user+system, all threads) = %.0f us per model call\n", cpu, cpu * 1e6 / (4.0 * n));
    printf("  of which the I/O thread %.2f s (%.0f us per call), workers %.2f s (%.0f us per call)\n", io,
           io * 1e6 / (4.0 * n), workers, workers * 1e6 / (4.0 * n));
    printf("threads in process: %d (1 main + library's workers and I/O thread)\n", threads);
    printf("peak RSS %ld KB (%.1f MB)\n", bench_status_kb("VmHWM:"), bench_status_kb("VmHWM:") / 1024.0);
    free(ids);
    agentos_runtime_free(rt);
    return ok == n ? 0 : 1;
}
