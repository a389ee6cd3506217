/*
 * chat.c - talk to a model directly, without agents: a plain answer, a streamed answer pulled
 * piece by piece, and a tool call. Uses the OpenAI-compatible server at $AGENTOS_MODEL_URL
 * (scripts/local-model.sh start prints one), or any server the environment points at:
 *   AGENTOS_MODEL_URL       base URL, e.g. http://127.0.0.1:8091/v1
 *   AGENTOS_MODEL_PROVIDER  "openai" (default) or "anthropic"
 *   AGENTOS_MODEL_NAME      model name (default "local")
 *   AGENTOS_API_KEY_ENV     name of the environment variable holding the API key (optional)
 */
// agentos-test: needs-model
#include <agentos.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what, agentos_status st, agentos_error *err) {
    fprintf(stderr, "%s: %s: %s\n", what, agentos_status_str(st), agentos_error_message(err));
    agentos_error_free(err);
    return 1;
}

static const char *env_or(const char *name, const char *fallback) {
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

/* Runs one request to completion and prints its JSON result. */
static int run_and_print(agentos_runtime *rt, const char *body, const char *label) {
    agentos_request *req = NULL;
    agentos_error *err = NULL;
    agentos_status st = agentos_request_new(rt, "model", body, &req, &err);
    if (st != AGENTOS_STATUS_OK) return fail("agentos_request_new", st, err);
    st = agentos_request_run(req, &err);
    if (st != AGENTOS_STATUS_OK) {
        agentos_request_free(req);
        return fail(label, st, err);
    }
    char *json = NULL;
    agentos_request_result_json(req, &json);
    printf("%s: %s\n", label, json);
    agentos_string_free(json);
    agentos_request_free(req);
    return 0;
}

int main(void) {
    if (agentos_version_number() != AGENTOS_VERSION_NUMBER) return 1;
    const char *url = getenv("AGENTOS_MODEL_URL");
    if (url == NULL || *url == '\0') {
        fprintf(stderr, "set AGENTOS_MODEL_URL (eval \"$(scripts/local-model.sh env)\")\n");
        return 2;
    }
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_error *err = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 1);
    agentos_status st = agentos_runtime_new(cfg, &rt, &err);
    agentos_config_free(cfg);
    if (st != AGENTOS_STATUS_OK) return fail("agentos_runtime_new", st, err);

    char endpoint[1024];
    const char *key_env = getenv("AGENTOS_API_KEY_ENV");
    snprintf(endpoint, sizeof endpoint,
             "{\"name\":\"model\",\"provider\":\"%s\",\"base_url\":\"%s\",\"model\":\"%s\","
             "\"max_output_tokens\":128,\"timeouts_ms\":{\"first_byte\":60000}%s%s%s}",
             env_or("AGENTOS_MODEL_PROVIDER", "openai"), url, env_or("AGENTOS_MODEL_NAME", "local"),
             key_env ? ",\"api_key_env\":\"" : "", key_env ? key_env : "", key_env ? "\"" : "");
    st = agentos_runtime_add_endpoint(rt, endpoint, &err);
    if (st != AGENTOS_STATUS_OK) {
        agentos_runtime_free(rt);
        return fail("agentos_runtime_add_endpoint", st, err);
    }

    int rc = 0;
    /* 1. A plain answer. */
    rc |= run_and_print(rt,
                        "{\"temperature\":0,\"max_tokens\":32,\"messages\":["
                        "{\"role\":\"user\",\"content\":\"What is the capital of France? One word.\"}]}",
                        "plain");

    /* 2. A streamed answer, pulled piece by piece. */
    agentos_request *req = NULL;
    st = agentos_request_new(rt, "model",
                             "{\"stream\":true,\"temperature\":0,\"max_tokens\":48,\"messages\":["
                             "{\"role\":\"user\",\"content\":\"Count from 1 to 5, separated by spaces.\"}]}",
                             &req, &err);
    if (st != AGENTOS_STATUS_OK) return fail("agentos_request_new", st, err);
    st = agentos_request_start(req, &err);
    if (st != AGENTOS_STATUS_OK) return fail("agentos_request_start", st, err);
    printf("streamed: ");
    int pieces = 0;
    for (;;) {
        int32_t kind;
        const char *data;
        size_t len;
        st = agentos_request_next_delta(req, 30000, &kind, &data, &len);
        if (st != AGENTOS_STATUS_OK) {
            fprintf(stderr, "next_delta: %s\n", agentos_status_str(st));
            rc = 1;
            break;
        }
        if (kind == AGENTOS_DELTA_END) break;
        if (kind == AGENTOS_DELTA_TEXT) {
            fwrite(data, 1, len, stdout);
            fflush(stdout);
            pieces++;
        }
    }
    printf("\n");
    st = agentos_request_wait(req, -1, &err);
    if (st != AGENTOS_STATUS_OK) rc |= fail("stream", st, err);
    agentos_usage usage = {.struct_size = sizeof usage};
    agentos_request_usage(req, &usage);
    printf("streamed %d pieces; usage: prompt %llu, completion %llu, attempts %u\n", pieces,
           (unsigned long long)usage.prompt_tokens, (unsigned long long)usage.completion_tokens,
           usage.attempts);
    if (pieces < 2 || usage.completion_tokens == 0) rc = 1;
    agentos_request_free(req);

    /* 3. A tool call. */
    rc |= run_and_print(
        rt,
        "{\"temperature\":0,\"max_tokens\":96,"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Get the current weather for a city\",\"parameters\":{\"type\":\"object\","
        "\"properties\":{\"city\":{\"type\":\"string\"}},\"required\":[\"city\"]}}}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"What is the weather in Paris?\"}]}",
        "tool_call");

    char *totals = NULL;
    agentos_runtime_usage_json(rt, &totals);
    printf("totals: %s\n", totals);
    agentos_string_free(totals);
    agentos_runtime_free(rt);
    return rc;
}
