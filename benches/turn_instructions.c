/*
 * turn_instructions.c - instructions per one-tool turn, counted by callgrind: the raw libcurl
 * loop tuned the way AgentOS uses libcurl (benches/raw_floor.h, waiting in poll) against
 * agentos_agent_run on a stateless agent. Instruction counts stay within ~1% run to run
 * whatever else the machine does, so this shows changes that the timed benches
 * (agent_turn.c) cannot tell from noise. Run under valgrind with --toggle-collect=raw_turn or
 * --toggle-collect=agent_turn (benches/run-agents.sh instructions does both). With WAY, only
 * that way's turns run: for callgrind's cache simulation (--cache-sim=yes), which counts the
 * instruction-cache misses of a way's turns run back to back, not evicted by the other way.
 *
 *   turn_instructions URL [TURNS [raw|agent]]   (server: fake_openai_server.c --tool-steps 1)
 */
#include "bench_util.h"
#include "one_tool_turn.h"
#include "raw_floor.h"
#include <agentos.h>
#include <curl/curl.h>
#include <string.h>


/* One raw turn: the two requests, waiting in poll (no yielding: under valgrind the yield loop
   would count its own iterations). */
__attribute__((noinline)) int raw_turn(CURLM *m, CURL *c) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, ONE_TOOL_FIRST);
    if (raw_floor_perform(m, c, 0) != CURLE_OK) return 1;
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, ONE_TOOL_SECOND);
    return raw_floor_perform(m, c, 0) != CURLE_OK;
}

/* One agent turn, as the timed bench measures it (its events are drained outside). */
__attribute__((noinline)) int agent_turn(agentos_runtime *rt, agentos_agent_id s) {
    char *answer = NULL;
    if (agentos_agent_run(rt, s, "go", -1, &answer, NULL) != AGENTOS_STATUS_OK) return 1;
    agentos_string_free(answer);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int turns = argc > 2 ? atoi(argv[2]) : 200;
    int run_raw = argc <= 3 || strcmp(argv[3], "raw") == 0;
    int run_agent = argc <= 3 || strcmp(argv[3], "agent") == 0;
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct curl_slist *h = NULL;
    CURL *c = one_tool_raw_handle(url, &h);
    CURLU *u = raw_floor_tune(c, url);
    CURLM *m = curl_multi_init();

    agentos_agent_id s = 0;
    agentos_runtime *rt = one_tool_runtime(argv[1], 0, &s);
    if (!rt) return 1;
    /* Every turn is counted, the first ones' set-up (connecting, first allocations) too:
       benches/run-agents.sh runs N and 2N turns and divides the difference by N. */
    for (int i = 0; i < turns; i++) {
        if ((run_raw && raw_turn(m, c)) || (run_agent && agent_turn(rt, s))) return 1;
        agentos_event *ev = NULL;
        while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) agentos_event_free(ev);
    }
    printf("%d turns of each way\n", turns);
    agentos_runtime_free(rt);
    curl_easy_cleanup(c);
    curl_url_cleanup(u);
    curl_multi_cleanup(m);
    curl_slist_free_all(h);
    curl_global_cleanup();
    return 0;
}
