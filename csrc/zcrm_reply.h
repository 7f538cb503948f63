/* zcrm_reply.h - reading a Delink Related Records answer in one pass: which kind of body
 * it is, and which element of its `data` array answers which id sent. Pure C: no Lua,
 * no allocation; values are spans into the body (zcrm_json.h).
 *
 * Zoho answers 200/207 (and 400 when every id failed) with {"data":[entry, ...]}, one
 * entry {"code","details":{"id"},"message","status"} per id, or a flat whole-request
 * error {"code","details","message","status"}. Nothing is invented: an id no entry
 * accounts for is left unanswered, for the caller to report BAD_RESPONSE. */
#ifndef ZCRM_REPLY_H
#define ZCRM_REPLY_H

#include <stddef.h>
#include "zcrm_json.h"
#include "zcrm_url.h"

typedef enum {
    ZCRM_REPLY_NOT_JSON,    /* the body is not JSON (an HTML 502 from a proxy, a cut body) */
    ZCRM_REPLY_WRONG_SHAPE, /* JSON, but neither of Zoho's two shapes for this status */
    ZCRM_REPLY_DATA,        /* {"data": [...]}: one entry per id */
    ZCRM_REPLY_FLAT         /* a whole-request error: the fields are in `fields` */
} zcrm_reply_kind;

/* The fields of one entry, or of a flat error. Absent fields have type INVALID; `id` is
 * details.id. `table` is set when the entry is an object or an array (JSON containers
 * are what the reader considers entries at all). */
typedef struct {
    int table;
    int details_is_id;  /* details is {"id": "<plain string>"} and nothing else */
    zcrm_json_value code, message, status, details, id;
} zcrm_reply_fields;

typedef struct {
    zcrm_reply_kind kind;
    zcrm_reply_fields fields; /* FLAT only */
} zcrm_reply;

/* Reads the answer to the n ids sent (n <= ZCRM_MAX_IDS_PER_CALL). For a DATA answer,
 * answer[i] becomes the fields of the element answering ids[i]; answer[i].table is 0
 * when none does. Entries are matched by details.id (at their own position first, as
 * Zoho answers in order); entries without an id by position, but only when the array
 * has exactly one element per id. Each element answers at most one id. Of duplicate
 * keys, the last counts, as in JSON decoders. */
void zcrm_reply_read(const char *body, size_t len, long http_status,
                     const char *const *ids, const size_t *lens, size_t n,
                     zcrm_reply *r, zcrm_reply_fields *answer);

/* Text of a string or number value, as Lua would print it from a JSON decoder (numbers
 * as integers, "%.0f"). Writes to buf (size bytes) when it must; returns the length and
 * sets *text, or returns -1 when v is neither or does not fit. */
long zcrm_reply_text(const zcrm_json_value *v, char *buf, size_t size, const char **text);

#endif
