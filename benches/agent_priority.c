/*
 * agent_priority.c - latency of urgent agents under a flood of background agents, with
 * preemption on and off. The endpoint allows C calls at once; F low-priority agents start their
 * turns; then H high-priority agents each start one. Prints the high-priority turns' median and
 * p99 latency in both modes, and the preemptions of each kind.
 *
 *   agent_priority URL [F] [H] [C]         the flood streams long answers, the urgent agents
 *                                          ask one question (server: fake_openai_server.c
 *                                          --stream-chunks 40 --chunk-interval 0.01)
 *   agent_priority --tools URL [F] [H] [C] every agent runs a tool loop, answers not streamed
 *                                          (server: --tool-steps 3 --delay 0.2): an urgent
 *                                          turn's calls wait for slots between its steps, which
 *                                          less urgent agents take unless they pause at their
 *                                          safe points
 */
#include "bench_util.h"
#include <agentos.h>

/* The tool of the tool loops: done at once. */
static int32_t step_tool(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    agentos_tool_call_complete(call, "{\"ok\":true}", false);
    return AGENTOS_TOOL_DONE;
}

static void run(const char *url, int flood, int high, int conc, int preempt, int tools) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_json(cfg, "{\"event_capacity\":100000}", NULL);
    agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    char buf[512];
    snprintf(buf, sizeof buf,
             "{\"name\":\"b\",\"provider\":\"openai\",\"base_url\":\"%s\",\"limits\":{\"concurrency\":%d}}", url, conc);
    agentos_runtime_add_endpoint(rt, buf, NULL);
    agentos_runtime_add_tool(rt, "step", "one step", "{\"type\":\"object\"}", 0, step_tool, NULL, NULL);
    const char *kind = tools ? ",\"tools\":[\"step\"],\"stream\":false" : "";
    for (int i = 0; i < flood; i++) {
        agentos_agent_id id;
        snprintf(buf, sizeof buf, "{\"name\":\"low%d\",\"endpoint\":\"b\",\"priority\":1,\"preemptible\":%s%s}", i,
                 preempt ? "true" : "false", kind);
        agentos_agent_new(rt, buf, &id, NULL);
        agentos_agent_send(rt, id, "long story please", NULL);
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL); /* the flood is streaming */
    double *start = calloc((size_t)high, sizeof *start), *lat = calloc((size_t)high, sizeof *lat);
    agentos_agent_id *hid = calloc((size_t)high, sizeof *hid);
    for (int i = 0; i < high; i++) {
        snprintf(buf, sizeof buf, "{\"name\":\"high%d\",\"endpoint\":\"b\",\"priority\":9%s}", i, kind);
        agentos_agent_new(rt, buf, &hid[i], NULL);
        start[i] = bench_now_us();
        agentos_agent_send(rt, hid[i], "urgent", NULL);
    }
    int done = 0, preempted = 0, at_safe_points = 0;
    while (done < high) {
        agentos_event *ev = NULL;
        if (agentos_runtime_next_event(rt, 60000, &ev) != AGENTOS_STATUS_OK) break;
        if (agentos_event_kind(ev) == AGENTOS_EVENT_PREEMPTED) {
            /* A stream cancelled (its snapshot kept), or an agent paused before its next call. */
            char *json = NULL;
            if (agentos_event_json(ev, &json) == AGENTOS_STATUS_OK && strstr(json, "\"safe_point\":true"))
                at_safe_points++;
            else
                preempted++;
            agentos_string_free(json);
        }
        if (agentos_event_kind(ev) == AGENTOS_EVENT_TURN_END)
            for (int i = 0; i < high; i++)
                if (agentos_event_agent(ev) == hid[i]) {
                    lat[i] = (bench_now_us() - start[i]) / 1000.0;
                    done++;
                }
        agentos_event_free(ev);
    }
    printf("preemption %-3s: %d urgent turns under %d %s background agents (concurrency %d): "
           "median %.1f ms, p99 %.1f ms, %d streams preempted, %d pauses at safe points\n",
           preempt ? "on" : "off", done, flood, tools ? "tool-loop" : "streaming", conc,
           bench_quantile(lat, high, 0.5), bench_quantile(lat, high, 0.99), preempted, at_safe_points);
    agentos_runtime_wait_idle(rt, 120000);
    agentos_runtime_free(rt);
    free(start);
    free(lat);
    free(hid);
}

int main(int argc, char **argv) {
    int tools = argc > 1 && !strcmp(argv[1], "--tools");
    argc -= tools;
    argv += tools;
    if (argc < 2) return 2;
    int flood = argc > 2 ? atoi(argv[2]) : 200, high = argc > 3 ? atoi(argv[3]) : 20;
    int conc = argc > 4 ? atoi(argv[4]) : 8;
    run(argv[1], flood, high, conc, 0, tools);
    run(argv[1], flood, high, conc, 1, tools);
    return 0;
}
