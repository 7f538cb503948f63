/* zcrm_reply.c - see zcrm_reply.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_reply.h"

static int has_text(const zcrm_json_value *v)
{
    return v->type == ZCRM_JSON_STRING || v->type == ZCRM_JSON_NUMBER;
}

long zcrm_reply_text(const zcrm_json_value *v, char *buf, size_t size, const char **text)
{
    size_t raw = (size_t)(v->end - v->start);
    if (v->type == ZCRM_JSON_STRING) {
        if (!v->escaped) {
            *text = v->start;
            return (long)raw;
        }
        if (raw > size) return -1;
        *text = buf;
        return (long)zcrm_json_unescape(v, buf);
    }
    if (v->type == ZCRM_JSON_NUMBER) {
        char num[64];
        int n;
        size_t digits = 0;
        while (digits < raw && v->start[digits] >= '0' && v->start[digits] <= '9') digits++;
        if (digits == raw) { /* a plain integer: exact, whatever its size */
            *text = v->start;
            return (long)raw;
        }
        if (raw >= sizeof num) return -1;
        memcpy(num, v->start, raw);
        num[raw] = '\0';
        n = snprintf(buf, size, "%.0f", strtod(num, NULL));
        if (n < 0 || (size_t)n >= size) return -1;
        *text = buf;
        return n;
    }
    return -1;
}

static int id_is(const zcrm_json_value *id, const char *s, size_t len)
{
    char buf[64];
    const char *text;
    long n = zcrm_reply_text(id, buf, sizeof buf, &text);
    return n >= 0 && (size_t)n == len && memcmp(text, s, len) == 0;
}

/* Walks an object's members: code, message, status and details (with details.id) are
 * kept, the rest is checked and skipped. 0 on a syntax error. */
static int read_fields(zcrm_json_cursor *c, zcrm_reply_fields *f)
{
    zcrm_json_value k, skip;
    int more;
    while ((more = zcrm_json_step(c, &k)) == 1) {
        zcrm_json_value *into = &skip;
        if (zcrm_json_string_is(&k, "code")) into = &f->code;
        else if (zcrm_json_string_is(&k, "message")) into = &f->message;
        else if (zcrm_json_string_is(&k, "status")) into = &f->status;
        else if (zcrm_json_string_is(&k, "details")) {
            zcrm_json_cursor d;
            f->id.type = ZCRM_JSON_INVALID;
            f->details_is_id = 0;
            if (zcrm_json_enter(c, &d) && d.close == '}') {
                zcrm_json_value dk;
                int dmore, others = 0;
                while ((dmore = zcrm_json_step(&d, &dk)) == 1) {
                    int is_id = zcrm_json_string_is(&dk, "id");
                    others += !is_id;
                    if (!zcrm_json_take(&d, is_id ? &f->id : &skip)) return 0;
                }
                if (dmore < 0) return 0;
                /* Only a plain string id is the entry's id to the letter. */
                f->details_is_id = !others && d.members == 1 && f->id.type == ZCRM_JSON_STRING &&
                                   !f->id.escaped;
                zcrm_json_leave(c, &d, &f->details);
                continue;
            }
            into = &f->details;
        }
        if (!zcrm_json_take(c, into)) return 0;
    }
    return more == 0;
}

/* Matching state of one data array. */
typedef struct {
    const char *const *ids;
    const size_t *lens;
    size_t n, count;
    zcrm_reply_fields *answer;
    zcrm_reply_fields loose[ZCRM_MAX_IDS_PER_CALL]; /* entries without an id, by position */
} matcher;

/* Element i: the first entry naming a sent id claims it; one without an id is held. */
static void match(matcher *m, size_t i, const zcrm_reply_fields *f)
{
    if (!f->table) return;
    if (!has_text(&f->id)) {
        if (i < m->n) m->loose[i] = *f;
        return;
    }
    if (!(i < m->n && id_is(&f->id, m->ids[i], m->lens[i]))) {
        size_t j;
        for (j = 0; j < m->n && !id_is(&f->id, m->ids[j], m->lens[j]); j++) {}
        if (j == m->n) return; /* an id that was not sent */
        i = j;
    }
    if (!m->answer[i].table) m->answer[i] = *f;
}

/* An entry read in full whose details are {"id": "<plain string>"}. The other entries of
 * a Zoho answer are its bytes but for the id, and are recognised as such by comparing
 * bytes instead of being parsed again: the same bytes parse the same way. (Built with
 * ZCRM_REPLY_NO_TEMPLATE, every entry is parsed: fuzz/reply_fuzz.c compares the two.) */
#ifdef ZCRM_REPLY_NO_TEMPLATE
#define USE_TEMPLATES 0
#else
#define USE_TEMPLATES 1
#endif

typedef struct {
    const char *start;     /* the entry's bytes in the body, '{' to '}' */
    size_t len, id_at, id_end; /* its length; the offsets of its id's first byte and closing quote */
    zcrm_reply_fields f;   /* its fields, spans into those bytes */
} entry_template;

/* A span of the template's entry moved to the entry at p, whose id is `shift` bytes
 * longer: what lies after the id moves with it. */
static void move_span(zcrm_json_value *v, const entry_template *t, const char *p, ptrdiff_t shift)
{
    size_t from, to;
    if (v->type == ZCRM_JSON_INVALID) return; /* no span */
    from = (size_t)(v->start - t->start);
    to = (size_t)(v->end - t->start);
    v->start = p + from + (from >= t->id_end ? shift : 0);
    v->end = p + to + (to >= t->id_end ? shift : 0);
}

/* When the entry at p is the template's bytes with another plain string id: sets *f to
 * its fields and returns the position after it; else NULL. */
static const char *match_template(const entry_template *t, const char *p, const char *end, zcrm_reply_fields *f)
{
    const char *id = p + t->id_at, *q;
    size_t tail = t->len - t->id_end;
    ptrdiff_t shift;
    if ((size_t)(end - p) < t->id_at || memcmp(p, t->start, t->id_at) != 0) return NULL;
    for (q = id; q < end && *q != '"'; q++)
        if (*q == '\\' || (unsigned char)*q < 0x20) return NULL;
    if ((size_t)(end - q) < tail || memcmp(q, t->start + t->id_end, tail) != 0) return NULL;
    shift = (q - id) - (ptrdiff_t)(t->id_end - t->id_at);
    *f = t->f;
    move_span(&f->code, t, p, shift);
    move_span(&f->message, t, p, shift);
    move_span(&f->status, t, p, shift);
    move_span(&f->details, t, p, shift);
    move_span(&f->id, t, p, shift);
    return q + tail;
}

/* Walks the data array, matching as it goes. 0 on a syntax error. */
static int read_data(zcrm_json_cursor *c, matcher *m)
{
    zcrm_json_cursor a;
    entry_template t = {0}; /* t.start: NULL until an entry qualifies */
    int more;
    size_t i;
    for (i = 0; i < m->n; i++) m->answer[i].table = m->loose[i].table = 0;
    if (!zcrm_json_enter(c, &a)) return 0;
    for (m->count = 0; (more = zcrm_json_step(&a, NULL)) == 1; m->count++) {
        zcrm_reply_fields f;
        zcrm_json_cursor e;
        zcrm_json_value skip;
        const char *start = a.p, *after;
        memset(&f, 0, sizeof f);
        if (USE_TEMPLATES && t.start != NULL && (after = match_template(&t, a.p, a.end, &f)) != NULL) {
            a.p = after;
        } else if (zcrm_json_enter(&a, &e) && e.close == '}') {
            f.table = 1;
            if (!read_fields(&e, &f)) return 0;
            zcrm_json_leave(&a, &e, NULL);
            if (f.details_is_id) {
                t.start = start;
                t.len = (size_t)(a.p - start);
                t.id_at = (size_t)(f.id.start - start);
                t.id_end = (size_t)(f.id.end - start);
                t.f = f;
            }
        } else {
            if (!zcrm_json_take(&a, &skip)) return 0;
            f.table = skip.type == ZCRM_JSON_ARRAY; /* an entry, without fields */
        }
        match(m, m->count, &f);
    }
    if (more < 0) return 0;
    zcrm_json_leave(c, &a, NULL);
    return 1;
}

void zcrm_reply_read(const char *body, size_t len, long http_status,
                     const char *const *ids, const size_t *lens, size_t n,
                     zcrm_reply *r, zcrm_reply_fields *answer)
{
    const char *end = body + len;
    zcrm_json_cursor doc;
    zcrm_json_value k, v;
    matcher m;
    int more, data = 0; /* the last "data" member: 0 none, 1 an array read, 2 other */
    int data_statuses = http_status == 200 || http_status == 207 || http_status == 400;
    size_t i;

    memset(r, 0, sizeof *r);
    m.ids = ids;
    m.lens = lens;
    m.n = n;
    m.answer = answer;
    for (i = 0; i < n; i++) answer[i].table = 0;
    r->kind = ZCRM_REPLY_NOT_JSON;
    if (!zcrm_json_open(&doc, body, end, 0) || doc.close != '}') {
        if (zcrm_json_document(body, end, &v)) r->kind = ZCRM_REPLY_WRONG_SHAPE;
        goto out;
    }
    while ((more = zcrm_json_step(&doc, &k)) == 1) {
        zcrm_json_value *into = &v;
        if (zcrm_json_string_is(&k, "data")) {
            zcrm_json_cursor probe;
            if (data_statuses && zcrm_json_enter(&doc, &probe) && probe.close == ']') {
                if (!read_data(&doc, &m)) goto out;
                data = 1;
                continue;
            }
            if (!zcrm_json_take(&doc, &v)) goto out;
            /* an object counts as a data array without entries */
            data = data_statuses && v.type == ZCRM_JSON_OBJECT ? 1 : 2;
            if (data == 1) {
                m.count = 0;
                for (i = 0; i < n; i++) answer[i].table = m.loose[i].table = 0;
            }
            continue;
        }
        if (zcrm_json_string_is(&k, "code")) into = &r->fields.code;
        else if (zcrm_json_string_is(&k, "message")) into = &r->fields.message;
        else if (zcrm_json_string_is(&k, "status")) into = &r->fields.status;
        else if (zcrm_json_string_is(&k, "details")) into = &r->fields.details;
        if (!zcrm_json_take(&doc, into)) goto out;
    }
    if (more < 0 || zcrm_json_ws(doc.p, end) != end) goto out;

    r->kind = ZCRM_REPLY_WRONG_SHAPE;
    if (data == 1) {
        r->kind = ZCRM_REPLY_DATA;
        if (m.count == n) /* entries without an id answer the id at their position */
            for (i = 0; i < n; i++)
                if (m.loose[i].table && !answer[i].table) answer[i] = m.loose[i];
    } else if (data == 0 && has_text(&r->fields.code) &&
               (http_status >= 400 || zcrm_json_string_is(&r->fields.status, "error"))) {
        r->kind = ZCRM_REPLY_FLAT;
    }
out:
    if (r->kind != ZCRM_REPLY_DATA)
        for (i = 0; i < n; i++) answer[i].table = 0;
}
