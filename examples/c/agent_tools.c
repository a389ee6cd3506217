/*
 * agent_tools.c - one agent with two tools written in C, against a real model.
 *
 * The agent gets two questions, each needing one tool: `get_weather` answers at once, and
 * `get_local_time` completes later from another thread (AGENTOS_TOOL_PENDING), so a slow tool
 * never holds a worker. Events are pulled and printed until both turns end. A third question
 * goes through agentos_agent_run, which sends it and waits for the answer (the calling
 * thread runs the turn where it can).
 *
 * Model: $AGENTOS_MODEL_URL (an OpenAI-compatible server; scripts/local-model.sh starts one;
 * multi-step tool loops want the 1.5B model: AGENTOS_MODEL_SIZE=1.5b).
 */
// agentos-test: needs-model
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int weather_calls = 0;
static int time_calls = 0;

/* get_weather: completes synchronously. */
static int32_t get_weather(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    const char *args;
    size_t len;
    agentos_tool_call_arguments(call, &args, &len);
    __atomic_add_fetch(&weather_calls, 1, __ATOMIC_SEQ_CST);
    /* Small local models use JSON tool results far more reliably than prose. */
    const char *result = strstr(args, "Paris") ? "{\"city\": \"Paris\", \"temperature\": 21, \"sky\": \"sunny\"}"
                                               : "{\"temperature\": 15, \"sky\": \"cloudy\"}";
    agentos_tool_call_complete(call, result, false);
    return AGENTOS_TOOL_DONE;
}

/* get_local_time: completes later, from a thread of its own. */
static void *time_later(void *arg) {
    agentos_tool_call *call = arg;
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    const char *args;
    size_t len;
    agentos_tool_call_arguments(call, &args, &len);
    agentos_tool_call_complete(call, strstr(args, "Paris") ? "{\"city\": \"Paris\", \"local_time\": \"14:05\", \"timezone\": \"Europe/Paris\"}"
                                                   : "{\"local_time\": \"09:30\"}", false);
    return NULL;
}

static int32_t get_local_time(void *user_data, agentos_tool_call *call) {
    (void)user_data;
    __atomic_add_fetch(&time_calls, 1, __ATOMIC_SEQ_CST);
    pthread_t t;
    if (pthread_create(&t, NULL, time_later, call) != 0) {
        agentos_tool_call_complete(call, "could not start a thread", true);
        return AGENTOS_TOOL_DONE;
    }
    pthread_detach(t);
    return AGENTOS_TOOL_PENDING;
}

static int fail(const char *what, agentos_status st, agentos_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, agentos_status_str(st), agentos_error_message(err));
    agentos_error_free(err);
    return 1;
}

int main(void) {
    const char *url = getenv("AGENTOS_MODEL_URL");
    if (!url || !*url) {
        fprintf(stderr, "set AGENTOS_MODEL_URL\n");
        return 2;
    }
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_error *err = NULL;
    agentos_config_new(&cfg);
    agentos_status st = agentos_runtime_new(cfg, &rt, &err);
    agentos_config_free(cfg);
    if (st) return fail("runtime", st, err);

    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"local\",\"provider\":\"openai\",\"base_url\":\"%s\",\"model\":\"local\"}", url);
    if ((st = agentos_runtime_add_endpoint(rt, ep, &err))) return fail("endpoint", st, err);
    st = agentos_runtime_add_tool(
        rt, "get_weather", "Get the current weather for a city (temperature in Celsius).",
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}", 10000,
        get_weather, NULL, &err);
    if (st) return fail("add_tool get_weather", st, err);
    st = agentos_runtime_add_tool(
        rt, "get_local_time", "Get the current local time in a city.",
        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}", 10000,
        get_local_time, NULL, &err);
    if (st) return fail("add_tool get_local_time", st, err);

    agentos_agent_id agent = 0;
    st = agentos_agent_new(
        rt,
        "{\"name\":\"assistant\",\"endpoint\":\"local\",\"temperature\":0,\"max_tokens\":200,"
        "\"max_steps\":4,\"tools\":[\"get_weather\",\"get_local_time\"],\"tool_first\":true,"
        "\"system\":\"You are a helpful assistant. Call a tool only when you need data you do not have yet. "
        "When a tool response is present, answer the user; never repeat a tool call.\"}",
        &agent, &err);
    if (st) return fail("agent", st, err);

    /* Two questions, two turns: each needs one of the tools. Messages queue in order. */
    const char *questions[] = {"What is the weather in Paris?", "What is the local time in Paris?"};
    for (int i = 0; i < 2; i++) {
        st = agentos_agent_send(rt, agent, questions[i], &err);
        if (st) return fail("send", st, err);
    }
    int rc = 0, turns = 0;
    while (turns < 2) {
        agentos_event *ev = NULL;
        st = agentos_runtime_next_event(rt, 120000, &ev);
        if (st) {
            fprintf(stderr, "next_event: %s\n", agentos_status_str(st));
            rc = 1;
            break;
        }
        const char *text;
        size_t len;
        agentos_event_text(ev, &text, &len);
        switch (agentos_event_kind(ev)) {
        case AGENTOS_EVENT_TURN_START: printf("user: %.*s\n", (int)len, text); break;
        case AGENTOS_EVENT_TOOL_CALL: printf("  tool call: %.*s\n", (int)len, text); break;
        case AGENTOS_EVENT_TOOL_RESULT: printf("  tool result: %.*s\n", (int)len, text); break;
        case AGENTOS_EVENT_TURN_END:
            turns++;
            printf("assistant (%s): %.*s\n", agentos_status_str(agentos_event_status(ev)), (int)len, text);
            if (agentos_event_status(ev) != AGENTOS_STATUS_OK) rc = 1;
            break;
        default: break;
        }
        agentos_event_free(ev);
    }
    /* A third question, asked synchronously: the answer comes back from the call itself. */
    int tools_before = weather_calls + time_calls;
    char *answer = NULL;
    st = agentos_agent_run(rt, agent, "And what is the weather in Berlin?", 120000, &answer, &err);
    if (st) {
        agentos_runtime_free(rt);
        return fail("agent_run", st, err);
    }
    printf("user: And what is the weather in Berlin?\nassistant (agentos_agent_run): %s\n", answer);
    if (answer[0] == 0 || weather_calls + time_calls <= tools_before) rc = 1;
    agentos_string_free(answer);
    agentos_usage u = {.struct_size = sizeof u};
    agentos_agent_usage(rt, agent, &u);
    printf("tool calls: get_weather %d, get_local_time %d; tokens: prompt %llu, completion %llu\n",
           weather_calls, time_calls, (unsigned long long)u.prompt_tokens,
           (unsigned long long)u.completion_tokens);
    if (weather_calls < 1 || time_calls < 1) rc = 1; /* both tool loops must have run */
    agentos_runtime_free(rt);
    return rc;
}
