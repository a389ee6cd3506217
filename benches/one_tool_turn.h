/* one_tool_turn.h - the one-tool turn the turn benches measure (agent_turn.c, turn_segments.c,
 * turn_instructions.c): the C tool, the two request bodies the raw libcurl loop sends in place
 * of the agent's two model calls, the raw loop's handle, and the runtime with its endpoint,
 * tool and stateless agent. */
#ifndef AGENTOS_ONE_TOOL_TURN_H
#define AGENTOS_ONE_TOOL_TURN_H
#include <agentos.h>
#include <curl/curl.h>
#include <stdio.h>

/* The tool: completes at once. */
static int32_t one_tool_step(void *u, agentos_tool_call *call) {
    (void)u;
    agentos_tool_call_complete(call, "{\"ok\":true}", false);
    return AGENTOS_TOOL_DONE;
}

/* A libcurl write callback that drops the answer. */
static size_t one_tool_sink(char *p, size_t s, size_t n, void *u) {
    (void)p;
    (void)u;
    return s * n;
}

/* The two requests the agent sends, byte for byte (as it sends them to this server: the
   endpoint names no model, so none is sent, and the default max_tokens is): the question,
   then the question, the server's tool call and the tool's result, each offering the tool. */
static const char *const ONE_TOOL_FIRST =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"go\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"step\",\"description\":\"one step\","
    "\"parameters\":{\"type\":\"object\"}}}],\"max_tokens\":1024}";
static const char *const ONE_TOOL_SECOND =
    "{\"messages\":[{\"role\":\"user\",\"content\":\"go\"},{\"role\":\"assistant\","
    "\"content\":null,\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"step\","
    "\"arguments\":\"{\\\"n\\\": 0}\"}}]},{\"role\":\"tool\",\"content\":\"{\\\"ok\\\":true}\","
    "\"tool_call_id\":\"call_0\"}],"
    "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"step\",\"description\":\"one step\","
    "\"parameters\":{\"type\":\"object\"}}}],\"max_tokens\":1024}";

/* The stateless agent (keep_history false) whose every turn sends the two requests above. */
#define ONE_TOOL_STATELESS_AGENT \
    "{\"name\":\"s\",\"endpoint\":\"b\",\"tools\":[\"step\"],\"stream\":false,\"keep_history\":false}"

/* Gives `rt` the endpoint "b" at `base_url` (OpenAI API) and the tool "step". */
static inline int one_tool_setup(agentos_runtime *rt, const char *base_url) {
    char ep[512];
    snprintf(ep, sizeof ep, "{\"name\":\"b\",\"provider\":\"openai\",\"base_url\":\"%s\"}", base_url);
    if (agentos_runtime_add_endpoint(rt, ep, NULL) != AGENTOS_STATUS_OK) return 1;
    return agentos_runtime_add_tool(rt, "step", "one step", "{\"type\":\"object\"}", 0, one_tool_step,
                                    NULL, NULL) != AGENTOS_STATUS_OK;
}

/* A runtime (`workers` workers; 0: the default, one per core) set up by one_tool_setup, with
   the stateless agent in `*agent`. NULL on failure. Free with agentos_runtime_free. */
static inline agentos_runtime *one_tool_runtime(const char *base_url, uint32_t workers,
                                                agentos_agent_id *agent) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    if (workers > 0) agentos_config_set_workers(cfg, workers);
    agentos_status st = agentos_runtime_new(cfg, &rt, NULL);
    agentos_config_free(cfg);
    if (st != AGENTOS_STATUS_OK) return NULL;
    if (one_tool_setup(rt, base_url) ||
        agentos_agent_new(rt, ONE_TOOL_STATELESS_AGENT, agent, NULL) != AGENTOS_STATUS_OK) {
        agentos_runtime_free(rt);
        return NULL;
    }
    return rt;
}

/* The plain raw loop's handle: POSTs to `url` with the JSON content type (`*headers`, to
   free with curl_slist_free_all after the handle), answers dropped, no Nagle delay. */
static inline CURL *one_tool_raw_handle(const char *url, struct curl_slist **headers) {
    CURL *c = curl_easy_init();
    *headers = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, *headers);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, one_tool_sink);
    curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
    return c;
}
#endif
