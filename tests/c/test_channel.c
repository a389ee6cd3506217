/*
 * test_channel.c - the shared-memory channel C API with bad input: NULLs, specs naming
 * descriptors this process does not hold, oversize messages, a second view while one is held,
 * full rings, close. Run under ASan and valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>


int main(void) {
    agentos_channel *ch = NULL, *other = NULL;
    CHECK(agentos_channel_new(4096, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_channel_attach(NULL, &other) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_channel_attach("nonsense", &other) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_channel_attach("agentos-shm:900,901", &other) == AGENTOS_STATUS_INVALID_ARGUMENT);
    CHECK(agentos_channel_attach("agentos-shm:0,1", &other) == AGENTOS_STATUS_INVALID_ARGUMENT); /* stdio: not rings */
    CHECK(other == NULL);
    CHECK(agentos_channel_send(NULL, 1, (const uint8_t *)"x", 1, 0) == AGENTOS_STATUS_NULL_ARGUMENT);
    agentos_channel_free(NULL);
    agentos_shm_view_free(NULL);
    CHECK(agentos_shm_view_kind(NULL) == 0);

    CHECK(agentos_channel_new(4096, &ch) == AGENTOS_STATUS_OK);
    char *spec = NULL;
    CHECK(agentos_channel_child_spec(ch, &spec) == AGENTOS_STATUS_OK && strncmp(spec, "agentos-shm:", 12) == 0);
    CHECK(agentos_channel_send(ch, 1, NULL, 5, 0) == AGENTOS_STATUS_NULL_ARGUMENT);
    uint8_t big[4096] = {0};
    CHECK(agentos_channel_send(ch, 1, big, sizeof big, 0) == AGENTOS_STATUS_LIMIT_EXCEEDED);

    pid_t pid = fork();
    if (pid == 0) {
        /* The child: echo three messages, filling its ring first to show BUSY, then exit. */
        agentos_channel *c = NULL;
        if (agentos_channel_attach(spec, &c) != AGENTOS_STATUS_OK) _exit(10);
        for (int i = 0; i < 3; i++) {
            agentos_shm_view *v = NULL;
            if (agentos_channel_recv(c, 10000, &v) != AGENTOS_STATUS_OK) _exit(11);
            agentos_shm_view *second = NULL;
            if (agentos_channel_recv(c, 0, &second) != AGENTOS_STATUS_BUSY) _exit(12); /* one view at a time */
            const uint8_t *d;
            size_t n;
            agentos_shm_view_data(v, &d, &n);
            if (agentos_channel_send(c, agentos_shm_view_kind(v) + 1, d, n, 1000) != AGENTOS_STATUS_OK) _exit(13);
            agentos_shm_view_free(v);
        }
        agentos_channel_free(c);
        _exit(0);
    }
    agentos_string_free(spec);
    CHECK(agentos_channel_close_child_fds(ch) == AGENTOS_STATUS_OK);
    CHECK(agentos_channel_set_peer(ch, pid) == AGENTOS_STATUS_OK);
    for (uint32_t i = 0; i < 3; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "message %u", i);
        CHECK(agentos_channel_send(ch, 100 + i, (const uint8_t *)msg, (size_t)n, 1000) == AGENTOS_STATUS_OK);
        agentos_shm_view *v = NULL;
        CHECK(agentos_channel_recv(ch, 10000, &v) == AGENTOS_STATUS_OK);
        const uint8_t *d;
        size_t len;
        CHECK(agentos_shm_view_data(v, &d, &len) == AGENTOS_STATUS_OK);
        CHECK(len == (size_t)n && memcmp(d, msg, len) == 0 && agentos_shm_view_kind(v) == 101 + i);
        agentos_shm_view_free(v);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    agentos_shm_view *v = NULL;
    CHECK(agentos_channel_recv(ch, 2000, &v) == AGENTOS_STATUS_PEER_GONE && v == NULL);

    /* A full ring: BUSY without waiting, TIMEOUT with a short wait; close ends it all. */
    agentos_channel *solo = NULL;
    CHECK(agentos_channel_new(4096, &solo) == AGENTOS_STATUS_OK);
    int sent = 0;
    while (agentos_channel_send(solo, 1, big, 1000, 0) == AGENTOS_STATUS_OK) sent++;
    CHECK(sent >= 2);
    CHECK(agentos_channel_send(solo, 1, big, 1000, 0) == AGENTOS_STATUS_BUSY);
    CHECK(agentos_channel_send(solo, 1, big, 1000, 20) == AGENTOS_STATUS_TIMEOUT);
    CHECK(agentos_channel_close(solo) == AGENTOS_STATUS_OK);
    CHECK(agentos_channel_send(solo, 1, big, 10, 0) == AGENTOS_STATUS_CLOSED);
    agentos_channel_free(solo);
    agentos_channel_free(ch);
    printf("test_channel: %d checks passed\n", checks);
    return 0;
}
