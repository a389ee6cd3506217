/* json_server.h - a scripted HTTP/1.1 server on 127.0.0.1 for the C tests: keep-alive
 * connections, a thread each; every request's body goes to the test's `answer` function,
 * which writes the JSON of a 200 reply (and may sleep first, to play a slow model). One server
 * per test program. Needs check.h (CHECK, listen_loopback) and -lpthread. */
#ifndef AGENTOS_TEST_JSON_SERVER_H
#define AGENTOS_TEST_JSON_SERVER_H

#include "check.h"

#include <pthread.h>
#include <stdatomic.h>

/* Writes the reply to the request `body` (NUL-terminated) into `json` (`cap` bytes). */
typedef void (*json_server_answer)(const char *body, char *json, size_t cap);

#define JSON_SERVER_MAX_CONNS 64
static int json_server_fd = -1;
static pthread_t json_server_thread;
static json_server_answer json_server_fn;
static int json_server_conn_fds[JSON_SERVER_MAX_CONNS];
static pthread_t json_server_conn_threads[JSON_SERVER_MAX_CONNS];
static atomic_int json_server_conns;

static void json_server_reply(int c, const char *json) {
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     strlen(json));
    if (send(c, head, (size_t)n, MSG_NOSIGNAL) < 0) return;
    (void)send(c, json, strlen(json), MSG_NOSIGNAL);
}

/* Serves one connection: each request (headers, then Content-Length bytes of body) in turn. */
static void *json_server_conn(void *arg) {
    int c = *(int *)arg;
    char buf[1 << 16];
    buf[0] = 0;
    size_t have = 0;
    for (;;) {
        char *end = NULL;
        while (!(end = strstr(buf, "\r\n\r\n"))) {
            if (have >= sizeof buf - 1) return NULL;
            ssize_t r = recv(c, buf + have, sizeof buf - 1 - have, 0);
            if (r <= 0) return NULL;
            have += (size_t)r;
            buf[have] = 0;
        }
        const char *cl = strstr(buf, "Content-Length:");
        if (!cl) cl = strstr(buf, "content-length:");
        size_t body_len = cl ? strtoul(cl + 15, NULL, 10) : 0;
        size_t head_len = (size_t)(end + 4 - buf);
        while (have < head_len + body_len) {
            if (have >= sizeof buf - 1) return NULL;
            ssize_t r = recv(c, buf + have, sizeof buf - 1 - have, 0);
            if (r <= 0) return NULL;
            have += (size_t)r;
            buf[have] = 0;
        }
        char saved = buf[head_len + body_len];
        buf[head_len + body_len] = 0;
        char json[1024];
        json_server_fn(buf + head_len, json, sizeof json);
        buf[head_len + body_len] = saved;
        json_server_reply(c, json);
        /* Keep whatever of the next request has arrived already. */
        size_t used = head_len + body_len;
        memmove(buf, buf + used, have - used);
        have -= used;
        buf[have] = 0;
    }
}

static void *json_server_accept(void *arg) {
    (void)arg;
    for (;;) {
        int c = accept(json_server_fd, NULL, NULL);
        if (c < 0) return NULL; /* the listener was shut down */
        int i = atomic_fetch_add(&json_server_conns, 1);
        CHECK(i < JSON_SERVER_MAX_CONNS);
        json_server_conn_fds[i] = c;
        CHECK(pthread_create(&json_server_conn_threads[i], NULL, json_server_conn, &json_server_conn_fds[i]) == 0);
    }
}

/* Starts the server; returns its port. */
static int json_server_start(json_server_answer answer) {
    int port = 0;
    json_server_fn = answer;
    json_server_fd = listen_loopback(&port);
    CHECK(pthread_create(&json_server_thread, NULL, json_server_accept, NULL) == 0);
    return port;
}

/* Stops the server and joins its threads (after the runtime using it is freed). */
static void json_server_stop(void) {
    shutdown(json_server_fd, SHUT_RDWR);
    CHECK(pthread_join(json_server_thread, NULL) == 0);
    close(json_server_fd);
    for (int i = 0; i < atomic_load(&json_server_conns); i++) {
        shutdown(json_server_conn_fds[i], SHUT_RDWR);
        CHECK(pthread_join(json_server_conn_threads[i], NULL) == 0);
        close(json_server_conn_fds[i]);
    }
}

#endif
