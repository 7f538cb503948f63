/* zcrm_reply.c - see zcrm_reply.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_reply.h"

static int is_table(const zcrm_json_value *v)
{
    return v->type == ZCRM_JSON_OBJECT || v->type == ZCRM_JSON_ARRAY;
}

static int has_text(const zcrm_json_value *v)
{
    return v->type == ZCRM_JSON_STRING || v->type == ZCRM_JSON_NUMBER;
}

/* The member `name` of object o (the last one, as decoders keep the last duplicate). */
static int member(const zcrm_json_value *o, const char *name, zcrm_json_value *out)
{
    const char *pos = NULL;
    zcrm_json_value k, v;
    int found = 0;
    out->type = ZCRM_JSON_INVALID;
    if (o->type != ZCRM_JSON_OBJECT) return 0;
    while (zcrm_json_next(o, &pos, &k, &v))
        if (zcrm_json_string_is(&k, name)) {
            *out = v;
            found = 1;
        }
    return found;
}

void zcrm_reply_fields_of(const zcrm_json_value *v, zcrm_reply_fields *f)
{
    const char *pos = NULL;
    zcrm_json_value k, m;
    memset(f, 0, sizeof *f); /* every field INVALID (0) */
    f->table = is_table(v);
    if (v->type != ZCRM_JSON_OBJECT) return;
    /* One pass over the members; a later duplicate wins. */
    while (zcrm_json_next(v, &pos, &k, &m)) {
        if (zcrm_json_string_is(&k, "code")) f->code = m;
        else if (zcrm_json_string_is(&k, "message")) f->message = m;
        else if (zcrm_json_string_is(&k, "status")) f->status = m;
        else if (zcrm_json_string_is(&k, "details")) f->details = m;
    }
    member(&f->details, "id", &f->id);
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

void zcrm_reply_read(const char *body, size_t len, long http_status, zcrm_reply *r)
{
    zcrm_json_value data;
    memset(r, 0, sizeof *r);
    if (!zcrm_json_document(body, body + len, &r->doc)) {
        r->kind = ZCRM_REPLY_NOT_JSON;
        return;
    }
    r->kind = ZCRM_REPLY_WRONG_SHAPE;
    if (r->doc.type != ZCRM_JSON_OBJECT) return;
    if (member(&r->doc, "data", &data)) {
        if (is_table(&data) && (http_status == 200 || http_status == 207 || http_status == 400)) {
            r->kind = ZCRM_REPLY_DATA;
            r->data = data;
        }
        return;
    }
    zcrm_reply_fields_of(&r->doc, &r->fields);
    if (has_text(&r->fields.code) &&
        (http_status >= 400 || zcrm_json_string_is(&r->fields.status, "error")))
        r->kind = ZCRM_REPLY_FLAT;
}

static int id_is(const zcrm_json_value *id, const char *s, size_t len)
{
    char buf[64];
    const char *text;
    long n = zcrm_reply_text(id, buf, sizeof buf, &text);
    return n >= 0 && (size_t)n == len && memcmp(text, s, len) == 0;
}

void zcrm_reply_match(const zcrm_reply *r, const char *const *ids, const size_t *lens, size_t n,
                      zcrm_reply_fields *answer)
{
    const char *pos = NULL;
    zcrm_json_value e;
    zcrm_reply_fields f;
    size_t i, j;
    int loose = 0;
    for (i = 0; i < n; i++) answer[i].table = 0;
    if (r->kind != ZCRM_REPLY_DATA || r->data.type != ZCRM_JSON_ARRAY) return;

    /* First the entries that name an id: the first to name it claims it. */
    for (i = 0; zcrm_json_next(&r->data, &pos, NULL, &e); i++) {
        zcrm_reply_fields_of(&e, &f);
        if (!f.table) continue;
        if (!has_text(&f.id)) {
            loose = 1;
            continue;
        }
        if (i < n && id_is(&f.id, ids[i], lens[i])) {
            j = i;
        } else {
            for (j = 0; j < n && !id_is(&f.id, ids[j], lens[j]); j++) {}
            if (j == n) continue; /* an id that was not sent */
        }
        if (!answer[j].table) answer[j] = f;
    }
    /* Then entries without an id answer the id at their position, if still open, but
     * only when there is one element per id. */
    if (!loose || i != n) return;
    pos = NULL;
    for (i = 0; zcrm_json_next(&r->data, &pos, NULL, &e); i++) {
        zcrm_reply_fields_of(&e, &f);
        if (f.table && !has_text(&f.id) && !answer[i].table) answer[i] = f;
    }
}
