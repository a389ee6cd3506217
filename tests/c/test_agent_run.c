/*
 * test_agent_run.c - agentos_agent_run, the synchronous turn, against a scripted HTTP server of
 * its own on 127.0.0.1: a turn with a C tool (run on the calling thread), a time limit that
 * expires while the turn goes on, two threads running turns on one agent, failures (server
 * down, max_steps), and bad arguments. Run under ASan and valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"
#include "json_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* ---- the server ------------------------------------------------------------------------ */

/* Answers each request by what its body holds:
   a tool result  -> the text "done: " and the last user message;
   "slow"         -> the text "slow done", after 600 ms;
   otherwise      -> a call of the tool "step" with arguments {}. */
static void answer(const char *body, char *json, size_t cap) {
    const char *usage = "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}";
    if (strstr(body, "\"role\":\"tool\"")) {
        /* Echo the last user message (plain text in these tests), so each caller can tell
           its own answer. */
        const char *key = "\"role\":\"user\",\"content\":\"", *last = NULL;
        for (const char *p = strstr(body, key); p; p = strstr(p + 1, key)) last = p + strlen(key);
        int n = last ? (int)strcspn(last, "\"") : 0;
        snprintf(json, cap,
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"done: %.*s\"},"
                 "\"finish_reason\":\"stop\"}],%s}", n, last ? last : "", usage);
    } else if (strstr(body, "slow")) {
        struct timespec ts = {0, 600 * 1000000L};
        nanosleep(&ts, NULL);
        snprintf(json, cap,
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"slow done\"},"
                 "\"finish_reason\":\"stop\"}],%s}", usage);
    } else {
        snprintf(json, cap,
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
                 "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"step\","
                 "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],%s}", usage);
    }
}

/* ---- the tool --------------------------------------------------------------------------- */

static pthread_t tool_thread;
static atomic_int tool_calls;

static int32_t step_tool(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    tool_thread = pthread_self();
    atomic_fetch_add(&tool_calls, 1);
    CHECK(agentos_tool_call_complete(call, "{\"ok\":true}", false) == AGENTOS_STATUS_OK);
    return AGENTOS_TOOL_DONE;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static agentos_runtime *rt;

static agentos_agent_id new_agent(const char *json) {
    agentos_agent_id a = 0;
    CHECK(agentos_agent_new(rt, json, &a, NULL) == AGENTOS_STATUS_OK);
    return a;
}

struct go {
    agentos_agent_id agent;
    const char *text, *expect;
};

static void *run_go(void *arg) {
    struct go *g = arg;
    char *answer = NULL;
    CHECK(agentos_agent_run(rt, g->agent, g->text, 30000, &answer, NULL) == AGENTOS_STATUS_OK);
    CHECK(strcmp(answer, g->expect) == 0);
    agentos_string_free(answer);
    return NULL;
}

int main(void) {
    int port = json_server_start(answer);
    agentos_config *cfg = NULL;
    CHECK(agentos_config_new(&cfg) == 0);
    CHECK(agentos_config_set_json(cfg, "{\"workers\":2,\"event_capacity\":1000}", NULL) == 0);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == 0);
    agentos_config_free(cfg);
    char ep[512];
    /* Two names for the one server: "slowep" answers slowly, and its speed is learnt apart. */
    const char *names[] = {"fake", "slowep"};
    for (int i = 0; i < 2; i++) {
        snprintf(ep, sizeof ep,
                 "{\"name\":\"%s\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
                 "\"retry\":{\"max_retries\":0}}", names[i], port);
        CHECK(agentos_runtime_add_endpoint(rt, ep, NULL) == 0);
    }
    snprintf(ep, sizeof ep,
             "{\"name\":\"dead\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"retry\":{\"max_retries\":0}}", dead_port());
    CHECK(agentos_runtime_add_endpoint(rt, ep, NULL) == 0);
    CHECK(agentos_runtime_add_tool(rt, "step", "one step", "{\"type\":\"object\"}", 0, step_tool, NULL, NULL) == 0);

    /* Bad arguments: a clear status, *out_answer NULL, nothing queued. */
    agentos_agent_id a = new_agent("{\"name\":\"a\",\"endpoint\":\"fake\",\"tools\":[\"step\"],\"stream\":false}");
    char *answer = (char *)"untouched";
    agentos_error *err = NULL;
    CHECK(agentos_agent_run(NULL, a, "go", -1, &answer, NULL) == AGENTOS_STATUS_NULL_ARGUMENT && answer == NULL);
    CHECK(agentos_agent_run(rt, a, NULL, -1, &answer, &err) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(strstr(agentos_error_message(err), "text") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK(agentos_agent_run(rt, a, "bad \xff utf-8", -1, &answer, NULL) == AGENTOS_STATUS_INVALID_UTF8);
    CHECK(agentos_agent_run(rt, 12345, "go", -1, &answer, NULL) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_run(rt, 0, "go", -1, &answer, NULL) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(answer == NULL && atomic_load(&tool_calls) == 0);

    /* A turn with one tool call: the answer comes back, and the tool ran on this thread. */
    CHECK(agentos_agent_run(rt, a, "go", -1, &answer, &err) == AGENTOS_STATUS_OK);
    CHECK(err == NULL && answer != NULL && strcmp(answer, "done: go") == 0);
    agentos_string_free(answer);
    CHECK(atomic_load(&tool_calls) == 1 && pthread_equal(tool_thread, pthread_self()));
    int32_t state = -1;
    CHECK(agentos_agent_state(rt, a, &state) == 0 && state == AGENTOS_AGENT_IDLE);
    /* Its events went out as usual, ending with the turn's end. */
    agentos_event *ev = NULL;
    int kinds = 0, last = 0;
    while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) {
        kinds++;
        last = agentos_event_kind(ev);
        agentos_event_free(ev);
    }
    CHECK(kinds == 8 && last == AGENTOS_EVENT_TURN_END);

    /* Waiting for turn ends only: agentos_runtime_wait_event returns once the turn has ended
       and takes nothing; the turn's events are then all queued, in order. */
    const uint32_t turn_end = 1u << AGENTOS_EVENT_TURN_END;
    CHECK(agentos_runtime_wait_event(NULL, turn_end, 0) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_runtime_wait_event(rt, turn_end, 0) == AGENTOS_STATUS_TIMEOUT);
    CHECK(agentos_agent_send(rt, a, "by events", NULL) == 0);
    CHECK(agentos_runtime_wait_event(rt, turn_end, 30000) == AGENTOS_STATUS_OK);
    CHECK(agentos_runtime_wait_event(rt, turn_end, 0) == AGENTOS_STATUS_OK); /* still queued */
    int first = 0;
    kinds = 0;
    while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) {
        if (kinds++ == 0) first = agentos_event_kind(ev);
        last = agentos_event_kind(ev);
        if (last == AGENTOS_EVENT_TURN_END) {
            const char *text;
            size_t len;
            CHECK(agentos_event_text(ev, &text, &len) == 0 && strcmp(text, "done: by events") == 0);
        }
        agentos_event_free(ev);
    }
    /* (The server answers at once when the conversation already holds a tool result.) */
    CHECK(kinds == 4 && first == AGENTOS_EVENT_TURN_START && last == AGENTOS_EVENT_TURN_END);
    CHECK(agentos_runtime_wait_event(rt, 0, 0) == AGENTOS_STATUS_TIMEOUT); /* 0: any kind */

    /* out_answer may be NULL. */
    CHECK(agentos_agent_run(rt, a, "again", 30000, NULL, NULL) == AGENTOS_STATUS_OK);

    /* Two threads run turns on one agent at once: each gets its own turn's answer. */
    agentos_agent_id b = new_agent("{\"name\":\"b\",\"endpoint\":\"fake\",\"tools\":[\"step\"],\"stream\":false}");
    struct go g1 = {b, "go A", "done: go A"}, g2 = {b, "go B", "done: go B"};
    pthread_t t1, t2;
    CHECK(pthread_create(&t1, NULL, run_go, &g1) == 0);
    CHECK(pthread_create(&t2, NULL, run_go, &g2) == 0);
    CHECK(pthread_join(t1, NULL) == 0 && pthread_join(t2, NULL) == 0);
    agentos_usage u;
    memset(&u, 0, sizeof u);
    u.struct_size = sizeof u;
    CHECK(agentos_agent_usage(rt, b, &u) == 0 && u.attempts == 2);

    /* A time limit that expires: TIMEOUT, and the turn goes on to a TURN_END event. */
    agentos_agent_id s = new_agent("{\"name\":\"s\",\"endpoint\":\"slowep\",\"stream\":false}");
    while (agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_OK) agentos_event_free(ev);
    CHECK(agentos_agent_run(rt, s, "slow please", 50, &answer, &err) == AGENTOS_STATUS_TIMEOUT);
    CHECK(answer == NULL && strstr(agentos_error_message(err), "still running") != NULL);
    agentos_error_free(err);
    err = NULL;
    int ended = 0;
    while (!ended && agentos_runtime_next_event(rt, 10000, &ev) == AGENTOS_STATUS_OK) {
        if (agentos_event_kind(ev) == AGENTOS_EVENT_TURN_END && agentos_event_agent(ev) == s) {
            const char *text;
            size_t len;
            CHECK(agentos_event_status(ev) == AGENTOS_STATUS_OK);
            CHECK(agentos_event_text(ev, &text, &len) == 0 && strcmp(text, "slow done") == 0);
            ended = 1;
        }
        agentos_event_free(ev);
    }
    CHECK(ended);

    /* Failures come back as the turn's status and message. */
    agentos_agent_id d = new_agent("{\"name\":\"d\",\"endpoint\":\"dead\",\"stream\":false}");
    CHECK(agentos_agent_run(rt, d, "anyone?", 30000, &answer, &err) == AGENTOS_STATUS_HTTP);
    CHECK(answer == NULL && strstr(agentos_error_message(err), "\"dead\"") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK(agentos_agent_state(rt, d, &state) == 0 && state == AGENTOS_AGENT_FAILED);
    agentos_agent_id m = new_agent("{\"name\":\"m\",\"endpoint\":\"fake\",\"tools\":[\"step\"],\"stream\":false,\"max_steps\":1}");
    CHECK(agentos_agent_run(rt, m, "go", 30000, &answer, &err) == AGENTOS_STATUS_LIMIT_EXCEEDED);
    CHECK(answer == NULL && strstr(agentos_error_message(err), "max_steps") != NULL);
    agentos_error_free(err);

    /* A freed agent's handle is stale. */
    CHECK(agentos_agent_free(rt, a) == 0);
    CHECK(agentos_agent_run(rt, a, "go", -1, &answer, NULL) == AGENTOS_STATUS_STALE_HANDLE);

    agentos_runtime_free(rt);
    json_server_stop();
    printf("test_agent_run: %d checks passed\n", checks);
    return 0;
}
