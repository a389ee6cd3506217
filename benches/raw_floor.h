/* raw_floor.h - what AgentOS does with libcurl, for the benchmarks' "tuned" raw floor: a
 * hand-written libcurl loop can do the same, so the overhead AgentOS adds is measured against
 * that too, not only against a plain loop.
 *   - its transfer settings (no signals, the receive buffer, the connect timeout);
 *   - the URL parsed once (CURLOPT_CURLU): libcurl then copies it per request instead of
 *     parsing the URL text again;
 *   - no proxy when the environment names none (libcurl otherwise reads five proxy variables
 *     on every request);
 *   - for an endpoint that answers in microseconds, the answer waited for by yielding the CPU
 *     rather than sleeping in poll (raw_floor_perform). */
#ifndef AGENTOS_RAW_FLOOR_H
#define AGENTOS_RAW_FLOOR_H
#include <curl/curl.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

/* Returns the URL handle to free with curl_url_cleanup after the easy handle. */
static inline CURLU *raw_floor_tune(CURL *c, const char *url) {
    /* The transfer settings AgentOS gives every handle (src/model/transfer.rs, configure_easy):
       no signals (libcurl otherwise ignores and restores SIGPIPE around every transfer step,
       two system calls each time), a 4 KiB receive buffer, a 10 s connect timeout, HTTP/2
       over TLS where offered. */
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 4096L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    static const char *vars[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                 "ALL_PROXY", "no_proxy", "NO_PROXY"};
    int proxy_env = 0;
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) proxy_env |= getenv(vars[i]) != NULL;
    if (!proxy_env) {
        curl_easy_setopt(c, CURLOPT_PROXY, "");
        curl_easy_setopt(c, CURLOPT_NOPROXY, "");
    }
    CURLU *u = curl_url();
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) curl_easy_setopt(c, CURLOPT_CURLU, u);
    return u;
}

/* The longest AgentOS yields waiting for an answer (it yields up to twice the endpoint's
   recent latency, at most this). */
#define RAW_FLOOR_SPIN_US 200L

/* Runs `c`'s transfer on multi handle `m` (which keeps the connection), waiting for the answer
   the way AgentOS waits for a quick endpoint on the caller's thread: yield the CPU and look
   again for up to `spin_us` microseconds, then sleep in curl_multi_poll. */
static inline CURLcode raw_floor_perform(CURLM *m, CURL *c, long spin_us) {
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (curl_multi_add_handle(m, c) != CURLM_OK) return CURLE_FAILED_INIT;
    CURLcode rc = CURLE_OK;
    int running = 1;
    for (;;) {
        if (curl_multi_perform(m, &running) != CURLM_OK) {
            rc = CURLE_FAILED_INIT;
            break;
        }
        if (!running) break;
        clock_gettime(CLOCK_MONOTONIC, &t);
        long us = (t.tv_sec - t0.tv_sec) * 1000000L + (t.tv_nsec - t0.tv_nsec) / 1000;
        if (us < spin_us)
            sched_yield();
        else
            curl_multi_poll(m, NULL, 0, 1000, NULL);
    }
    int left;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(m, &left)))
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == c) rc = msg->data.result;
    curl_multi_remove_handle(m, c);
    return rc;
}
#endif
