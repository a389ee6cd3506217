/*
 * turn_segments.c - where the time of a one-tool turn goes, segment by segment, for the raw
 * libcurl floor (tuned, see raw_floor.h) and for agentos_agent_run (a stateless agent): the
 * time before the first request is sent, each request in flight (send to the answer's
 * arrival: the syscall, the server and the wait), the time between the first answer and the
 * second request (parsing, the tool, building the next request), and after the last answer.
 * The client's own work is the three "client" segments; the bench shows how much of the
 * per-turn overhead is AgentOS computing and how much is the requests taking longer.
 *
 * Needs benches/syscall_clock.c preloaded (it notes the time of each send and recv):
 *   LD_PRELOAD=target/libsyscall_clock.so turn_segments URL [TURNS]
 * (server: fake_openai_server.c --tool-steps 1; see benches/run-agents.sh segments)
 */
#define _GNU_SOURCE
#include "bench_util.h"
#include "one_tool_turn.h"
#include "raw_floor.h"
#include <agentos.h>
#include <curl/curl.h>
#include <dlfcn.h>

enum { SEGS = 5 };
static const char *seg_names[SEGS] = {"client: before request 1", "request 1 in flight",
                                      "client: answer 1 to request 2", "request 2 in flight",
                                      "client: after answer 2"};


int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int turns = argc > 2 ? atoi(argv[2]) : 2000;
    void (*turn_start)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "clock_turn_start");
    int (*turn_end)(const double **) = (int (*)(const double **))dlsym(RTLD_DEFAULT, "clock_turn_end");
    if (!turn_start || !turn_end) {
        fprintf(stderr, "turn_segments: preload libsyscall_clock.so (benches/syscall_clock.c)\n");
        return 2;
    }
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct curl_slist *h = NULL;
    CURL *c = one_tool_raw_handle(url, &h);
    CURLU *c_url = raw_floor_tune(c, url);
    CURLM *m = curl_multi_init();

    agentos_agent_id a = 0;
    agentos_runtime *rt = one_tool_runtime(argv[1], 0, &a);
    if (!rt) return 1;

    /* Per way (0 raw, 1 agent_run) and segment, the times of the turns that had exactly two
       sends and two data-bearing receives (an answer read in two pieces is skipped). */
    double *seg[2][SEGS], *total[2];
    int kept[2] = {0, 0}, skipped[2] = {0, 0};
    for (int w = 0; w < 2; w++) {
        total[w] = calloc((size_t)turns, sizeof(double));
        for (int s = 0; s < SEGS; s++) seg[w][s] = calloc((size_t)turns, sizeof(double));
    }
    /* Interleaved warm blocks, as in agent_turn.c. */
    enum { BLOCK = 25, WARM = 5 };
    int done = 0;
    while (done < turns) {
        int n = turns - done < BLOCK - WARM ? turns - done : BLOCK - WARM;
        for (int way = 0; way < 2; way++) {
            for (int j = -WARM; j < n; j++) {
                bench_settle(300);
                turn_start();
                if (way == 0) {
                    curl_easy_setopt(c, CURLOPT_POSTFIELDS, ONE_TOOL_FIRST);
                    if (raw_floor_perform(m, c, RAW_FLOOR_SPIN_US) != CURLE_OK) return 1;
                    curl_easy_setopt(c, CURLOPT_POSTFIELDS, ONE_TOOL_SECOND);
                    if (raw_floor_perform(m, c, RAW_FLOOR_SPIN_US) != CURLE_OK) return 1;
                } else {
                    char *answer = NULL;
                    if (agentos_agent_run(rt, a, "go", -1, &answer, NULL) != AGENTOS_STATUS_OK) return 1;
                    agentos_string_free(answer);
                }
                const double *m = NULL;
                int marks = turn_end(&m);
                if (way == 1) {
                    agentos_event *ev = NULL;
                    while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) agentos_event_free(ev);
                }
                if (j < 0) continue;
                if (marks != SEGS + 1) {
                    skipped[way]++;
                    continue;
                }
                for (int s = 0; s < SEGS; s++) seg[way][s][kept[way]] = m[s + 1] - m[s];
                total[way][kept[way]] = m[SEGS] - m[0];
                kept[way]++;
            }
        }
        done += n;
    }
    if (kept[0] == 0 || kept[1] == 0) {
        fprintf(stderr, "turn_segments: no turn had the expected sends and receives\n");
        return 1;
    }
    /* A turn counts when it had exactly two sends and two data-bearing receives; an answer
       read in two pieces (AgentOS reads with a 4 KiB buffer, raw libcurl with 16 KiB) is left
       out, and a large share left out would bias the medians. */
    printf("medians in us over %d raw and %d agent_run turns (left out: %d and %d)\n", kept[0], kept[1],
           skipped[0], skipped[1]);
    if (skipped[0] * 10 > turns || skipped[1] * 10 > turns)
        printf("warning: over a tenth of the turns were left out; the segments may be biased\n");
    printf("%-32s %9s %9s %9s\n", "segment", "raw", "agent_run", "extra");
    double client[2] = {0, 0};
    for (int s = 0; s < SEGS; s++) {
        double r = bench_quantile(seg[0][s], kept[0], 0.5), o = bench_quantile(seg[1][s], kept[1], 0.5);
        if (s % 2 == 0) {
            client[0] += r;
            client[1] += o;
        }
        printf("%-32s %9.1f %9.1f %+9.1f\n", seg_names[s], r, o, o - r);
    }
    printf("%-32s %9.1f %9.1f %+9.1f\n", "client segments, summed", client[0], client[1], client[1] - client[0]);
    double tr = bench_quantile(total[0], kept[0], 0.5), to = bench_quantile(total[1], kept[1], 0.5);
    printf("%-32s %9.1f %9.1f %+9.1f  (%.3fx)\n", "whole turn", tr, to, to - tr, to / tr);
    agentos_runtime_free(rt);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    curl_multi_cleanup(m);
    curl_url_cleanup(c_url);
    curl_global_cleanup();
    for (int w = 0; w < 2; w++) {
        free(total[w]);
        for (int s = 0; s < SEGS; s++) free(seg[w][s]);
    }
    return 0;
}
