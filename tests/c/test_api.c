/*
 * test_api.c - drives every foundation symbol of the C API, including NULL and bad input.
 * Built against the installed tree and run under AddressSanitizer and valgrind by
 * scripts/test-c.sh. Exits non-zero on the first failed check.
 */
#include <agentos.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int checks = 0;

#define CHECK(cond)                                                                       \
    do {                                                                                  \
        checks++;                                                                         \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);      \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

#define CHECK_STATUS(expr, expected)                                                      \
    do {                                                                                  \
        agentos_status st_ = (expr);                                                      \
        checks++;                                                                         \
        if (st_ != (expected)) {                                                          \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__,  \
                    #expr, agentos_status_str(st_), agentos_status_str(expected));        \
            exit(1);                                                                      \
        }                                                                                 \
    } while (0)

static void test_version(void) {
    CHECK(agentos_version_number() == AGENTOS_VERSION_NUMBER);
    CHECK(strcmp(agentos_version(), AGENTOS_VERSION_STRING) == 0);
    CHECK(AGENTOS_VERSION_NUMBER ==
          AGENTOS_VERSION_MAJOR * 1000000 + AGENTOS_VERSION_MINOR * 1000 + AGENTOS_VERSION_PATCH);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", AGENTOS_VERSION_MAJOR, AGENTOS_VERSION_MINOR,
             AGENTOS_VERSION_PATCH);
    CHECK(strcmp(buf, agentos_version()) == 0);
}

static void test_status_names(void) {
    CHECK(strcmp(agentos_status_str(AGENTOS_STATUS_OK), "AGENTOS_STATUS_OK") == 0);
    CHECK(strcmp(agentos_status_str(AGENTOS_STATUS_STALE_HANDLE), "AGENTOS_STATUS_STALE_HANDLE") == 0);
    CHECK(strcmp(agentos_status_str(AGENTOS_STATUS_INTERNAL), "AGENTOS_STATUS_INTERNAL") == 0);
    CHECK(strcmp(agentos_status_str(-1), "AGENTOS_STATUS_UNKNOWN") == 0);
    CHECK(strcmp(agentos_status_str(9999), "AGENTOS_STATUS_UNKNOWN") == 0);
    /* Every known code has a distinct name. */
    for (int i = 0; i <= AGENTOS_STATUS_PEER_GONE; i++) {
        CHECK(strcmp(agentos_status_str(i), "AGENTOS_STATUS_UNKNOWN") != 0);
        for (int j = 0; j < i; j++) CHECK(strcmp(agentos_status_str(i), agentos_status_str(j)) != 0);
    }
}

static void test_null_arguments(void) {
    agentos_error *err = NULL;
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;

    CHECK_STATUS(agentos_config_new(NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_config_set_json(NULL, "{}", &err), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(err != NULL && agentos_error_status(err) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(strstr(agentos_error_message(err), "cfg") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK_STATUS(agentos_config_set_workers(NULL, 1), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_config_set_thread_name(NULL, "x", NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_runtime_new(NULL, &rt, NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(rt == NULL);

    CHECK_STATUS(agentos_config_new(&cfg), AGENTOS_STATUS_OK);
    CHECK_STATUS(agentos_config_set_json(cfg, NULL, NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_config_set_thread_name(cfg, NULL, NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_runtime_new(cfg, NULL, &err), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(strstr(agentos_error_message(err), "out") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK_STATUS(agentos_runtime_worker_count(NULL, NULL), AGENTOS_STATUS_NULL_ARGUMENT);

    /* Readers of a NULL error are safe. */
    CHECK(agentos_error_status(NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_error_message(NULL) != NULL && agentos_error_message(NULL)[0] == '\0');

    /* Every _free accepts NULL. */
    agentos_error_free(NULL);
    agentos_string_free(NULL);
    agentos_config_free(NULL);
    agentos_runtime_free(NULL);
    agentos_config_free(cfg);
}

static void expect_rejected(agentos_config *cfg, const char *json, agentos_status expected,
                            const char *must_mention) {
    agentos_error *err = NULL;
    CHECK_STATUS(agentos_config_set_json(cfg, json, &err), expected);
    CHECK(err != NULL);
    CHECK(agentos_error_status(err) == expected);
    if (must_mention != NULL && strstr(agentos_error_message(err), must_mention) == NULL) {
        fprintf(stderr, "message \"%s\" does not mention \"%s\"\n", agentos_error_message(err),
                must_mention);
        exit(1);
    }
    agentos_error_free(err);
}

static void test_bad_config(void) {
    agentos_config *cfg = NULL;
    CHECK_STATUS(agentos_config_new(&cfg), AGENTOS_STATUS_OK);
    expect_rejected(cfg, "{\"workers\": 1, \"bogus\": true}", AGENTOS_STATUS_INVALID_JSON, "bogus");
    expect_rejected(cfg, "{\"workers\": \"2\"}", AGENTOS_STATUS_INVALID_JSON, "workers");
    expect_rejected(cfg, "{\"workers\": -3}", AGENTOS_STATUS_INVALID_JSON, "workers");
    expect_rejected(cfg, "{\"workers\": 100000}", AGENTOS_STATUS_INVALID_ARGUMENT, "workers");
    expect_rejected(cfg, "{\"thread_name\": 12}", AGENTOS_STATUS_INVALID_JSON, "thread_name");
    expect_rejected(cfg, "{\"workers\": ", AGENTOS_STATUS_INVALID_JSON, NULL);
    expect_rejected(cfg, "[1, 2]", AGENTOS_STATUS_INVALID_JSON, "object");
    expect_rejected(cfg, "", AGENTOS_STATUS_INVALID_JSON, NULL);
    /* Invalid UTF-8. */
    expect_rejected(cfg, "{\"thread_name\": \"\xff\xfe\"}", AGENTOS_STATUS_INVALID_UTF8, "json");
    agentos_error *err = NULL;
    CHECK_STATUS(agentos_config_set_thread_name(cfg, "\xc3\x28", &err), AGENTOS_STATUS_INVALID_UTF8);
    agentos_error_free(err);
    err = NULL;
    CHECK_STATUS(agentos_config_set_thread_name(cfg, "", NULL), AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK_STATUS(agentos_config_set_workers(cfg, 5000), AGENTOS_STATUS_INVALID_ARGUMENT);

    /* Rejected documents changed nothing: the runtime starts with the default worker count. */
    CHECK_STATUS(agentos_config_set_workers(cfg, 3), AGENTOS_STATUS_OK);
    expect_rejected(cfg, "{\"workers\": 1, \"nope\": 0}", AGENTOS_STATUS_INVALID_JSON, "nope");
    agentos_runtime *rt = NULL;
    CHECK_STATUS(agentos_runtime_new(cfg, &rt, &err), AGENTOS_STATUS_OK);
    CHECK(err == NULL);
    uint32_t n = 0;
    CHECK_STATUS(agentos_runtime_worker_count(rt, NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK_STATUS(agentos_runtime_worker_count(rt, &n), AGENTOS_STATUS_OK);
    CHECK(n == 3);
    agentos_runtime_free(rt);
    agentos_config_free(cfg);
}

static void test_out_params_untouched_on_failure(void) {
    agentos_config *cfg = NULL;
    CHECK_STATUS(agentos_config_new(&cfg), AGENTOS_STATUS_OK);
    agentos_runtime *sentinel = (agentos_runtime *)(void *)&checks;
    agentos_runtime *rt = sentinel;
    CHECK_STATUS(agentos_runtime_new(NULL, &rt, NULL), AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(rt == sentinel);
    agentos_config_free(cfg);
}

static void test_many_runtimes(void) {
    /* Start and stop repeatedly, several alive at once, default worker count included. */
    for (int round = 0; round < 5; round++) {
        agentos_runtime *rts[4] = {0};
        for (int i = 0; i < 4; i++) {
            agentos_config *cfg = NULL;
            CHECK_STATUS(agentos_config_new(&cfg), AGENTOS_STATUS_OK);
            if (i > 0) CHECK_STATUS(agentos_config_set_workers(cfg, (uint32_t)i), AGENTOS_STATUS_OK);
            CHECK_STATUS(agentos_runtime_new(cfg, &rts[i], NULL), AGENTOS_STATUS_OK);
            agentos_config_free(cfg);
        }
        for (int i = 0; i < 4; i++) {
            uint32_t n = 0;
            CHECK_STATUS(agentos_runtime_worker_count(rts[i], &n), AGENTOS_STATUS_OK);
            CHECK(n >= 1);
            if (i > 0) CHECK(n == (uint32_t)i);
            agentos_runtime_free(rts[i]);
        }
    }
}

int main(void) {
    test_version();
    test_status_names();
    test_null_arguments();
    test_bad_config();
    test_out_params_untouched_on_failure();
    test_many_runtimes();
    printf("test_api: %d checks passed\n", checks);
    return 0;
}
