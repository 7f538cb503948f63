/* zcrm_json.h - a validating JSON scanner that reads in place: no allocation, no Lua.
 * Enough to read Zoho's answers: spans into the body, iteration over objects and arrays,
 * string unescaping. RFC 8259 syntax; nesting deeper than ZCRM_JSON_MAX_DEPTH is refused. */
#ifndef ZCRM_JSON_H
#define ZCRM_JSON_H

#include <stddef.h>

#define ZCRM_JSON_MAX_DEPTH 64

typedef enum {
    ZCRM_JSON_INVALID = 0,
    ZCRM_JSON_OBJECT, ZCRM_JSON_ARRAY, ZCRM_JSON_STRING, ZCRM_JSON_NUMBER,
    ZCRM_JSON_TRUE, ZCRM_JSON_FALSE, ZCRM_JSON_NULL
} zcrm_json_type;

/* One value in the text: [start, end). For a string, the span is inside the quotes and
 * `escaped` says whether it holds backslash escapes (see zcrm_json_unescape). */
typedef struct {
    zcrm_json_type type;
    const char *start, *end;
    int escaped;
} zcrm_json_value;

/* Skips whitespace. */
const char *zcrm_json_ws(const char *p, const char *end);

/* Checks that [p, end) is exactly one JSON value with optional whitespace around it. */
int zcrm_json_document(const char *p, const char *end, zcrm_json_value *v);

/* One-pass reading: a cursor walks an object or array, checking as it goes; each
 * member's value is then either taken whole (zcrm_json_take: checked, and its extent
 * known) or entered (zcrm_json_enter) to walk its own members. */
typedef struct {
    const char *p, *end, *start; /* position; end of text; the opening bracket */
    char close;                  /* '}' or ']' */
    int depth, members;
} zcrm_json_cursor;

/* Opens a cursor on the object or array at p (after whitespace). 0 when there is none. */
int zcrm_json_open(zcrm_json_cursor *c, const char *p, const char *end, int depth);

/* Moves to the next member: 1 with c->p at its value (and *key set, for objects); 0
 * after the closing bracket; -1 on a syntax error. */
int zcrm_json_step(zcrm_json_cursor *c, zcrm_json_value *key);

/* Takes the value at c->p whole, checked, into *v. 0 on a syntax error. */
int zcrm_json_take(zcrm_json_cursor *c, zcrm_json_value *v);

/* Opens child on the container at parent's position; 0 when the value is not one.
 * Walk child to its end (zcrm_json_step returns 0), then zcrm_json_leave. */
int zcrm_json_enter(const zcrm_json_cursor *parent, zcrm_json_cursor *child);

/* Continues parent after child's closing bracket; *v (if not NULL) becomes the child's
 * whole value. */
void zcrm_json_leave(zcrm_json_cursor *parent, const zcrm_json_cursor *child, zcrm_json_value *v);

/* Iterates over an object or array of a checked document (zcrm_json_document or
 * the cursor functions checked it; it is not checked again): *pos starts at NULL;
 * each call sets *key (for objects; NULL allowed for arrays) and *v to the next member
 * and returns 1, or returns 0 at the end. */
int zcrm_json_next(const zcrm_json_value *container, const char **pos,
                   zcrm_json_value *key, zcrm_json_value *v);

/* Decodes the string value s into out (at least s->end - s->start bytes: decoding
 * never grows a string), UTF-8 for \u escapes (a lone surrogate becomes U+FFFD).
 * Returns the decoded length. */
size_t zcrm_json_unescape(const zcrm_json_value *s, char *out);

/* True when the string value s decodes to the n bytes of lit. */
int zcrm_json_string_is_n(const zcrm_json_value *s, const char *lit, size_t n);

/* The same for a string literal, its length known at compile time (readers compare
 * every key of every entry: no strlen per comparison). */
#define zcrm_json_string_is(s, lit) zcrm_json_string_is_n((s), "" lit, sizeof(lit) - 1)

#endif
