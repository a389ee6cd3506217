/*
 * turn_instructions.c - instructions per one-tool turn, counted by callgrind: the raw libcurl
 * loop tuned the way AgentOS uses libcurl (benches/raw_floor.h, waiting in poll) against
 * agentos_agent_run on a stateless agent. Instruction counts repeat run to run whatever else
 * the machine does, so this shows small changes that the timed benches (agent_turn.c) cannot
 * tell from noise. Run under valgrind with --toggle-collect=raw_turn or
 * --toggle-collect=agent_turn (benches/run-agents.sh instructions does both).
 *
 *   turn_instructions URL [TURNS]   (server: fake_openai_server.c --tool-steps 1)
 */
#include "bench_util.h"
#include "raw_floor.h"
#include <agentos.h>
#include <curl/curl.h>

static int32_t step_tool(void *u, agentos_tool_call *call) {
    (void)u;
    agentos_tool_call_complete(call, "{\"ok\":true}", false);
    return AGENTOS_TOOL_DONE;
}

static size_t sink(char *p, size_t s, size_t n, void *u) {
    (void)p;
    (void)u;
    return s * n;
}

/* The two requests the agent sends (see agent_turn.c). */
static const char *first = "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"go\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"step\",\"description\":\"one step\","
    "\"parameters\":{\"type\":\"object\"}}}]}";
static const char *second =
    "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"go\"},{\"role\":\"assistant\","
    "\"content\":null,\"tool_calls\":[{\"id\":\"c\",\"type\":\"function\",\"function\":{\"name\":\"step\","
    "\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c\",\"content\":\"{}\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"step\",\"description\":\"one step\","
    "\"parameters\":{\"type\":\"object\"}}}]}";

/* One raw turn: the two requests, waiting in poll (no yielding: under valgrind the yield loop
   would count its own iterations). */
__attribute__((noinline)) int raw_turn(CURLM *m, CURL *c) {
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, first);
    if (raw_floor_perform(m, c, 0) != CURLE_OK) return 1;
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, second);
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
    char url[512];
    snprintf(url, sizeof url, "%s/chat/completions", argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    CURLU *u = raw_floor_tune(c, url);
    CURLM *m = curl_multi_init();

    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep, "{\"name\":\"b\",\"provider\":\"openai\",\"base_url\":\"%s\"}", argv[1]);
    agentos_runtime_add_endpoint(rt, ep, NULL);
    agentos_runtime_add_tool(rt, "step", "one step", "{\"type\":\"object\"}", 0, step_tool, NULL, NULL);
    agentos_agent_id s = 0;
    if (agentos_agent_new(rt, "{\"name\":\"s\",\"endpoint\":\"b\",\"tools\":[\"step\"],\"stream\":false,"
                              "\"keep_history\":false}", &s, NULL) != AGENTOS_STATUS_OK)
        return 1;
    /* Every turn is counted, the first ones' set-up (connecting, first allocations) too:
       benches/run-agents.sh runs N and 2N turns and divides the difference by N. */
    for (int i = 0; i < turns; i++) {
        if (raw_turn(m, c) || agent_turn(rt, s)) return 1;
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
