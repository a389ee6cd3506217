/*
 * hello.c - the smallest AgentOS program: check the version, build a config from JSON, start
 * and stop a runtime, and handle errors from a bad config.
 *
 * Build: cc -std=c11 hello.c $(pkg-config --cflags --libs agentos) -o hello
 */
#include <agentos.h>

#include <stdio.h>
#include <string.h>

/* Prints a failed call's status and message, then frees the error. */
static void report(const char *what, agentos_status st, agentos_error *err) {
    fprintf(stderr, "%s failed: %s: %s\n", what, agentos_status_str(st), agentos_error_message(err));
    agentos_error_free(err);
}

int main(void) {
    /* 1. The header we compiled against must match the library we linked. */
    if (agentos_version_number() != AGENTOS_VERSION_NUMBER) {
        fprintf(stderr, "header %s does not match library %s\n", AGENTOS_VERSION_STRING,
                agentos_version());
        return 1;
    }
    printf("AgentOS %s\n", agentos_version());

    /* 2. A config from JSON. */
    agentos_config *cfg = NULL;
    agentos_error *err = NULL;
    agentos_status st = agentos_config_new(&cfg);
    if (st != AGENTOS_STATUS_OK) {
        fprintf(stderr, "agentos_config_new: %s\n", agentos_status_str(st));
        return 1;
    }
    st = agentos_config_set_json(cfg, "{\"workers\": 2, \"thread_name\": \"hello\"}", &err);
    if (st != AGENTOS_STATUS_OK) {
        report("agentos_config_set_json", st, err);
        agentos_config_free(cfg);
        return 1;
    }

    /* 3. A bad config is rejected with a message naming the key, and changes nothing. */
    st = agentos_config_set_json(cfg, "{\"workers\": \"four\"}", &err);
    if (st != AGENTOS_STATUS_INVALID_JSON || strstr(agentos_error_message(err), "workers") == NULL) {
        fprintf(stderr, "expected INVALID_JSON naming \"workers\", got %s\n", agentos_status_str(st));
        agentos_error_free(err);
        agentos_config_free(cfg);
        return 1;
    }
    printf("bad config rejected as expected: %s: %s\n", agentos_status_str(st),
           agentos_error_message(err));
    agentos_error_free(err);
    err = NULL;

    /* 4. Start the runtime, look at it, stop it. */
    agentos_runtime *rt = NULL;
    st = agentos_runtime_new(cfg, &rt, &err);
    agentos_config_free(cfg); /* the runtime keeps its own copy */
    if (st != AGENTOS_STATUS_OK) {
        report("agentos_runtime_new", st, err);
        return 1;
    }
    uint32_t workers = 0;
    st = agentos_runtime_worker_count(rt, &workers);
    if (st != AGENTOS_STATUS_OK || workers != 2) {
        fprintf(stderr, "worker count: %s, %u\n", agentos_status_str(st), workers);
        agentos_runtime_free(rt);
        return 1;
    }
    printf("runtime started with %u workers\n", workers);
    agentos_runtime_free(rt);
    printf("runtime stopped\n");
    return 0;
}
