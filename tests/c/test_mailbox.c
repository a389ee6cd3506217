/*
 * test_mailbox.c - messages, mailboxes and topics through the C API: zero copy, ordering and
 * no loss with several producer threads, backpressure, timeouts, request/reply, close, stale
 * handles and bad input. Run under ASan and valgrind by scripts/test-c.sh.
 */
#define _POSIX_C_SOURCE 200809L
#include <agentos.h>

#include "check.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static agentos_runtime *rt;
static agentos_mailbox_id inbox;
#define PRODUCERS 4
#define PER_PRODUCER 5000

static void *producer(void *arg) {
    uint32_t id = (uint32_t)(uintptr_t)arg;
    agentos_mailbox_id me = 0;
    CHECK(agentos_mailbox_new(rt, 1, &me) == 0);
    for (uint32_t i = 0; i < PER_PRODUCER; i++) {
        uint32_t payload[2] = {id, i};
        agentos_message *m = NULL;
        CHECK(agentos_message_new(1000, (const uint8_t *)payload, sizeof payload, &m) == 0);
        CHECK(agentos_mailbox_send(rt, me, inbox, m, -1, NULL) == 0); /* block on backpressure */
        agentos_message_free(m);
    }
    return (void *)(uintptr_t)me;
}

static void *server(void *arg) {
    agentos_mailbox_id mb = (agentos_mailbox_id)(uintptr_t)arg;
    agentos_message *req = NULL;
    CHECK(agentos_mailbox_recv(rt, mb, 10000, &req) == 0);
    agentos_message *ans = NULL;
    CHECK(agentos_message_new(1000, (const uint8_t *)"pong", 4, &ans) == 0);
    CHECK(agentos_mailbox_reply(rt, mb, req, ans, 0, NULL) == 0);
    agentos_message_free(ans);
    agentos_message_free(req);
    return NULL;
}

int main(void) {
    agentos_config *cfg = NULL;
    CHECK(agentos_config_new(&cfg) == 0);
    CHECK(agentos_runtime_new(cfg, &rt, NULL) == 0);
    agentos_config_free(cfg);

    /* Bad input. */
    agentos_message *m = NULL;
    CHECK(agentos_message_new(1, NULL, 5, &m) == AGENTOS_STATUS_NULL_ARGUMENT && m == NULL);
    CHECK(agentos_message_new(1, NULL, 0, &m) == 0);
    const uint8_t *data = (const uint8_t *)"x";
    size_t len = 99;
    CHECK(agentos_message_data(m, &data, &len) == 0 && len == 0 && data == NULL);
    agentos_message_free(m);
    CHECK(agentos_mailbox_new(rt, 4, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_mailbox_send(rt, 0, 424242, NULL, 0, NULL) == AGENTOS_STATUS_NULL_ARGUMENT);
    CHECK(agentos_message_kind(NULL) == 0 && agentos_message_topic(NULL) == NULL);
    agentos_message_free(NULL);
    agentos_message_builder_free(NULL);

    /* Zero copy: the receiver reads the sender's bytes in place; clones share them. */
    CHECK(agentos_mailbox_new(rt, 8, &inbox) == 0);
    agentos_message_builder *b = NULL;
    CHECK(agentos_message_builder_new(1 << 20, &b) == 0);
    uint8_t *w = NULL;
    CHECK(agentos_message_builder_data(b, &w, &len) == 0 && len == (1u << 20));
    memset(w, 'z', len);
    CHECK(agentos_message_builder_seal(b, 1001, &m) == 0);
    const uint8_t *sent_ptr = NULL;
    CHECK(agentos_message_data(m, &sent_ptr, &len) == 0 && sent_ptr == w);
    agentos_message *clone = NULL;
    CHECK(agentos_message_clone(m, &clone) == 0);
    CHECK(agentos_mailbox_send(rt, 0, inbox, clone, 0, NULL) == 0);
    agentos_message_free(clone);
    agentos_message *got = NULL;
    CHECK(agentos_mailbox_recv(rt, inbox, 0, &got) == 0);
    const uint8_t *recv_ptr = NULL;
    CHECK(agentos_message_data(got, &recv_ptr, &len) == 0);
    CHECK(recv_ptr == sent_ptr && len == (1u << 20) && recv_ptr[12345] == 'z');
    CHECK(agentos_message_kind(got) == 1001 && agentos_message_recipient(got) == inbox);
    CHECK(agentos_message_sender(got) == 0 && agentos_message_id(got) != agentos_message_id(m));
    CHECK(agentos_message_timestamp_ns(got) > 0);
    agentos_message_free(got);

    /* Backpressure and timeouts. */
    agentos_mailbox_id small = 0;
    CHECK(agentos_mailbox_new(rt, 1, &small) == 0);
    CHECK(agentos_mailbox_send(rt, 0, small, m, 0, NULL) == 0);
    agentos_error *err = NULL;
    CHECK(agentos_mailbox_send(rt, 0, small, m, 0, &err) == AGENTOS_STATUS_BUSY);
    CHECK(strstr(agentos_error_message(err), "full") != NULL);
    agentos_error_free(err);
    CHECK(agentos_mailbox_send(rt, 0, small, m, 20, NULL) == AGENTOS_STATUS_TIMEOUT);
    size_t n = 0;
    CHECK(agentos_mailbox_len(rt, small, &n) == 0 && n == 1);
    CHECK(agentos_mailbox_recv(rt, small, 0, &got) == 0);
    agentos_message_free(got);
    CHECK(agentos_mailbox_recv(rt, small, 10, &got) == AGENTOS_STATUS_TIMEOUT);

    /* Several producers, each message received exactly once, in per-producer order. */
    pthread_t t[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) pthread_create(&t[i], NULL, producer, (void *)(uintptr_t)i);
    uint32_t next[PRODUCERS] = {0};
    for (int k = 0; k < PRODUCERS * PER_PRODUCER; k++) {
        CHECK(agentos_mailbox_recv(rt, inbox, 10000, &got) == 0);
        const uint32_t *p = NULL;
        CHECK(agentos_message_data(got, (const uint8_t **)&p, &len) == 0 && len == 8);
        CHECK(p[0] < PRODUCERS && p[1] == next[p[0]]);
        next[p[0]]++;
        agentos_message_free(got);
    }
    for (int i = 0; i < PRODUCERS; i++) {
        void *me = NULL;
        pthread_join(t[i], &me);
        CHECK(next[i] == PER_PRODUCER);
        CHECK(agentos_mailbox_free(rt, (agentos_mailbox_id)(uintptr_t)me) == 0);
    }
    CHECK(agentos_mailbox_recv(rt, inbox, 0, &got) == AGENTOS_STATUS_TIMEOUT);

    /* Request and reply. */
    agentos_mailbox_id client = 0, srv = 0;
    CHECK(agentos_mailbox_new(rt, 4, &client) == 0 && agentos_mailbox_new(rt, 4, &srv) == 0);
    pthread_t st;
    pthread_create(&st, NULL, server, (void *)(uintptr_t)srv);
    agentos_message *ping = NULL, *reply = NULL;
    CHECK(agentos_message_new(1000, (const uint8_t *)"ping", 4, &ping) == 0);
    CHECK(agentos_mailbox_request(rt, client, srv, ping, 10000, &reply, NULL) == 0);
    pthread_join(st, NULL);
    CHECK(agentos_message_data(reply, &data, &len) == 0 && len == 4 && memcmp(data, "pong", 4) == 0);
    CHECK(agentos_message_correlation(reply) != 0 && agentos_message_sender(reply) == srv);
    agentos_message_free(reply);
    reply = NULL;
    CHECK(agentos_mailbox_request(rt, client, srv, ping, 20, &reply, NULL) == AGENTOS_STATUS_TIMEOUT);
    CHECK(reply == NULL);
    CHECK(agentos_mailbox_reply(rt, srv, m, ping, 0, NULL) == AGENTOS_STATUS_INVALID_ARGUMENT); /* from host */

    /* Topics: fan out without copying. */
    agentos_mailbox_id s1 = 0, s2 = 0;
    CHECK(agentos_mailbox_new(rt, 4, &s1) == 0 && agentos_mailbox_new(rt, 4, &s2) == 0);
    CHECK(agentos_mailbox_subscribe(rt, s1, "news") == 0 && agentos_mailbox_subscribe(rt, s2, "news") == 0);
    size_t delivered = 0;
    CHECK(agentos_runtime_publish(rt, 0, "news", m, 0, &delivered, NULL) == 0 && delivered == 2);
    for (int i = 0; i < 2; i++) {
        CHECK(agentos_mailbox_recv(rt, i ? s2 : s1, 0, &got) == 0);
        CHECK(agentos_message_data(got, &recv_ptr, &len) == 0 && recv_ptr == sent_ptr);
        CHECK(strcmp(agentos_message_topic(got), "news") == 0);
        agentos_message_free(got);
    }
    CHECK(agentos_mailbox_unsubscribe(rt, s2, "news") == 0);
    CHECK(agentos_mailbox_unsubscribe(rt, s2, "news") == AGENTOS_STATUS_NOT_FOUND);
    CHECK(agentos_mailbox_subscribe(rt, s1, "\xff") == AGENTOS_STATUS_INVALID_UTF8);

    /* Close: queued messages stay receivable, then CLOSED; free: stale. */
    CHECK(agentos_mailbox_send(rt, 0, s1, m, 0, NULL) == 0);
    CHECK(agentos_mailbox_close(rt, s1) == 0);
    CHECK(agentos_mailbox_send(rt, 0, s1, m, 0, NULL) == AGENTOS_STATUS_CLOSED);
    CHECK(agentos_mailbox_recv(rt, s1, 0, &got) == 0);
    agentos_message_free(got);
    CHECK(agentos_mailbox_recv(rt, s1, -1, &got) == AGENTOS_STATUS_CLOSED);
    CHECK(agentos_mailbox_free(rt, s1) == 0);
    CHECK(agentos_mailbox_free(rt, s1) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_mailbox_recv(rt, s1, 0, &got) == AGENTOS_STATUS_STALE_HANDLE);
    CHECK(agentos_mailbox_send(rt, 0, s1, m, 0, NULL) == AGENTOS_STATUS_STALE_HANDLE);

    /* Messages outlive the runtime. */
    CHECK(agentos_mailbox_send(rt, 0, s2, m, 0, NULL) == 0); /* freed with the runtime */
    agentos_runtime_free(rt);
    CHECK(agentos_message_data(m, &data, &len) == 0 && len == (1u << 20) && data[0] == 'z');
    agentos_message_free(m);
    agentos_message_free(ping);
    printf("test_mailbox: %d checks passed\n", checks);
    return 0;
}
