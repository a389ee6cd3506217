/*
 * process_team.c - an isolated worker process that talks to its parent through shared memory.
 *
 * The parent creates a channel (two shared-memory rings) and forks. Each process starts its
 * own runtime and bridges the channel to a mailbox, so both sides use the ordinary mailbox API:
 * the parent sends requests, the child answers them, and replies find their requester by
 * correlation id. The parent also reads raw messages in place from a second channel (zero copy)
 * and finally kills a child that is in the middle of a stream, to show that the crash is
 * reported and that every message the child committed before dying arrives intact.
 *
 * No model server is needed. Build: cc -std=c11 process_team.c $(pkg-config --cflags --libs agentos)
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include <ctype.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define REQUESTS 200

static agentos_runtime *start_runtime(void) {
    agentos_config *cfg = NULL;
    agentos_runtime *rt = NULL;
    agentos_config_new(&cfg);
    agentos_config_set_workers(cfg, 1);
    if (agentos_runtime_new(cfg, &rt, NULL) != AGENTOS_STATUS_OK) exit(1);
    agentos_config_free(cfg);
    return rt;
}

/* The child: answers every request with its text upper-cased, until the channel closes. */
static int child_worker(agentos_channel *ch) {
    agentos_runtime *rt = start_runtime();
    agentos_mailbox_id inbox = 0, outbox = 0;
    agentos_mailbox_new(rt, 64, &inbox);
    if (agentos_channel_bridge(rt, ch, inbox, &outbox) != AGENTOS_STATUS_OK) return 1;
    int served = 0;
    for (;;) {
        agentos_message *req = NULL;
        agentos_status st = agentos_mailbox_recv(rt, inbox, 10000, &req);
        if (st != AGENTOS_STATUS_OK) break; /* CLOSED when the parent closes the channel */
        const uint8_t *data;
        size_t len;
        agentos_message_data(req, &data, &len);
        agentos_message_builder *b = NULL;
        agentos_message_builder_new(len, &b);
        uint8_t *w;
        size_t wl;
        agentos_message_builder_data(b, &w, &wl);
        for (size_t i = 0; i < len; i++) w[i] = (uint8_t)toupper(data[i]);
        agentos_message *ans = NULL;
        agentos_message_builder_seal(b, 1000, &ans);
        st = agentos_mailbox_reply_to(rt, inbox, outbox, req, ans, -1, NULL);
        agentos_message_free(ans);
        agentos_message_free(req);
        if (st != AGENTOS_STATUS_OK) break;
        served++;
    }
    agentos_runtime_free(rt);
    return served == REQUESTS ? 0 : 1;
}

/* A child that streams numbered messages until it is killed. */
static void child_streamer(agentos_channel *ch) {
    for (uint32_t i = 0;; i++) {
        uint32_t rec[16];
        for (int k = 0; k < 16; k++) rec[k] = i * 16 + (uint32_t)k;
        if (agentos_channel_send(ch, 7, (const uint8_t *)rec, sizeof rec, -1) != AGENTOS_STATUS_OK) _exit(0);
    }
}

int main(void) {
    /* 1. Request and reply across processes, through bridged mailboxes. */
    agentos_channel *ch = NULL;
    char *spec = NULL;
    if (agentos_channel_new(1 << 16, &ch) != AGENTOS_STATUS_OK) return 1;
    if (agentos_channel_child_spec(ch, &spec) != AGENTOS_STATUS_OK) return 1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        /* The child attaches the other end from the spec (the descriptors were inherited; an
           exec'd program would get the spec through its environment or arguments). */
        agentos_channel *mine = NULL;
        if (agentos_channel_attach(spec, &mine) != AGENTOS_STATUS_OK) _exit(2);
        int rc = child_worker(mine);
        agentos_channel_free(mine);
        _exit(rc);
    }
    agentos_string_free(spec);
    agentos_channel_close_child_fds(ch);
    agentos_channel_set_peer(ch, pid);
    agentos_runtime *rt = start_runtime();
    agentos_mailbox_id inbox = 0, outbox = 0;
    agentos_mailbox_new(rt, 64, &inbox);
    if (agentos_channel_bridge(rt, ch, inbox, &outbox) != AGENTOS_STATUS_OK) return 1;
    int ok = 0;
    for (int i = 0; i < REQUESTS; i++) {
        char text[64];
        int n = snprintf(text, sizeof text, "request number %d", i);
        agentos_message *req = NULL, *rep = NULL;
        agentos_message_new(1000, (const uint8_t *)text, (size_t)n, &req);
        agentos_error *err = NULL;
        agentos_status st = agentos_mailbox_request(rt, inbox, outbox, req, 10000, &rep, &err);
        agentos_message_free(req);
        if (st != AGENTOS_STATUS_OK) {
            fprintf(stderr, "request %d: %s: %s\n", i, agentos_status_str(st), agentos_error_message(err));
            agentos_error_free(err);
            break;
        }
        const uint8_t *d;
        size_t len;
        agentos_message_data(rep, &d, &len);
        char want[64];
        snprintf(want, sizeof want, "REQUEST NUMBER %d", i);
        if (len == strlen(want) && memcmp(d, want, len) == 0) ok++;
        agentos_message_free(rep);
    }
    printf("cross-process request/reply: %d of %d answered correctly\n", ok, REQUESTS);
    agentos_channel_close(ch); /* the child's inbox closes; it exits */
    int status = 0;
    waitpid(pid, &status, 0);
    int child_ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("worker process exited %s\n", child_ok ? "cleanly" : "with an error");
    agentos_runtime_free(rt);
    agentos_channel_free(ch);

    /* 2. A child killed mid-stream: a gap-free prefix arrives, in place, then PEER_GONE. */
    agentos_channel *stream = NULL;
    if (agentos_channel_new(1 << 16, &stream) != AGENTOS_STATUS_OK) return 1;
    if (agentos_channel_child_spec(stream, &spec) != AGENTOS_STATUS_OK) return 1;
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        agentos_channel *mine = NULL;
        if (agentos_channel_attach(spec, &mine) != AGENTOS_STATUS_OK) _exit(2);
        child_streamer(mine);
    }
    agentos_string_free(spec);
    agentos_channel_close_child_fds(stream);
    agentos_channel_set_peer(stream, pid);
    uint32_t expect = 0;
    int intact = 1;
    agentos_status st;
    for (;;) {
        agentos_shm_view *v = NULL;
        st = agentos_channel_recv(stream, 10000, &v);
        if (st != AGENTOS_STATUS_OK) break;
        const uint32_t *rec;
        size_t len;
        agentos_shm_view_data(v, (const uint8_t **)&rec, &len);
        if (len != 64 || agentos_shm_view_kind(v) != 7) intact = 0;
        for (int k = 0; k < 16 && intact; k++)
            if (rec[k] != expect * 16 + (uint32_t)k) intact = 0;
        expect++;
        agentos_shm_view_free(v);
        if (expect == 5000) kill(pid, SIGKILL);
    }
    waitpid(pid, &status, 0);
    printf("stream from a killed child: %u messages, all intact and in order: %s; then %s\n", expect,
           intact ? "yes" : "NO", agentos_status_str(st));
    agentos_channel_free(stream);
    return (ok == REQUESTS && child_ok && intact && expect >= 5000 && st == AGENTOS_STATUS_PEER_GONE) ? 0 : 1;
}
