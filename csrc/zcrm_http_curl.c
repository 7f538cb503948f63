/* zcrm_http_curl.c - the libcurl transport (see zcrm_http.h).
 * One easy handle per session, reused so that libcurl keeps the connection (and TLS
 * session) alive between calls. Nothing here calls back into Lua, so a Lua error can
 * never unwind through libcurl. */
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include "zcrm_http.h"
#include "zcrm_url.h"

struct zcrm_http {
    CURL *easy;
    char *ca_file;
    size_t max_body;
    int too_big;    /* set by the write callback when the cap is hit */
    char *body;     /* response buffer, kept (and its capacity) across requests */
    size_t len, cap;
    char errbuf[CURL_ERROR_SIZE];
};

zcrm_code zcrm_http_global_init(zcrm_err *err)
{
    CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (rc != CURLE_OK)
        return zcrm_fail(err, ZCRM_ETRANSPORT, "curl_global_init: %s", curl_easy_strerror(rc));
    return ZCRM_OK;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    zcrm_http *h = userp;
    size_t n = size * nmemb;
    if (n > h->max_body - h->len) {
        h->too_big = 1;
        return 0; /* makes libcurl abort with CURLE_WRITE_ERROR */
    }
    if (h->len + n + 1 > h->cap) {
        size_t cap = h->cap ? h->cap : 4096;
        char *p;
        while (cap < h->len + n + 1) cap *= 2;
        p = realloc(h->body, cap);
        if (p == NULL) return 0;
        h->body = p;
        h->cap = cap;
    }
    memcpy(h->body + h->len, data, n);
    h->len += n;
    h->body[h->len] = '\0';
    return n;
}

void zcrm_http_free(zcrm_http *h)
{
    if (h == NULL) return;
    if (h->easy != NULL) curl_easy_cleanup(h->easy);
    free(h->ca_file);
    free(h->body);
    free(h);
}

/* Options that hold for every request of the session. */
static CURLcode setup(zcrm_http *h, const zcrm_http_options *opts)
{
    CURLcode rc = CURLE_OK;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(h->easy, opt, val)
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_ERRORBUFFER, h->errbuf);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, h);
    SET(CURLOPT_FOLLOWLOCATION, 0L); /* a redirect must never carry the token elsewhere */
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_TIMEOUT_MS, opts->timeout_ms);
    SET(CURLOPT_CONNECTTIMEOUT_MS, opts->connect_timeout_ms);
    SET(CURLOPT_USERAGENT, "zcrm (libcurl)");
    /* CAINFO replaces the bundle file; the system CA directory (CAPATH) still applies,
     * so ca_file adds to the trusted set rather than replacing it. */
    if (h->ca_file != NULL) SET(CURLOPT_CAINFO, h->ca_file);
#undef SET
    return rc;
}

zcrm_http *zcrm_http_new(const zcrm_http_options *opts, zcrm_err *err)
{
    zcrm_http *h = calloc(1, sizeof *h);
    CURLcode rc;
    if (h == NULL) {
        zcrm_fail(err, ZCRM_ENOMEM, "out of memory creating an HTTP session");
        return NULL;
    }
    h->max_body = opts->max_body;
    if (opts->ca_file != NULL && (h->ca_file = strdup(opts->ca_file)) == NULL) {
        zcrm_http_free(h);
        zcrm_fail(err, ZCRM_ENOMEM, "out of memory creating an HTTP session");
        return NULL;
    }
    if ((h->easy = curl_easy_init()) == NULL) {
        zcrm_http_free(h);
        zcrm_fail(err, ZCRM_ETRANSPORT, "curl_easy_init failed");
        return NULL;
    }
    if ((rc = setup(h, opts)) != CURLE_OK) {
        zcrm_http_free(h);
        zcrm_fail(err, ZCRM_ETRANSPORT, "curl setup: %s", curl_easy_strerror(rc));
        return NULL;
    }
    return h;
}

/* Per-request options: method, URL, body. */
static CURLcode prepare(zcrm_http *h, const zcrm_http_request *req, struct curl_slist *headers)
{
    CURLcode rc = CURLE_OK;
    int post = strcmp(req->method, "POST") == 0;
#define SET(opt, val) if (rc == CURLE_OK) rc = curl_easy_setopt(h->easy, opt, val)
    SET(CURLOPT_URL, req->url);
    SET(CURLOPT_HTTPHEADER, headers);
    SET(CURLOPT_HTTPGET, 1L); /* drops the previous request's POST state */
    if (post) {
        SET(CURLOPT_POSTFIELDSIZE, (long)req->body_len);
        SET(CURLOPT_COPYPOSTFIELDS, req->body != NULL ? req->body : "");
        SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, req->method);
    }
#undef SET
    return rc;
}

static struct curl_slist *build_headers(const zcrm_http_request *req, int *oom)
{
    struct curl_slist *list = NULL, *next;
    char line[ZCRM_MAX_TOKEN + 64];

    *oom = 0;
    if (req->token != NULL) {
        snprintf(line, sizeof line, "Authorization: Zoho-oauthtoken %s", req->token);
        if ((next = curl_slist_append(list, line)) == NULL) goto fail;
        list = next;
    }
    if (req->content_type != NULL) {
        snprintf(line, sizeof line, "Content-Type: %s", req->content_type);
        if ((next = curl_slist_append(list, line)) == NULL) goto fail;
        list = next;
    }
    memset(line, 0, sizeof line); /* the token does not linger on the stack */
    if ((next = curl_slist_append(list, "Expect:")) == NULL) goto fail; /* no 100-continue round trip */
    return next;
fail:
    memset(line, 0, sizeof line);
    curl_slist_free_all(list);
    *oom = 1;
    return NULL;
}

zcrm_code zcrm_http_perform(zcrm_http *h, const zcrm_http_request *req,
                            zcrm_http_response *resp, zcrm_err *err)
{
    struct curl_slist *headers;
    CURLcode rc;
    int oom;
    zcrm_code code;

    if (strcmp(req->method, "DELETE") != 0 && strcmp(req->method, "POST") != 0)
        return zcrm_fail(err, ZCRM_EINVAL, "method must be DELETE or POST");
    if ((code = zcrm_check_url(req->url, strlen(req->url), 1, err)) != ZCRM_OK) return code;
    if (req->token != NULL && !zcrm_valid_token(req->token, strlen(req->token)))
        return zcrm_fail(err, ZCRM_EINVAL, "access token has a space, control or non-ASCII byte, or is too long");
    if (req->content_type != NULL && !zcrm_valid_token(req->content_type, strlen(req->content_type)))
        return zcrm_fail(err, ZCRM_EINVAL, "content type has a space or control byte");

    headers = build_headers(req, &oom);
    if (oom) return zcrm_fail(err, ZCRM_ENOMEM, "out of memory building headers");

    h->len = 0;
    h->too_big = 0;
    h->errbuf[0] = '\0';
    rc = prepare(h, req, headers);
    if (rc == CURLE_OK) rc = curl_easy_perform(h->easy);
    /* The handle must not keep pointing at the list we are about to free. */
    curl_easy_setopt(h->easy, CURLOPT_HTTPHEADER, (struct curl_slist *)NULL);
    curl_slist_free_all(headers);

    if (rc != CURLE_OK) {
        if (h->too_big)
            return zcrm_fail(err, ZCRM_EBADRESP, "response body exceeds %zu bytes", h->max_body);
        if (rc == CURLE_OPERATION_TIMEDOUT)
            return zcrm_fail(err, ZCRM_ETIMEOUT, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
        return zcrm_fail(err, ZCRM_ETRANSPORT, "%s", h->errbuf[0] ? h->errbuf : curl_easy_strerror(rc));
    }
    curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &resp->status);
    resp->body = h->body != NULL ? h->body : "";
    resp->body_len = h->len;
    return ZCRM_OK;
}
