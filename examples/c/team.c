/*
 * team.c - a team of four agents with different priorities, running concurrently and
 * exchanging messages, against a real model:
 *
 *   planner  (priority 5)  splits the task;
 *   worker_a (priority 3)  and worker_b (priority 1) each do one part, at the same time;
 *   reviewer (priority 8)  checks the result.
 *
 * The host routes work with agentos_agent_send_as: a message "from the planner" to a worker is
 * answered by the worker, and the answer lands in the planner's inbox as a new message, as if
 * the planner had called the built-in send_message tool. Everything is observed through the
 * event stream, and the run ends when every agent is idle.
 *
 * Model: $AGENTOS_MODEL_URL (an OpenAI-compatible server; scripts/local-model.sh starts one).
 */
// agentos-test: needs-model
#include <agentos.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TEXT 2048

/* The latest answer of each worker, captured from their TURN_END events. */
static agentos_agent_id worker_ids[2];
static char worker_answers[2][MAX_TEXT];

static int fail(const char *what, agentos_status st, agentos_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, agentos_status_str(st), agentos_error_message(err));
    agentos_error_free(err);
    return 1;
}

static agentos_agent_id spawn(agentos_runtime *rt, const char *name, int priority, const char *system) {
    char cfg[1024];
    snprintf(cfg, sizeof cfg,
             "{\"name\":\"%s\",\"endpoint\":\"local\",\"priority\":%d,\"temperature\":0,"
             "\"max_tokens\":80,\"system\":\"%s\"}",
             name, priority, system);
    agentos_agent_id id = 0;
    agentos_error *err = NULL;
    agentos_status st = agentos_agent_new(rt, cfg, &id, &err);
    if (st) {
        fail(name, st, err);
        exit(1);
    }
    return id;
}

/* Pulls events until `want` turns of `who` have ended; prints the transcript as it goes.
 * Copies the last answer of `who` into `answer`. Returns the number of failed turns seen. */
static int wait_turns(agentos_runtime *rt, agentos_agent_id who, int want, char *answer) {
    int ended = 0, failures = 0;
    while (ended < want) {
        agentos_event *ev = NULL;
        agentos_status st = agentos_runtime_next_event(rt, 180000, &ev);
        if (st) {
            fprintf(stderr, "next_event: %s\n", agentos_status_str(st));
            return failures + 1;
        }
        const char *text;
        size_t len;
        agentos_event_text(ev, &text, &len);
        const char *name = agentos_event_agent_name(ev);
        switch (agentos_event_kind(ev)) {
        case AGENTOS_EVENT_MESSAGE: printf("[message] %s -> %.*s\n", name, (int)len, text); break;
        case AGENTOS_EVENT_TURN_START: printf("[%s] starts: %.60s...\n", name, text); break;
        case AGENTOS_EVENT_PREEMPTED:
            /* Paused before its next model call while a more urgent agent needs room (no
               output to keep), or its stream cancelled after `len` bytes, kept to continue. */
            if (len == 0)
                printf("[%s] preempted (no output to keep)\n", name);
            else
                printf("[%s] preempted after %zu bytes\n", name, len);
            break;
        case AGENTOS_EVENT_RESUMED: printf("[%s] resumed\n", name); break;
        case AGENTOS_EVENT_TURN_END:
            printf("[%s] ends (%s): %.*s\n", name, agentos_status_str(agentos_event_status(ev)), (int)len,
                   text);
            if (agentos_event_status(ev) != AGENTOS_STATUS_OK) failures++;
            for (int w = 0; w < 2; w++)
                if (agentos_event_agent(ev) == worker_ids[w])
                    snprintf(worker_answers[w], MAX_TEXT, "%.*s", (int)len, text);
            if (agentos_event_agent(ev) == who) {
                ended++;
                if (answer) snprintf(answer, MAX_TEXT, "%.*s", (int)len, text);
            }
            break;
        default: break;
        }
        agentos_event_free(ev);
    }
    return failures;
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
             "{\"name\":\"local\",\"provider\":\"openai\",\"base_url\":\"%s\",\"model\":\"local\","
             "\"limits\":{\"concurrency\":4}}", url);
    if ((st = agentos_runtime_add_endpoint(rt, ep, &err))) return fail("endpoint", st, err);

    agentos_agent_id planner = spawn(rt, "planner", 5, "You plan work. Answer in at most two short lines.");
    agentos_agent_id worker_a = spawn(rt, "worker_a", 3, "You write one short factual sentence.");
    agentos_agent_id worker_b = spawn(rt, "worker_b", 1, "You write one short factual sentence.");
    agentos_agent_id reviewer = spawn(rt, "reviewer", 8, "You review text. Reply APPROVED or give one fix.");

    int failures = 0;
    char plan[MAX_TEXT], review[MAX_TEXT];
    worker_ids[0] = worker_a;
    worker_ids[1] = worker_b;
    /* 1. The planner splits the task. */
    if ((st = agentos_agent_send(rt, planner, "Task: two facts about Mars for a children's book. "
                                              "Name the two facts to write, one per line.", &err)))
        return fail("send", st, err);
    failures += wait_turns(rt, planner, 1, plan);

    /* 2. The two workers run at the same time; their answers go back to the planner. */
    if ((st = agentos_agent_send_as(rt, planner, worker_a, "Write one sentence about the color of Mars.", &err)))
        return fail("send_as worker_a", st, err);
    if ((st = agentos_agent_send_as(rt, planner, worker_b, "Write one sentence about the size of Mars.", &err)))
        return fail("send_as worker_b", st, err);
    failures += wait_turns(rt, planner, 2, NULL); /* the planner takes in both answers */

    /* 3. The reviewer checks the workers' sentences; its verdict goes back to the planner. */
    char msg[2 * MAX_TEXT + 64];
    snprintf(msg, sizeof msg, "Review these two sentences for a children's book: 1) %s 2) %s",
             worker_answers[0], worker_answers[1]);
    if ((st = agentos_agent_send_as(rt, planner, reviewer, msg, &err))) return fail("send_as reviewer", st, err);
    failures += wait_turns(rt, reviewer, 1, review);
    if (agentos_runtime_wait_idle(rt, 180000) != AGENTOS_STATUS_OK) failures++;

    /* Every agent did its part. */
    agentos_agent_id team[] = {planner, worker_a, worker_b, reviewer};
    const char *names[] = {"planner", "worker_a", "worker_b", "reviewer"};
    for (int i = 0; i < 4; i++) {
        agentos_usage u = {.struct_size = sizeof u};
        agentos_agent_usage(rt, team[i], &u);
        int32_t state = -1;
        agentos_agent_state(rt, team[i], &state);
        printf("%-9s turns %u, tokens %llu+%llu, state %d\n", names[i], u.attempts,
               (unsigned long long)u.prompt_tokens, (unsigned long long)u.completion_tokens, state);
        if (u.attempts == 0 || state != AGENTOS_AGENT_IDLE) failures++;
    }
    char *totals = NULL;
    agentos_runtime_usage_json(rt, &totals);
    printf("totals: %s\n", totals);
    agentos_string_free(totals);
    agentos_runtime_free(rt);
    printf("%s\n", failures ? "team run FAILED" : "team run OK");
    return failures ? 1 : 0;
}
