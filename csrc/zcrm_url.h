/* zcrm_url.h - validation of everything that goes into a URL, and the delink URL
 * builder. Pure C: no Lua, no libcurl, no allocation. */
#ifndef ZCRM_URL_H
#define ZCRM_URL_H

#include <stddef.h>
#include "zcrm_error.h"

#define ZCRM_MAX_IDS_PER_CALL 100 /* Zoho's documented limit per delink call */
#define ZCRM_MAX_ID_DIGITS 19
#define ZCRM_MAX_API_NAME 100
#define ZCRM_MAX_BASE_URL 255
#define ZCRM_MAX_VERSION 15
#define ZCRM_MAX_TOKEN 4096
/* Largest URL the builder can produce from valid parts: base, version, module, record,
 * related, and 100 ids with commas, plus "/crm/" and separators. */
#define ZCRM_URL_MAX (ZCRM_MAX_BASE_URL + ZCRM_MAX_VERSION + 2 * ZCRM_MAX_API_NAME + \
                      (ZCRM_MAX_IDS_PER_CALL + 1) * (ZCRM_MAX_ID_DIGITS + 1) + 64)

/* `^[A-Za-z][A-Za-z0-9_]*$`, at most ZCRM_MAX_API_NAME bytes. */
int zcrm_valid_api_name(const char *s, size_t len);
/* 1 to 19 ASCII digits. */
int zcrm_valid_id(const char *s, size_t len);
/* `^v[0-9]+(\.[0-9]+)?$` ("v2", "v2.1", "v8"). */
int zcrm_valid_version(const char *s, size_t len);
/* Printable ASCII without space, 1..ZCRM_MAX_TOKEN bytes: no CR/LF/NUL header injection. */
int zcrm_valid_token(const char *s, size_t len);

/* A base URL ("https://host[:port]" with an optional trailing "/"), or, when
 * allow_path is set, a full URL whose path and query follow. The scheme must be https,
 * or http to a loopback host (localhost, 127.0.0.0/8, [::1]). No user info. */
zcrm_code zcrm_check_url(const char *url, size_t len, int allow_path, zcrm_err *err);

typedef struct {
    const char *base; size_t base_len;       /* api_domain, already checked */
    const char *version; size_t version_len;
    const char *module; size_t module_len;
    const char *record; size_t record_len;
    const char *related; size_t related_len;
} zcrm_delink_target;

/* Validates the target's names and ids. */
zcrm_code zcrm_check_target(const zcrm_delink_target *t, zcrm_err *err);

/* Writes the delink URL for n (1..100) ids into out (ZCRM_URL_MAX bytes, NUL-terminated):
 * one id uses the path form .../{related}/{id}, several the query form ...?ids=a,b,c.
 * Returns the length, or 0 on error (err set). */
size_t zcrm_url_delink(char *out, const zcrm_delink_target *t,
                       const char *const *ids, const size_t *lens, size_t n, zcrm_err *err);

#endif
