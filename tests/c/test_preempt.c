/*
 * test_preempt.c - token-aware preemption seen from C, through the event stream, against a
 * scripted HTTP server of its own on 127.0.0.1. An endpoint that takes one call at a time;
 * a background agent ("low", priority 1) runs a tool loop; an urgent agent ("high", priority
 * 9) arrives while low's first call holds the endpoint. high's call cannot be admitted, so it
 * claims room: low, its tool done, pauses at that safe point (PAUSED, a PREEMPTED event with no
 * snapshot) instead of calling the model again, and resumes (RESUMED) once high's turn has
 * ended. Nothing is lost: low's turn ends with its answer and its whole history. Run under
 * ASan and valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"
#include "json_server.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* ---- the server ------------------------------------------------------------------------ */

/* Answers each request by what its body holds, and notes the order they came in:
   "urgent"        -> the text "urgent done", after DELAY_MS;
   a tool result   -> the text "low done";
   otherwise       -> a call of the tool "work", after DELAY_MS. */
#define DELAY_MS 500
static pthread_mutex_t order_lock = PTHREAD_MUTEX_INITIALIZER;
static char order[256]; /* one letter per request: u(rgent), t(ool result), f(irst) */
static atomic_int requests;

static void note(char what) {
    pthread_mutex_lock(&order_lock);
    size_t n = strlen(order);
    if (n + 1 < sizeof order) order[n] = what;
    pthread_mutex_unlock(&order_lock);
    atomic_fetch_add(&requests, 1);
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void answer(const char *body, char *json, size_t cap) {
    const char *usage = "\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}";
    const char *text = NULL;
    if (strstr(body, "urgent")) {
        note('u');
        sleep_ms(DELAY_MS);
        text = "urgent done";
    } else if (strstr(body, "\"role\":\"tool\"")) {
        note('t');
        text = "low done";
    } else {
        note('f');
        sleep_ms(DELAY_MS);
    }
    if (text)
        snprintf(json, cap,
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%s\"},"
                 "\"finish_reason\":\"stop\"}],%s}", text, usage);
    else
        snprintf(json, cap,
                 "{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,"
                 "\"tool_calls\":[{\"id\":\"w1\",\"type\":\"function\",\"function\":{\"name\":\"work\","
                 "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],%s}", usage);
}

/* ---- the tool --------------------------------------------------------------------------- */

static int32_t work_tool(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    CHECK(agentos_tool_call_complete(call, "{\"work\":\"done\"}", false) == AGENTOS_STATUS_OK);
    return AGENTOS_TOOL_DONE;
}

/* ---- the test --------------------------------------------------------------------------- */

/* One event as the test keeps it. */
struct seen {
    int kind;
    agentos_agent_id agent;
    int status;
    char text[64];
    int safe_point; /* the detail says "safe_point":true */
};

static int find(const struct seen *ev, int n, int kind, agentos_agent_id agent) {
    for (int i = 0; i < n; i++)
        if (ev[i].kind == kind && ev[i].agent == agent) return i;
    return -1;
}

int main(void) {
    int port = json_server_start(answer);

    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    CHECK(agentos_config_new(&cfg) == AGENTOS_STATUS_OK);
    CHECK(agentos_config_set_json(cfg, "{\"workers\":2,\"event_capacity\":1000}", NULL) == AGENTOS_STATUS_OK);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == AGENTOS_STATUS_OK);
    agentos_config_free(cfg);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"one\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"model\":\"m\",\"retry\":{\"max_retries\":0},\"limits\":{\"concurrency\":1}}", port);
    CHECK(agentos_runtime_add_endpoint(rt, ep, NULL) == AGENTOS_STATUS_OK);
    CHECK(agentos_runtime_add_tool(rt, "work", "does the work", "{\"type\":\"object\"}", 0, work_tool, NULL,
                                   NULL) == AGENTOS_STATUS_OK);
    agentos_agent_id low = 0, high = 0;
    CHECK(agentos_agent_new(rt,
                            "{\"name\":\"low\",\"endpoint\":\"one\",\"priority\":1,\"tools\":[\"work\"],"
                            "\"stream\":false}",
                            &low, NULL) == AGENTOS_STATUS_OK);
    CHECK(agentos_agent_new(rt, "{\"name\":\"high\",\"endpoint\":\"one\",\"priority\":9,\"stream\":false}", &high,
                            NULL) == AGENTOS_STATUS_OK);

    CHECK(agentos_agent_send(rt, low, "low task", NULL) == AGENTOS_STATUS_OK);
    /* high arrives while low's first call holds the endpoint's one slot. */
    for (int i = 0; i < 1000 && atomic_load(&requests) < 1; i++) sleep_ms(10);
    CHECK(atomic_load(&requests) == 1);
    CHECK(agentos_agent_send(rt, high, "urgent task", NULL) == AGENTOS_STATUS_OK);

    struct seen ev[128];
    int n = 0;
    int32_t paused_state = -1;
    for (;;) {
        agentos_event *e = NULL;
        CHECK(agentos_runtime_next_event(rt, 60000, &e) == AGENTOS_STATUS_OK);
        CHECK(n < 128);
        struct seen *s = &ev[n++];
        s->kind = agentos_event_kind(e);
        s->agent = agentos_event_agent(e);
        s->status = agentos_event_status(e);
        const char *text;
        size_t len;
        CHECK(agentos_event_text(e, &text, &len) == AGENTOS_STATUS_OK);
        snprintf(s->text, sizeof s->text, "%.*s", (int)len, text);
        char *json = NULL;
        CHECK(agentos_event_json(e, &json) == AGENTOS_STATUS_OK);
        s->safe_point = strstr(json, "\"safe_point\":true") != NULL;
        agentos_string_free(json);
        agentos_event_free(e);
        if (s->kind == AGENTOS_EVENT_PREEMPTED && s->agent == low) {
            /* Paused until high's turn ends: high's call takes DELAY_MS, so the state is
               still PAUSED when the event is read. */
            CHECK(agentos_agent_state(rt, low, &paused_state) == AGENTOS_STATUS_OK);
        }
        if (s->kind == AGENTOS_EVENT_TURN_END && s->agent == low) break;
    }

    if (getenv("TEST_PREEMPT_VERBOSE"))
        for (int i = 0; i < n; i++)
            fprintf(stderr, "%2d kind %2d %s sp=%d %s\n", i, ev[i].kind, ev[i].agent == low ? "low " : "high",
                    ev[i].safe_point, ev[i].text);
    int preempted = find(ev, n, AGENTOS_EVENT_PREEMPTED, low);
    int resumed = find(ev, n, AGENTOS_EVENT_RESUMED, low);
    int tool_result = find(ev, n, AGENTOS_EVENT_TOOL_RESULT, low);
    int high_end = find(ev, n, AGENTOS_EVENT_TURN_END, high);
    CHECK(preempted >= 0 && resumed >= 0 && tool_result >= 0 && high_end >= 0);
    /* Paused at the safe point after its tool, not mid-call: no snapshot to keep. */
    CHECK(ev[preempted].safe_point && ev[preempted].text[0] == 0);
    CHECK(ev[resumed].safe_point);
    CHECK(paused_state == AGENTOS_AGENT_PAUSED);
    CHECK(tool_result < preempted && preempted < high_end && high_end < resumed);
    CHECK(find(ev, n, AGENTOS_EVENT_PREEMPTED, high) < 0);
    CHECK(ev[high_end].status == AGENTOS_STATUS_OK && strcmp(ev[high_end].text, "urgent done") == 0);
    CHECK(ev[n - 1].status == AGENTOS_STATUS_OK && strcmp(ev[n - 1].text, "low done") == 0);
    /* The server saw low's first call, then high's, then low's second. */
    pthread_mutex_lock(&order_lock);
    CHECK(strcmp(order, "fut") == 0);
    pthread_mutex_unlock(&order_lock);
    /* Nothing lost: low's history holds its question, the tool call, its result and the answer. */
    char *hist = NULL;
    CHECK(agentos_agent_history_json(rt, low, &hist) == AGENTOS_STATUS_OK);
    int roles = 0;
    for (const char *p = strstr(hist, "\"role\""); p; p = strstr(p + 1, "\"role\"")) roles++;
    CHECK(roles == 4);
    CHECK(strstr(hist, "{\\\"work\\\":\\\"done\\\"}") != NULL);
    agentos_string_free(hist);
    int32_t st = -1;
    CHECK(agentos_agent_state(rt, low, &st) == AGENTOS_STATUS_OK && st == AGENTOS_AGENT_IDLE);

    agentos_runtime_free(rt);
    json_server_stop();
    printf("test_preempt: %d checks passed\n", checks);
    return 0;
}
