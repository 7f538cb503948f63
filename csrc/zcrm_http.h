/* zcrm_http.h - the transport interface: one blocking HTTP exchange at a time on a
 * connection-reusing session. zcrm_http_curl.c implements it with libcurl; another
 * transport (e.g. nginx cosockets, on the Lua side) only has to keep this contract:
 * a status and a body, or an error code and a message. */
#ifndef ZCRM_HTTP_H
#define ZCRM_HTTP_H

#include <stddef.h>
#include "zcrm_error.h"

typedef struct zcrm_http zcrm_http;

typedef struct {
    long timeout_ms;         /* whole exchange */
    long connect_timeout_ms;
    const char *ca_file;     /* extra CA bundle, or NULL; copied */
    size_t max_body;         /* responses larger than this fail with ZCRM_EBADRESP */
} zcrm_http_options;

typedef struct {
    const char *method;       /* "DELETE" or "POST" */
    const char *url;          /* checked with zcrm_check_url(..., allow_path=1) */
    const char *token;        /* sent as "Authorization: Zoho-oauthtoken <token>", or NULL */
    const char *body;         /* POST body, or NULL */
    size_t body_len;
    const char *content_type; /* of the body, or NULL */
} zcrm_http_request;

typedef struct {
    long status;
    const char *body;  /* owned by the session, valid until its next request */
    size_t body_len;
} zcrm_http_response;

/* Process-wide libcurl setup; call once before any session, before threads start. */
zcrm_code zcrm_http_global_init(zcrm_err *err);

zcrm_http *zcrm_http_new(const zcrm_http_options *opts, zcrm_err *err);
void zcrm_http_free(zcrm_http *h);
zcrm_code zcrm_http_perform(zcrm_http *h, const zcrm_http_request *req,
                            zcrm_http_response *resp, zcrm_err *err);

#endif
