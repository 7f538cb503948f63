/* zcrm_http.h - the transport interface: a session runs up to `slots` HTTP exchanges
 * at once and reuses its connections between them. Start exchanges into free slots,
 * then wait for the next one to finish. zcrm_http_curl.c implements it with libcurl's
 * multi interface; another transport only has to keep this contract: per exchange, a
 * status and a body, or an error code and a message. */
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
    int slots;               /* exchanges in flight at most, 1..ZCRM_HTTP_MAX_SLOTS */
} zcrm_http_options;

#define ZCRM_HTTP_MAX_SLOTS 25 /* Zoho's highest concurrency limit (Ultimate edition) */

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
    const char *body;  /* owned by the session, valid until its slot is started again */
    size_t body_len;
    long retry_after;  /* seconds from a Retry-After header (number or date), or -1 */
    /* For a failed exchange that cannot have reached the server: "connect" (name
     * lookup or connection failed) or "tls" (handshake or certificate); else NULL. */
    const char *unsent;
} zcrm_http_response;

/* Process-wide libcurl setup; call once before any session, before threads start. */
zcrm_code zcrm_http_global_init(zcrm_err *err);

zcrm_http *zcrm_http_new(const zcrm_http_options *opts, zcrm_err *err);
void zcrm_http_free(zcrm_http *h);

/* Starts an exchange in a free slot. Returns the slot (0..slots-1), or -1 with err set
 * (invalid request, or every slot busy). The request's strings may be freed on return. */
int zcrm_http_start(zcrm_http *h, const zcrm_http_request *req, zcrm_err *err);

/* Waits up to timeout_ms (-1: as long as it takes; 0: only takes an exchange that has
 * already finished) for the next exchange to finish. Returns its slot and sets *resp
 * (err->code is ZCRM_OK), or its slot with err set when the exchange failed; -1 when
 * none is in flight or none finished in time. */
int zcrm_http_wait(zcrm_http *h, long timeout_ms, zcrm_http_response *resp, zcrm_err *err);

/* Exchanges in flight. */
int zcrm_http_in_flight(const zcrm_http *h);

#endif
