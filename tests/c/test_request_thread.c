/*
 * test_request_thread.c - agentos_request_run drives its transfer on the calling thread; this
 * checks, against a stalling HTTP server of its own on 127.0.0.1, that another thread can
 * cancel such a call (the partial output is kept) and that freeing the runtime from another
 * thread ends it with SHUTDOWN. Run under ASan and valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

/* The server: answers every request with SSE headers and one piece of text, then stalls until
   the client goes away. */
static int listen_fd = -1;

static void *serve(void *arg) {
    (void)arg;
    for (;;) {
        int c = accept(listen_fd, NULL, NULL);
        if (c < 0) return NULL; /* the listener was shut down */
        char buf[65536];
        ssize_t n = recv(c, buf, sizeof buf, 0);
        if (n > 0) {
            static const char reply[] =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
                "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"partial answer\"}}]}\n\n";
            if (send(c, reply, sizeof reply - 1, MSG_NOSIGNAL) < 0) {
                close(c);
                continue;
            }
            while (recv(c, buf, sizeof buf, 0) > 0) {
            } /* stall until the client closes */
        }
        close(c);
    }
}

static int start_server(pthread_t *t) {
    int port = 0;
    listen_fd = listen_loopback(&port);
    CHECK(pthread_create(t, NULL, serve, NULL) == 0);
    return port;
}

static atomic_int got_piece;

/* The delta callback: runs on the thread inside agentos_request_run. */
static void on_delta(void *user, int32_t kind, const char *data, size_t len) {
    (void)user;
    if (kind == AGENTOS_DELTA_TEXT && len > 0 && data[0] == 'p') atomic_store(&got_piece, 1);
}

static void wait_for_piece(void) {
    for (int i = 0; i < 20000 && !atomic_load(&got_piece); i++) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK(atomic_load(&got_piece));
}

static void *cancel_after_piece(void *req) {
    wait_for_piece();
    CHECK(agentos_request_cancel(req) == AGENTOS_STATUS_OK);
    return NULL;
}

static void *free_runtime_after_piece(void *rt) {
    wait_for_piece();
    agentos_runtime_free(rt);
    return NULL;
}

static agentos_runtime *new_runtime(int port) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    CHECK(agentos_config_new(&cfg) == AGENTOS_STATUS_OK);
    CHECK(agentos_config_set_workers(cfg, 1) == AGENTOS_STATUS_OK);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == AGENTOS_STATUS_OK);
    agentos_config_free(cfg);
    char ep[256];
    snprintf(ep, sizeof ep,
             "{\"name\":\"stall\",\"provider\":\"openai\",\"base_url\":\"http://127.0.0.1:%d/v1\","
             "\"timeouts_ms\":{\"idle\":0,\"total\":0}}",
             port);
    CHECK(agentos_runtime_add_endpoint(rt, ep, NULL) == AGENTOS_STATUS_OK);
    return rt;
}

static agentos_request *new_request(agentos_runtime *rt) {
    agentos_request *req = NULL;
    CHECK(agentos_request_new(rt, "stall",
                              "{\"messages\":[{\"role\":\"user\",\"content\":\"go\"}],\"stream\":true}",
                              &req, NULL) == AGENTOS_STATUS_OK);
    CHECK(agentos_request_set_delta_callback(req, on_delta, NULL) == AGENTOS_STATUS_OK);
    atomic_store(&got_piece, 0);
    return req;
}

int main(void) {
    pthread_t server;
    int port = start_server(&server);

    /* Cancelled from another thread while the calling thread runs the transfer. */
    agentos_runtime *rt = new_runtime(port);
    agentos_request *req = new_request(rt);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, cancel_after_piece, req) == 0);
    agentos_error *err = NULL;
    CHECK(agentos_request_run(req, &err) == AGENTOS_STATUS_CANCELLED);
    CHECK(strstr(agentos_error_message(err), "\"stall\"") != NULL);
    agentos_error_free(err);
    err = NULL;
    CHECK(pthread_join(t, NULL) == 0);
    char *text = NULL;
    CHECK(agentos_request_text(req, &text) == AGENTOS_STATUS_OK);
    CHECK(strcmp(text, "partial answer") == 0); /* what streamed before the cancel is kept */
    agentos_string_free(text);
    agentos_request_free(req);
    char *json = NULL;
    CHECK(agentos_runtime_usage_json(rt, &json) == AGENTOS_STATUS_OK);
    CHECK(strstr(json, "\"caller_thread_calls\":1") != NULL); /* it ran on this thread */
    CHECK(strstr(json, "\"failed\":1") != NULL);
    agentos_string_free(json);

    /* The runtime freed from another thread ends the call with SHUTDOWN. */
    req = new_request(rt);
    CHECK(pthread_create(&t, NULL, free_runtime_after_piece, rt) == 0);
    CHECK(agentos_request_run(req, &err) == AGENTOS_STATUS_SHUTDOWN);
    agentos_error_free(err);
    CHECK(pthread_join(t, NULL) == 0);
    CHECK(agentos_request_text(req, &text) == AGENTOS_STATUS_OK);
    CHECK(strcmp(text, "partial answer") == 0);
    agentos_string_free(text);
    agentos_request_free(req);

    shutdown(listen_fd, SHUT_RDWR);
    close(listen_fd);
    CHECK(pthread_join(server, NULL) == 0);
    printf("test_request_thread: %d checks passed\n", checks);
    return 0;
}
