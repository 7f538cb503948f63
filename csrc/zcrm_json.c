/* zcrm_json.c - see zcrm_json.h. The checker is recursive with a depth bound, so a
 * hostile body cannot exhaust the C stack. */
#include <string.h>
#include "zcrm_json.h"

static const char *value_at(const char *p, const char *end, zcrm_json_value *v, int depth);

const char *zcrm_json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Bytes a string scan must look at: the quote, a backslash, control bytes. */
static const unsigned char string_stop[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    ['"'] = 1, ['\\'] = 1,
};

/* p is after the opening quote; returns the position of the closing quote. */
static const char *string_end(const char *p, const char *end, int *escaped)
{
    *escaped = 0;
    while (p < end) {
        unsigned char c;
        while (p < end && !string_stop[(unsigned char)*p]) p++;
        if (p >= end) break;
        c = (unsigned char)*p;
        if (c == '"') return p;
        if (c < 0x20) return NULL;
        if (c == '\\') {
            *escaped = 1;
            if (++p >= end) return NULL;
            if (*p == 'u') {
                int i;
                if (end - p < 5) return NULL;
                for (i = 1; i <= 4; i++)
                    if (hex(p[i]) < 0) return NULL;
                p += 4;
            } else if (!strchr("\"\\/bfnrt", *p) || *p == '\0') {
                return NULL;
            }
        }
        p++;
    }
    return NULL;
}

static const char *number_end(const char *p, const char *end)
{
    if (p < end && *p == '-') p++;
    if (p >= end) return NULL;
    if (*p == '0') {
        p++;
    } else if (is_digit(*p)) {
        while (p < end && is_digit(*p)) p++;
    } else {
        return NULL;
    }
    if (p < end && *p == '.') {
        if (++p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || !is_digit(*p)) return NULL;
        while (p < end && is_digit(*p)) p++;
    }
    return p;
}

static const char *literal(const char *p, const char *end, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(end - p) < n || memcmp(p, word, n) != 0) return NULL;
    return p + n;
}

/* p is at '{' or '['. Members are checked by value_at with depth + 1. */
static const char *container_end(const char *p, const char *end, int is_object, int depth)
{
    char close = is_object ? '}' : ']';
    zcrm_json_value v;
    p = zcrm_json_ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
        if (is_object) {
            p = zcrm_json_ws(p, end);
            if (p >= end || *p != '"') return NULL;
            p = value_at(p, end, &v, depth + 1);
            if (!p) return NULL;
            p = zcrm_json_ws(p, end);
            if (p >= end || *p != ':') return NULL;
            p++;
        }
        p = value_at(p, end, &v, depth + 1);
        if (!p) return NULL;
        p = zcrm_json_ws(p, end);
        if (p >= end) return NULL;
        if (*p == close) return p + 1;
        if (*p != ',') return NULL;
        p++;
    }
}

static const char *value_at(const char *p, const char *end, zcrm_json_value *v, int depth)
{
    const char *after = NULL;
    p = zcrm_json_ws(p, end);
    v->type = ZCRM_JSON_INVALID;
    v->escaped = 0;
    if (p >= end || depth > ZCRM_JSON_MAX_DEPTH) return NULL;
    v->start = p;
    switch (*p) {
    case '{':
    case '[':
        v->type = *p == '{' ? ZCRM_JSON_OBJECT : ZCRM_JSON_ARRAY;
        after = container_end(p, end, *p == '{', depth);
        break;
    case '"':
        v->type = ZCRM_JSON_STRING;
        v->start = p + 1;
        after = string_end(p + 1, end, &v->escaped);
        if (after) {
            v->end = after;
            return after + 1;
        }
        break;
    case 't': v->type = ZCRM_JSON_TRUE; after = literal(p, end, "true"); break;
    case 'f': v->type = ZCRM_JSON_FALSE; after = literal(p, end, "false"); break;
    case 'n': v->type = ZCRM_JSON_NULL; after = literal(p, end, "null"); break;
    default:
        v->type = ZCRM_JSON_NUMBER;
        after = number_end(p, end);
    }
    if (!after) {
        v->type = ZCRM_JSON_INVALID;
        return NULL;
    }
    v->end = after;
    return after;
}

int zcrm_json_document(const char *p, const char *end, zcrm_json_value *v)
{
    p = value_at(p, end, v, 0);
    return p != NULL && zcrm_json_ws(p, end) == end;
}

int zcrm_json_open(zcrm_json_cursor *c, const char *p, const char *end, int depth)
{
    p = zcrm_json_ws(p, end);
    if (p >= end || (*p != '{' && *p != '[') || depth > ZCRM_JSON_MAX_DEPTH) return 0;
    c->start = p;
    c->close = *p == '{' ? '}' : ']';
    c->p = p + 1;
    c->end = end;
    c->depth = depth;
    c->members = 0;
    return 1;
}

int zcrm_json_step(zcrm_json_cursor *c, zcrm_json_value *key)
{
    const char *p = zcrm_json_ws(c->p, c->end);
    if (p >= c->end) return -1;
    if (*p == c->close) {
        c->p = p + 1;
        return 0;
    }
    if (c->members > 0) {
        if (*p != ',') return -1;
        p = zcrm_json_ws(p + 1, c->end);
    }
    if (c->close == '}') {
        zcrm_json_value k;
        if (p >= c->end || *p != '"') return -1;
        p = value_at(p, c->end, &k, c->depth + 1);
        if (!p) return -1;
        p = zcrm_json_ws(p, c->end);
        if (p >= c->end || *p != ':') return -1;
        p++;
        if (key) *key = k;
    } else if (key) {
        key->type = ZCRM_JSON_INVALID;
    }
    c->members++;
    c->p = p;
    return 1;
}

int zcrm_json_take(zcrm_json_cursor *c, zcrm_json_value *v)
{
    const char *p = value_at(c->p, c->end, v, c->depth + 1);
    if (!p) return 0;
    c->p = p;
    return 1;
}

int zcrm_json_enter(const zcrm_json_cursor *parent, zcrm_json_cursor *child)
{
    return zcrm_json_open(child, parent->p, parent->end, parent->depth + 1);
}

void zcrm_json_leave(zcrm_json_cursor *parent, const zcrm_json_cursor *child, zcrm_json_value *v)
{
    parent->p = child->p;
    if (v) {
        v->type = child->close == '}' ? ZCRM_JSON_OBJECT : ZCRM_JSON_ARRAY;
        v->start = child->start;
        v->end = child->p;
        v->escaped = 0;
    }
}

/* The bytes a scan over a checked container stops at. */
static const unsigned char structural[256] = {
    ['"'] = 1, ['{'] = 1, ['['] = 1, ['}'] = 1, [']'] = 1,
};

/* The value at p of a checked document: reads its extent without checking it again,
 * so iterating over a document costs one pass, not one per level. */
static const char *checked_value_at(const char *p, const char *end, zcrm_json_value *v)
{
    const char *q;
    int depth = 0;
    p = zcrm_json_ws(p, end);
    v->start = p;
    v->escaped = 0;
    switch (*p) {
    case '"':
        v->type = ZCRM_JSON_STRING;
        v->start = q = p + 1;
        while (q < end && *q != '"') {
            if (*q == '\\') {
                v->escaped = 1;
                q++;
            }
            q++;
        }
        v->end = q;
        return q + 1;
    case '{':
    case '[':
        v->type = *p == '{' ? ZCRM_JSON_OBJECT : ZCRM_JSON_ARRAY;
        for (q = p; q < end; q++) {
            while (q < end && !structural[(unsigned char)*q]) q++;
            if (q >= end) break;
            if (*q == '"') {
                for (q++; q < end && *q != '"'; q++)
                    if (*q == '\\') q++;
            } else if (*q == '{' || *q == '[') {
                depth++;
            } else if (--depth == 0) { /* '}' or ']' */
                break;
            }
        }
        v->end = q + 1;
        return v->end;
    case 't': v->type = ZCRM_JSON_TRUE; v->end = p + 4; return v->end;
    case 'f': v->type = ZCRM_JSON_FALSE; v->end = p + 5; return v->end;
    case 'n': v->type = ZCRM_JSON_NULL; v->end = p + 4; return v->end;
    default:
        v->type = ZCRM_JSON_NUMBER;
        for (q = p; q < end && strchr("+-.eE0123456789", *q) && *q != '\0'; q++) {}
        v->end = q;
        return q;
    }
}

int zcrm_json_next(const zcrm_json_value *c, const char **pos, zcrm_json_value *key, zcrm_json_value *v)
{
    const char *p = *pos ? *pos : c->start + 1;
    const char *end = c->end - 1; /* the closing bracket */
    zcrm_json_value k;
    p = zcrm_json_ws(p, end);
    if (p < end && *p == ',') p = zcrm_json_ws(p + 1, end);
    if (p >= end) return 0;
    if (c->type == ZCRM_JSON_OBJECT) {
        p = checked_value_at(p, end, &k);
        if (key) *key = k;
        p = zcrm_json_ws(p, end) + 1; /* the ':' */
    } else if (key) {
        key->type = ZCRM_JSON_INVALID;
    }
    *pos = checked_value_at(p, end, v);
    return 1;
}

static size_t put_utf8(char *out, unsigned long cp)
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static unsigned long hex4(const char *p)
{
    return (unsigned long)(hex(p[0]) << 12 | hex(p[1]) << 8 | hex(p[2]) << 4 | hex(p[3]));
}

size_t zcrm_json_unescape(const zcrm_json_value *s, char *out)
{
    const char *p = s->start, *end = s->end;
    size_t o = 0;
    if (!s->escaped) {
        memcpy(out, p, (size_t)(end - p));
        return (size_t)(end - p);
    }
    while (p < end) {
        if (*p != '\\') { out[o++] = *p++; continue; }
        p++;
        switch (*p) {
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'u': {
            unsigned long cp = hex4(p + 1);
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && end - p >= 7 && p[1] == '\\' && p[2] == 'u') {
                unsigned long lo = hex4(p + 3);
                if (lo >= 0xDC00 && lo <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* lone surrogate */
            o += put_utf8(out + o, cp); /* at most 4 bytes for 6 or 12 read */
            break;
        }
        default: out[o++] = *p; /* " \ / */
        }
        p++;
    }
    return o;
}

int zcrm_json_string_is_n(const zcrm_json_value *s, const char *lit, size_t n)
{
    char buf[64];
    size_t raw = (size_t)(s->end - s->start);
    if (s->type != ZCRM_JSON_STRING) return 0;
    if (!s->escaped) return raw == n && memcmp(s->start, lit, n) == 0;
    if (raw > sizeof buf) return 0; /* an escape is at least 2 bytes for 1: too long for lit */
    return zcrm_json_unescape(s, buf) == n && memcmp(buf, lit, n) == 0;
}
