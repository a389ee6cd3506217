/*
 * test_request.c - the model-call C API with NULLs, bad input, a refused connection, cancel,
 * and a request outliving its runtime. Needs no model server. Run under ASan and valgrind by
 * scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


static void expect_status(agentos_status got, agentos_status want, agentos_error *err, const char *mention) {
    checks++;
    if (got != want) {
        fprintf(stderr, "got %s (%s), expected %s\n", agentos_status_str(got),
                agentos_error_message(err), agentos_status_str(want));
        exit(1);
    }
    if (mention && (!err || !strstr(agentos_error_message(err), mention))) {
        fprintf(stderr, "message \"%s\" does not mention \"%s\"\n", agentos_error_message(err), mention);
        exit(1);
    }
    agentos_error_free(err);
}

/* Evaluates CALL (which may set `err`) before looking at `err`. */
#define EXPECT(CALL, WANT, MENTION)                 \
    do {                                            \
        agentos_status st_ = (CALL);                \
        expect_status(st_, (WANT), err, (MENTION));      \
        err = NULL;                                 \
    } while (0)

static const char *HI = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";

int main(void) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_error *err = NULL;
    CHECK(agentos_config_new(&cfg) == AGENTOS_STATUS_OK);
    CHECK(agentos_config_set_workers(cfg, 1) == AGENTOS_STATUS_OK);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == AGENTOS_STATUS_OK);
    agentos_config_free(cfg);

    /* Endpoints: NULLs, bad JSON, unknown keys, duplicates. */
    CHECK(agentos_runtime_add_endpoint(NULL, "{}", NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    EXPECT(agentos_runtime_add_endpoint(rt, NULL, &err), AGENTOS_STATUS_NULL_ARGUMENT, "endpoint_json");
    EXPECT(agentos_runtime_add_endpoint(rt, "{\"name\":", &err), AGENTOS_STATUS_INVALID_JSON, NULL);
    EXPECT(agentos_runtime_add_endpoint(rt, "{\"name\":\"x\",\"provider\":\"openai\",\"base_url\":\"http://h\",\"limits\":{\"rpx\":1}}", &err),
           AGENTOS_STATUS_INVALID_JSON, "limits.rpx");
    err = NULL;
    EXPECT(agentos_runtime_add_endpoint(rt, "{\"name\":\"x\",\"provider\":\"openai\",\"base_url\":\"http://h\",\"api_key_env\":\"AGENTOS_UNSET_VAR_FOR_TEST\"}", &err),
           AGENTOS_STATUS_NOT_FOUND, "AGENTOS_UNSET_VAR_FOR_TEST");
    err = NULL;
    EXPECT(agentos_runtime_add_endpoint(rt, "{\"name\":\"\xff\"}", &err), AGENTOS_STATUS_INVALID_UTF8, NULL);
    char ep[512];
    snprintf(ep, sizeof ep,
             "{\"name\":\"dead\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"retry\":{\"max_retries\":1,\"base_delay_ms\":1}}", dead_port());
    EXPECT(agentos_runtime_add_endpoint(rt, ep, &err), AGENTOS_STATUS_OK, NULL);
    EXPECT(agentos_runtime_add_endpoint(rt, ep, &err), AGENTOS_STATUS_INVALID_ARGUMENT, "already exists");

    /* Requests: NULLs, bad JSON, unknown endpoint. */
    agentos_request *req = NULL;
    EXPECT(agentos_request_new(rt, "dead", HI, NULL, &err), AGENTOS_STATUS_NULL_ARGUMENT, "out");
    EXPECT(agentos_request_new(rt, NULL, HI, &req, &err), AGENTOS_STATUS_NULL_ARGUMENT, "endpoint");
    EXPECT(agentos_request_new(rt, "nope", HI, &req, &err), AGENTOS_STATUS_NOT_FOUND, "nope");
    EXPECT(agentos_request_new(rt, "dead", "{\"messages\":[]}", &req, &err), AGENTOS_STATUS_INVALID_JSON, "messages");
    EXPECT(agentos_request_new(rt, "dead", "{\"messages\":[{\"role\":\"user\",\"content\":1}]}", &req, &err),
           AGENTOS_STATUS_INVALID_JSON, "messages[0].content");
    err = NULL;
    CHECK(req == NULL);

    /* Not started yet. */
    CHECK(agentos_request_new(rt, "dead", HI, &req, NULL) == AGENTOS_STATUS_OK);
    EXPECT(agentos_request_wait(req, 0, &err), AGENTOS_STATUS_INVALID_ARGUMENT, "not been started");
    int32_t kind = -1;
    const char *data = NULL;
    size_t len = 0;
    CHECK(agentos_request_next_delta(req, 0, &kind, &data, &len) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(kind == -1 && data == NULL);
    CHECK(agentos_request_next_delta(req, 0, NULL, &data, &len) == AGENTOS_STATUS_NULL_ARGUMENT);
    char *json = NULL;
    CHECK(agentos_request_result_json(req, &json) == AGENTOS_STATUS_OK);
    CHECK(strstr(json, "\"state\":\"created\"") != NULL);
    agentos_string_free(json);
    CHECK(agentos_request_set_priority(req, 5) == AGENTOS_STATUS_OK);
    CHECK(agentos_request_set_delta_callback(req, NULL, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_request_cancel(req) == AGENTOS_STATUS_OK); /* not started: nothing to do */

    /* A refused connection: retried once, then reported with the endpoint's name. */
    EXPECT(agentos_request_run(req, &err), AGENTOS_STATUS_HTTP, "\"dead\"");
    err = NULL;
    CHECK(agentos_request_start(req, NULL) == AGENTOS_STATUS_BUSY);
    CHECK(agentos_request_set_priority(req, 1) == AGENTOS_STATUS_BUSY);
    agentos_usage u;
    memset(&u, 0xab, sizeof u);
    u.struct_size = sizeof u;
    CHECK(agentos_request_usage(req, &u) == AGENTOS_STATUS_OK);
    CHECK(u.attempts == 2 && u.retries == 1 && u.prompt_tokens == 0);
    u.struct_size = 3;
    CHECK(agentos_request_usage(req, &u) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_request_next_delta(req, 1000, &kind, &data, &len) == AGENTOS_STATUS_OK);
    CHECK(kind == AGENTOS_DELTA_END && len == 0 && data[0] == '\0');
    CHECK(agentos_request_result_json(req, &json) == AGENTOS_STATUS_OK);
    CHECK(strstr(json, "AGENTOS_STATUS_HTTP") != NULL && strstr(json, "\"state\":\"done\"") != NULL);
    agentos_string_free(json);
    char *text = NULL;
    CHECK(agentos_request_text(req, &text) == AGENTOS_STATUS_OK && text[0] == '\0');
    agentos_string_free(text);
    agentos_request_free(req);
    req = NULL;

    /* Usage totals count the failure. */
    CHECK(agentos_runtime_usage_json(rt, &json) == AGENTOS_STATUS_OK);
    CHECK(strstr(json, "\"failed\":1") != NULL);
    agentos_string_free(json);
    CHECK(agentos_runtime_usage_json(rt, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);

    /* A request that outlives its runtime: still safe to wait on and free. */
    CHECK(agentos_request_new(rt, "dead", HI, &req, NULL) == AGENTOS_STATUS_OK);
    agentos_runtime_free(rt);
    EXPECT(agentos_request_start(req, &err), AGENTOS_STATUS_SHUTDOWN, NULL);
    /* The failed start finished the call: waiting returns at once. */
    EXPECT(agentos_request_wait(req, -1, &err), AGENTOS_STATUS_SHUTDOWN, NULL);
    agentos_request_free(req);
    agentos_request_free(NULL);

    printf("test_request: %d checks passed\n", checks);
    return 0;
}
