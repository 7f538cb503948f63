/* reply_fuzz.c - libFuzzer harness for csrc/zcrm_reply.[ch] and csrc/zcrm_json.[ch]: the
 * one-pass reader of delink answers and the JSON scanner under it.
 *
 * Input: byte 0 picks the HTTP status (200, 207, 400, 401, 500, 302), byte 1 the number
 * of ids sent (0..100: "1", "2", ... so that bodies can name them); the rest is the body,
 * copied into a buffer of its exact size (no terminating NUL to lean on).
 *
 * Invariants (a failure aborts, which libFuzzer reports as a crash):
 *   - the reader agrees with the checker: NOT_JSON exactly when zcrm_json_document
 *     refuses the body;
 *   - only a DATA answer answers ids; every answered id that names an id names that
 *     one; no element answers two ids; every span lies inside the body;
 *   - unescaping any answered string fits in its raw length (ASan checks the buffer),
 *     and walking answered details with zcrm_json_next (as the Lua glue does) stays in
 *     bounds;
 *   - the reader gives exactly what it gives when it parses every entry (built again
 *     below with ZCRM_REPLY_NO_TEMPLATE): recognising entries by their bytes changes
 *     nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_reply.h"

/* The reader again, parsing every entry, under other names. */
#define ZCRM_REPLY_NO_TEMPLATE
#define zcrm_reply_read parsing_reply_read
#define zcrm_reply_text parsing_reply_text
#include "zcrm_reply.c"
#undef zcrm_reply_read
#undef zcrm_reply_text

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "reply_fuzz: invariant failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static const char *body_start, *body_end;

static void check_span(const zcrm_json_value *v)
{
    char *buf;
    size_t raw;
    if (v->type == ZCRM_JSON_INVALID) return;
    CHECK(v->start >= body_start && v->end <= body_end && v->start <= v->end);
    if (v->type != ZCRM_JSON_STRING) return;
    raw = (size_t)(v->end - v->start);
    buf = malloc(raw ? raw : 1);
    if (buf == NULL) abort();
    CHECK(zcrm_json_unescape(v, buf) <= raw);
    free(buf);
}

static int same_value(const zcrm_json_value *a, const zcrm_json_value *b)
{
    return a->type == b->type && (a->type == ZCRM_JSON_INVALID ||
                                  (a->start == b->start && a->end == b->end && a->escaped == b->escaped));
}

static int same_fields(const zcrm_reply_fields *a, const zcrm_reply_fields *b)
{
    return same_value(&a->code, &b->code) && same_value(&a->message, &b->message) &&
           same_value(&a->status, &b->status) && same_value(&a->details, &b->details) &&
           same_value(&a->id, &b->id) && a->details_is_id == b->details_is_id;
}

/* What push_json in zcrm_lua.c does, without Lua. */
static void walk(const zcrm_json_value *v, int depth)
{
    const char *pos = NULL;
    zcrm_json_value k, m;
    check_span(v);
    if (v->type != ZCRM_JSON_OBJECT && v->type != ZCRM_JSON_ARRAY) return;
    CHECK(depth <= ZCRM_JSON_MAX_DEPTH + 1);
    while (zcrm_json_next(v, &pos, &k, &m)) {
        if (v->type == ZCRM_JSON_OBJECT) check_span(&k);
        walk(&m, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[] = {200, 207, 400, 401, 500, 302};
    char names[ZCRM_MAX_IDS_PER_CALL][4];
    const char *ids[ZCRM_MAX_IDS_PER_CALL];
    size_t lens[ZCRM_MAX_IDS_PER_CALL], n, i, j, len;
    zcrm_reply_fields answer[ZCRM_MAX_IDS_PER_CALL], parsed[ZCRM_MAX_IDS_PER_CALL];
    zcrm_json_value doc;
    zcrm_reply r, rp;
    char *body;
    long status;

    if (size < 2) return 0;
    status = statuses[data[0] % 6];
    n = data[1] % (ZCRM_MAX_IDS_PER_CALL + 1);
    for (i = 0; i < n; i++) {
        lens[i] = (size_t)snprintf(names[i], sizeof names[i], "%zu", i + 1);
        ids[i] = names[i];
    }
    len = size - 2;
    body = malloc(len ? len : 1);
    if (body == NULL) abort();
    if (len) memcpy(body, data + 2, len);
    body_start = body;
    body_end = body + len;

    zcrm_reply_read(body, len, status, ids, lens, n, &r, answer);
    CHECK((r.kind == ZCRM_REPLY_NOT_JSON) == !zcrm_json_document(body, body + len, &doc));
    parsing_reply_read(body, len, status, ids, lens, n, &rp, parsed);
    CHECK(r.kind == rp.kind);
    if (r.kind == ZCRM_REPLY_FLAT) CHECK(same_fields(&r.fields, &rp.fields));
    for (i = 0; i < n; i++) {
        CHECK(answer[i].table == parsed[i].table);
        if (answer[i].table) CHECK(same_fields(&answer[i], &parsed[i]));
    }
    for (i = 0; i < n; i++) {
        const zcrm_reply_fields *f = &answer[i];
        if (!f->table) continue;
        CHECK(r.kind == ZCRM_REPLY_DATA);
        if (f->id.type == ZCRM_JSON_STRING || f->id.type == ZCRM_JSON_NUMBER) {
            char buf[64];
            const char *text;
            long t = zcrm_reply_text(&f->id, buf, sizeof buf, &text);
            CHECK(t == (long)lens[i] && memcmp(text, ids[i], lens[i]) == 0);
        }
        check_span(&f->code);
        check_span(&f->message);
        check_span(&f->status);
        check_span(&f->id);
        walk(&f->details, 0);
        /* Two ids answered by one element would share its spans. */
        for (j = 0; j < i; j++) {
            const zcrm_reply_fields *g = &answer[j];
            if (!g->table) continue;
            if (f->code.type != ZCRM_JSON_INVALID) CHECK(g->code.start != f->code.start);
            if (f->status.type != ZCRM_JSON_INVALID) CHECK(g->status.start != f->status.start);
        }
    }
    if (r.kind == ZCRM_REPLY_FLAT) {
        check_span(&r.fields.code);
        check_span(&r.fields.message);
        walk(&r.fields.details, 0);
    }
    free(body);
    return 0;
}
