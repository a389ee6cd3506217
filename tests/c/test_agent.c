/*
 * test_agent.c - the agent, tool and event C API with NULLs, bad input and stale handles, and
 * a turn that fails against a dead endpoint (no model server needed). Run under ASan and
 * valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static int32_t noop_tool(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    agentos_tool_call_complete(call, "{}", false);
    return AGENTOS_TOOL_DONE;
}

static int callback_events = 0;
static void on_event(void *user_data, const agentos_event *ev) {
    (void)user_data;
    if (agentos_event_kind(ev) > 0) __atomic_add_fetch(&callback_events, 1, __ATOMIC_SEQ_CST);
}

int main(void) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_error *err = NULL;
    CHECK(agentos_config_new(&cfg) == 0);
    CHECK(agentos_config_set_json(cfg, "{\"workers\":2,\"event_capacity\":1000}", NULL) == 0);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == 0);
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"dead\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"retry\":{\"max_retries\":0}}", dead_port());
    CHECK(agentos_runtime_add_endpoint(rt, ep, NULL) == 0);

    /* Tools: NULLs, bad schema, bad and reserved names. */
    const char *obj = "{\"type\":\"object\"}";
    CHECK(agentos_runtime_add_tool(NULL, "t", "d", obj, 0, noop_tool, NULL, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_runtime_add_tool(rt, "t", "d", obj, 0, NULL, NULL, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_runtime_add_tool(rt, "t", "d", "{not json", 0, noop_tool, NULL, NULL) == AGENTOS_STATUS_INVALID_JSON);
    CHECK(agentos_runtime_add_tool(rt, "bad name!", "d", obj, 0, noop_tool, NULL, NULL) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_runtime_add_tool(rt, "send_message", "d", obj, 0, noop_tool, NULL, NULL) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_runtime_add_tool(rt, "noop", "d", obj, 0, noop_tool, NULL, NULL) == 0);
    CHECK(agentos_runtime_add_tool(rt, "noop", "d", obj, 0, noop_tool, NULL, NULL) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_tool_call_complete(NULL, "x", false) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_tool_call_name(NULL) == NULL && agentos_tool_call_agent(NULL) == 0);

    /* Agents: NULLs, bad JSON naming the key, unknown endpoint and tool, duplicates. */
    agentos_agent_id a = 0, b = 0;
    CHECK(agentos_agent_new(rt, NULL, &a, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"dead\"}", NULL, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"dead\",\"priorty\":1}", &a, &err) == AGENTOS_STATUS_INVALID_JSON);
    CHECK(strstr(agentos_error_message(err), "priorty") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"nowhere\"}", &a, NULL) == AGENTOS_STATUS_NOT_FOUND);
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"dead\",\"tools\":[\"nope\"]}", &a, NULL) == AGENTOS_STATUS_NOT_FOUND);
    CHECK(agentos_agent_new(rt, "{\"name\":\"\xff\",\"endpoint\":\"dead\"}", &a, NULL) == AGENTOS_STATUS_INVALID_UTF8);
    CHECK(a == 0);
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"dead\",\"tools\":[\"noop\",\"send_message\"]}", &a, NULL) == 0);
    CHECK(agentos_agent_new(rt, "{\"name\":\"a\",\"endpoint\":\"dead\"}", &b, NULL) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_agent_new(rt, "{\"name\":\"b\",\"endpoint\":\"dead\",\"stream\":false}", &b, NULL) == 0);
    CHECK(a != 0 && b != 0 && a != b);
    agentos_agent_id found = 0;
    CHECK(agentos_agent_find(rt, "b", &found) == 0 && found == b);
    CHECK(agentos_agent_find(rt, "zz", &found) == AGENTOS_STATUS_NOT_FOUND);
    int32_t state = -1;
    CHECK(agentos_agent_state(rt, a, &state) == 0 && state == AGENTOS_AGENT_IDLE);
    CHECK(agentos_agent_send(rt, a, NULL, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_agent_send_as(rt, a, a, "me", NULL) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_agent_send(rt, 12345, "x", NULL) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_send(rt, 0, "x", NULL) == AGENTOS_STATUS_STALE_HANDLE);

    /* Events: nothing yet; NULLs. */
    agentos_event *ev = NULL;
    CHECK(agentos_runtime_next_event(rt, 0, &ev) == AGENTOS_STATUS_TIMEOUT && ev == NULL);
    CHECK(agentos_runtime_next_event(rt, 0, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_event_kind(NULL) == 0 && agentos_event_agent(NULL) == 0);
    CHECK(agentos_event_status(NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    agentos_event_free(NULL);
    CHECK(agentos_runtime_set_event_callback(rt, on_event, NULL) == 0);

    /* A turn against a dead endpoint fails with a clear status; history keeps the message. */
    CHECK(agentos_agent_send(rt, b, "hello?", &err) == 0);
    CHECK(agentos_runtime_wait_idle(rt, 30000) == 0);
    int turn_end_seen = 0, error_seen = 0;
    while (agentos_runtime_next_event(rt, 0, &ev) == 0) {
        const char *text;
        size_t len;
        CHECK(agentos_event_text(ev, &text, &len) == 0 && strlen(text) == len);
        char *json = NULL;
        CHECK(agentos_event_json(ev, &json) == 0 && json[0] == '{');
        agentos_string_free(json);
        CHECK(agentos_event_agent(ev) == b);
        CHECK(strcmp(agentos_event_agent_name(ev), "b") == 0);
        if (agentos_event_kind(ev) == AGENTOS_EVENT_ERROR) error_seen++;
        if (agentos_event_kind(ev) == AGENTOS_EVENT_TURN_END) {
            turn_end_seen++;
            CHECK(agentos_event_status(ev) == AGENTOS_STATUS_HTTP);
            CHECK(strstr(text, "\"dead\"") != NULL);
        }
        agentos_event_free(ev);
    }
    CHECK(turn_end_seen == 1 && error_seen == 1);
    CHECK(__atomic_load_n(&callback_events, __ATOMIC_SEQ_CST) >= 4);
    CHECK(agentos_runtime_set_event_callback(rt, NULL, NULL) == 0);
    CHECK(agentos_agent_state(rt, b, &state) == 0 && state == AGENTOS_AGENT_FAILED);
    char *hist = NULL;
    CHECK(agentos_agent_history_json(rt, b, &hist) == 0);
    CHECK(strstr(hist, "hello?") != NULL);
    agentos_string_free(hist);
    agentos_usage u;
    memset(&u, 0, sizeof u);
    u.struct_size = sizeof u;
    CHECK(agentos_agent_usage(rt, b, &u) == 0 && u.attempts == 1);
    u.struct_size = 1;
    CHECK(agentos_agent_usage(rt, b, &u) == AGENTOS_STATUS_INVALID_ARGUMENT);

    /* Free: the handle goes stale, the name is free again. */
    CHECK(agentos_agent_free(rt, b) == 0);
    CHECK(agentos_agent_free(rt, b) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_state(rt, b, &state) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_send(rt, b, "x", NULL) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_history_json(rt, b, &hist) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_agent_cancel(rt, b) == AGENTOS_STATUS_STALE_HANDLE);
    agentos_agent_id b2 = 0;
    CHECK(agentos_agent_new(rt, "{\"name\":\"b\",\"endpoint\":\"dead\"}", &b2, NULL) == 0 && b2 != b);
    CHECK(agentos_agent_cancel(rt, b2) == 0); /* idle: nothing to cancel */

    /* Work still queued at free time is cleaned up (ASan/valgrind check for leaks). */
    CHECK(agentos_agent_send(rt, a, "queued 1", NULL) == 0);
    CHECK(agentos_agent_send(rt, a, "queued 2", NULL) == 0);
    agentos_runtime_free(rt);
    printf("test_agent: %d checks passed\n", checks);
    return 0;
}
