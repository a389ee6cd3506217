/*
 * agent_turn.c - per-turn overhead of an agent turn with one tool call (two model calls and a C
 * tool), against the floor: a raw libcurl loop making the same two requests over a reused
 * connection. Prints median and p99 per turn and the ratio, for the two ways a host drives a
 * turn: agentos_agent_send + agentos_runtime_next_event until TURN_END (workers run the turn;
 * the host waits for every event, or with agentos_runtime_wait_event only for the turn's end),
 * and agentos_agent_run (the host's thread runs it). Two floors: a plain libcurl loop, and one
 * tuned the way AgentOS uses libcurl (raw_floor.h: its settings, and yielding rather than
 * sleeping while a quick answer is due): against the tuned floor, the ratio is the overhead
 * of AgentOS's own work alone.
 *
 *   agent_turn URL [TURNS]   (server: fake_openai_server.c --tool-steps 1; see benches/run-agents.sh)
 */
#include "bench_util.h"
#include "one_tool_turn.h"
#include "raw_floor.h"
#include <agentos.h>
#include <curl/curl.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int turns = argc > 2 ? atoi(argv[2]) : 1000;
    /* Per way, the turn times: raw, raw tuned, events (every one waited for), events (waiting
       for the turn's end, then draining), agent_run (stateless agent), agent_run (fresh agent). */
    enum { WAYS = 6 };
    double *t[WAYS];
    for (int w = 0; w < WAYS; w++) t[w] = calloc((size_t)turns, sizeof *t[w]);
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct curl_slist *h = NULL;
    CURL *c = one_tool_raw_handle(url, &h);
    CURL *ct = curl_easy_duphandle(c);
    CURLU *ct_url = raw_floor_tune(ct, url);
    CURLM *mt = curl_multi_init();

    /* Workers: the runtime's default (one per core) unless WORKERS says otherwise. With a
       second worker idle, an agent whose next wait is its only work keeps its worker and
       makes the call itself (no hand-off to the I/O thread). */
    uint32_t workers = getenv("WORKERS") ? (uint32_t)atoi(getenv("WORKERS")) : 0;
    /* The agent the raw loop mirrors: fresh for each turn, so its requests carry the same
       conversation as the raw loop's; or one stateless agent (keep_history false) kept across
       turns, whose every turn sends that same conversation too: a host's warm path. */
    const char *fresh_json = "{\"name\":\"a\",\"endpoint\":\"b\",\"tools\":[\"step\"],\"stream\":false}";
    agentos_agent_id a = 0, s = 0;
    agentos_runtime *rt = one_tool_runtime(argv[1], workers, &s);
    if (!rt) return 1;

    /* The ways run in interleaved blocks of BLOCK turns, the first WARM of each block untimed:
       each way is timed with its own code and data warm in the caches (a host running turns
       back to back), while all see the same drift of the machine over the run. Timing them
       turn by turn in turn would charge each the cache misses of refilling what the previous
       way evicted (measured: 15-20 us on the first raw loop after an agent turn). Each turn
       starts from a quiet process (bench_settle): the runtime's worker may still be wrapping
       up the last turn, or a freed agent, and on a small machine that tail would otherwise be
       charged to the next turn. */
    enum { BLOCK = 25, WARM = 5 };
    int done = 0;
    while (done < turns) {
        int n = turns - done < BLOCK - WARM ? turns - done : BLOCK - WARM;
        for (int way = 0; way < WAYS; way++) {
            for (int j = -WARM; j < n; j++) {
                double t0, dt;
                if (way < 2) {
                    CURL *e = way == 0 ? c : ct;
                    bench_settle(300);
                    t0 = bench_now_us();
                    curl_easy_setopt(e, CURLOPT_POSTFIELDS, ONE_TOOL_FIRST);
                    if ((way == 0 ? curl_easy_perform(e) : raw_floor_perform(mt, e, RAW_FLOOR_SPIN_US)) != CURLE_OK)
                        return 1;
                    curl_easy_setopt(e, CURLOPT_POSTFIELDS, ONE_TOOL_SECOND);
                    if ((way == 0 ? curl_easy_perform(e) : raw_floor_perform(mt, e, RAW_FLOOR_SPIN_US)) != CURLE_OK)
                        return 1;
                    dt = bench_now_us() - t0;
                } else if (way == 2 || way == 3) {
                    /* agentos_agent_send, then events until TURN_END: workers run the turn. The
                       host waits for each event, or (way 3) only for the turn's end, and then
                       takes the events queued by then. */
                    bench_settle(300);
                    t0 = bench_now_us();
                    if (agentos_agent_send(rt, s, "go", NULL) != AGENTOS_STATUS_OK) return 1;
                    if (way == 3 && agentos_runtime_wait_event(rt, 1u << AGENTOS_EVENT_TURN_END, 10000) != AGENTOS_STATUS_OK)
                        return 1;
                    agentos_event *ev = NULL;
                    for (;;) {
                        if (agentos_runtime_next_event(rt, 10000, &ev) != AGENTOS_STATUS_OK) return 1;
                        int end = agentos_event_kind(ev) == AGENTOS_EVENT_TURN_END;
                        int ok = agentos_event_status(ev) == AGENTOS_STATUS_OK;
                        agentos_event_free(ev);
                        if (end) {
                            if (!ok) return 1;
                            break;
                        }
                    }
                    dt = bench_now_us() - t0;
                } else {
                    /* agentos_agent_run: the calling thread runs the turn. */
                    agentos_agent_id who = s;
                    if (way == 5) {
                        if (agentos_agent_new(rt, fresh_json, &a, NULL) != AGENTOS_STATUS_OK) return 1;
                        who = a;
                    }
                    bench_settle(300);
                    t0 = bench_now_us();
                    char *answer = NULL;
                    if (agentos_agent_run(rt, who, "go", -1, &answer, NULL) != AGENTOS_STATUS_OK) return 1;
                    dt = bench_now_us() - t0;
                    agentos_string_free(answer);
                    if (way == 5) agentos_agent_free(rt, a);
                    /* Its events are not read here: drop them so the next turn starts clean. */
                    agentos_event *ev = NULL;
                    while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) agentos_event_free(ev);
                }
                if (j >= 0) t[way][done + j] = dt;
            }
        }
        done += n;
    }
    /* Paired ratios: each block's median against the floors' medians in the same block (the
       ways' blocks are timed back to back), then the median over blocks. A slow spell of the
       machine then weighs on both sides of a ratio, where the overall medians can catch it on
       one side only. Computed before the overall quantiles, which sort the samples. */
    int blocks = (turns + (BLOCK - WARM) - 1) / (BLOCK - WARM);
    double *pair[WAYS][2];
    for (int w = 0; w < WAYS; w++)
        for (int f = 0; f < 2; f++) pair[w][f] = calloc((size_t)blocks, sizeof(double));
    double blk[WAYS][BLOCK];
    for (int b = 0; b < blocks; b++) {
        int from = b * (BLOCK - WARM), n = turns - from < BLOCK - WARM ? turns - from : BLOCK - WARM;
        double m[WAYS];
        for (int w = 0; w < WAYS; w++) {
            memcpy(blk[w], t[w] + from, (size_t)n * sizeof(double));
            m[w] = bench_quantile(blk[w], n, 0.5);
        }
        for (int w = 2; w < WAYS; w++) {
            pair[w][0][b] = m[w] / m[0];
            pair[w][1][b] = m[w] / m[1];
        }
    }
    double med[WAYS], p99[WAYS];
    for (int w = 0; w < WAYS; w++) {
        med[w] = bench_quantile(t[w], turns, 0.5);
        p99[w] = bench_quantile(t[w], turns, 0.99);
    }
    static const char *names[WAYS] = {
        "raw libcurl, 2 requests (floor)", "raw libcurl tuned (raw_floor.h)",
        "agent_send + next_event", "agent_send + wait_event(END)", "agent_run, stateless agent",
        "agent_run, fresh agent"};
    printf("%d turns, each 2 model calls + 1 tool call\n", turns);
    for (int w = 0; w < WAYS; w++) {
        printf("%-33s median %8.1f us   p99 %8.1f us\n", names[w], med[w], p99[w]);
        if (w >= 2) {
            printf("  vs floor %.3fx (%+.1f us), p99 %.3fx; vs tuned floor %.3fx (%+.1f us)\n",
                   med[w] / med[0], med[w] - med[0], p99[w] / p99[0], med[w] / med[1], med[w] - med[1]);
            printf("  paired by block (median of %d): vs floor %.3fx, vs tuned floor %.3fx\n", blocks,
                   bench_quantile(pair[w][0], blocks, 0.5), bench_quantile(pair[w][1], blocks, 0.5));
        }
    }
    for (int w = 0; w < WAYS; w++)
        for (int f = 0; f < 2; f++) free(pair[w][f]);
    char *usage = NULL;
    if (agentos_runtime_usage_json(rt, &usage) == AGENTOS_STATUS_OK) {
        const char *k = strstr(usage, "\"caller_thread_calls\":");
        const char *s = strstr(usage, "\"succeeded\":");
        if (k && s)
            printf("model calls made on the agent's own worker: %ld of %ld\n",
                   strtol(k + strlen("\"caller_thread_calls\":"), NULL, 10),
                   strtol(s + strlen("\"succeeded\":"), NULL, 10));
        agentos_string_free(usage);
    }
    agentos_runtime_free(rt);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    curl_easy_cleanup(ct);
    curl_multi_cleanup(mt);
    curl_url_cleanup(ct_url);
    curl_global_cleanup();
    for (int w = 0; w < WAYS; w++) free(t[w]);
    return 0;
}
