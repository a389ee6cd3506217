/* raw_floor.h - the libcurl settings AgentOS applies to its own handles, for the benchmarks'
 * "tuned" raw floor: a hand-written libcurl loop can make the same two savings, so the
 * overhead AgentOS adds is measured against that too, not only against a plain loop.
 *   - the URL parsed once (CURLOPT_CURLU): libcurl then copies it per request instead of
 *     parsing the URL text again;
 *   - no proxy when the environment names none (libcurl otherwise reads five proxy variables
 *     on every request). */
#ifndef AGENTOS_RAW_FLOOR_H
#define AGENTOS_RAW_FLOOR_H
#include <curl/curl.h>
#include <stdlib.h>

/* Returns the URL handle to free with curl_url_cleanup after the easy handle. */
static inline CURLU *raw_floor_tune(CURL *c, const char *url) {
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
#endif
