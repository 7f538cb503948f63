/* url_fuzz.c - libFuzzer harness for csrc/zcrm_url.[ch]: the validators and the
 * delink URL builder.
 *
 * Input: byte 0 gives the number of ids (0..127, so past the limit of 100 too); then
 * come base URL, version, module, record, related list and the ids, each as a length
 * byte followed by that many bytes (fewer, or none, once the input runs out). Each
 * part is copied into a buffer of its own exact size, so a read past a part's length
 * is an ASan error. Every validator also sees the whole input.
 *
 * Invariants (a failure aborts, which libFuzzer reports as a crash):
 *   - the name, id, version and token validators agree with reference versions
 *     written here independently of zcrm_url.c; names, ids and versions never
 *     accept CR, LF, NUL, space, '/', '?', '#', '&' or '%'; tokens never CR, LF,
 *     NUL, space, another control byte or a non-ASCII byte;
 *   - an accepted URL has an http(s) scheme, no user info, no space, control, '#'
 *     or non-ASCII byte; plain http only to a loopback host; an accepted base URL
 *     has no path, query or fragment and is also accepted as a full URL;
 *   - the builder succeeds exactly when every part is valid and there are 1..100
 *     ids; its URL is the parts joined as documented (compared with one assembled
 *     here), NUL-terminated, shorter than ZCRM_URL_MAX, made only of the bytes
 *     [A-Za-z0-9_.,:/?=[]-], and passes zcrm_check_url as a full URL;
 *   - a refusal sets ZCRM_EINVAL and a non-empty, terminated message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "zcrm_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "url_fuzz: invariant failed at line %d: %s\n", __LINE__, #cond); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

#define MAX_IDS 127

static const char ALPHA[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
static const char DIGITS[] = "0123456789";
static const char URL_BYTES[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.,:/?=[]-";
static const char NEVER_IN_PARTS[] = "\r\n \t/?#&%"; /* and NUL, checked apart */

/* ---- reference validators ------------------------------------------------------ */

static int in(unsigned char c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}

static int all_in(const char *s, size_t len, const char *set)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (!in((unsigned char)s[i], set)) return 0;
    return 1;
}

static int has_any(const char *s, size_t len, const char *set)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (s[i] == '\0' || in((unsigned char)s[i], set)) return 1;
    return 0;
}

static int ref_api_name(const char *s, size_t len)
{
    if (len < 1 || len > 100 || !in((unsigned char)s[0], ALPHA)) return 0;
    return all_in(s + 1, len - 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_");
}

static int ref_id(const char *s, size_t len)
{
    return len >= 1 && len <= 19 && all_in(s, len, DIGITS);
}

/* v, digits, then optionally one dot and digits; at most 15 bytes. */
static int ref_version(const char *s, size_t len)
{
    const char *dot;
    size_t left;
    if (len < 2 || len > 15 || s[0] != 'v') return 0;
    dot = memchr(s + 1, '.', len - 1);
    if (dot == NULL) return all_in(s + 1, len - 1, DIGITS);
    left = (size_t)(dot - (s + 1));
    return left > 0 && all_in(s + 1, left, DIGITS) && len - 2 - left > 0 &&
           all_in(dot + 1, len - 2 - left, DIGITS);
}

static int ref_token(const char *s, size_t len)
{
    size_t i;
    if (len < 1 || len > 4096) return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
    return 1;
}

static int lower(int c)
{
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static int starts_nocase(const char *s, size_t len, const char *p)
{
    size_t i, n = strlen(p);
    if (len < n) return 0;
    for (i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != p[i]) return 0;
    return 1;
}

/* localhost (any case), [::1], or 127.a.b.c with 1..3 digits each, at most 255. */
static int ref_loopback(const char *h, size_t len)
{
    int part;
    if (len == 9 && starts_nocase(h, len, "localhost")) return 1;
    if (len == 5 && memcmp(h, "[::1]", 5) == 0) return 1;
    for (part = 0; part < 4; part++) {
        size_t digits = 0;
        unsigned v = 0;
        while (digits < len && digits < 3 && in((unsigned char)h[digits], DIGITS))
            v = v * 10 + (unsigned)(h[digits++] - '0');
        if (digits == 0 || v > 255 || (part == 0 && v != 127)) return 0;
        h += digits;
        len -= digits;
        if (part < 3) {
            if (len == 0 || h[0] != '.') return 0;
            h++;
            len--;
        }
    }
    return len == 0;
}

/* Properties of a URL zcrm_check_url accepted. */
static void check_accepted_url(const char *url, size_t len, int allow_path)
{
    size_t i, start, auth_end, host_end;
    int https = starts_nocase(url, len, "https://");

    CHECK(https || starts_nocase(url, len, "http://"));
    start = https ? 8 : 7;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        CHECK(c > 0x20 && c < 0x7f && c != '#');
    }
    auth_end = start;
    while (auth_end < len && url[auth_end] != '/') auth_end++;
    CHECK(auth_end > start);
    /* No user info, nothing but host characters and a port in the authority. */
    CHECK(all_in(url + start, auth_end - start, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-:[]"));
    if (url[start] == '[') {
        const char *close = memchr(url + start, ']', auth_end - start);
        CHECK(close != NULL);
        host_end = (size_t)(close - url) + 1;
    } else {
        const char *colon = memchr(url + start, ':', auth_end - start);
        host_end = colon ? (size_t)(colon - url) : auth_end;
    }
    CHECK(host_end > start);
    if (!https) CHECK(ref_loopback(url + start, host_end - start));
    if (!allow_path) {
        CHECK(len <= ZCRM_MAX_BASE_URL);
        CHECK(auth_end == len || auth_end + 1 == len); /* at most a trailing '/' */
        CHECK(zcrm_check_url(url, len, 1, NULL) == ZCRM_OK);
    }
}

static void check_refusal(zcrm_code rc, const zcrm_err *err)
{
    CHECK(rc == ZCRM_EINVAL && err->code == ZCRM_EINVAL);
    CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL && err->msg[0] != '\0');
}

/* Every validator on one string. */
static void check_validators(const char *s, size_t len)
{
    int name = zcrm_valid_api_name(s, len), id = zcrm_valid_id(s, len);
    int version = zcrm_valid_version(s, len), token = zcrm_valid_token(s, len);
    zcrm_err err;
    zcrm_code rc;

    CHECK(name == ref_api_name(s, len));
    CHECK(id == ref_id(s, len));
    CHECK(version == ref_version(s, len));
    CHECK(token == ref_token(s, len));
    if (has_any(s, len, NEVER_IN_PARTS)) CHECK(!name && !id && !version);
    if (has_any(s, len, "\r\n ")) CHECK(!token);

    memset(&err, 0, sizeof err);
    rc = zcrm_check_url(s, len, 0, &err);
    if (rc == ZCRM_OK) check_accepted_url(s, len, 0); else check_refusal(rc, &err);
    memset(&err, 0, sizeof err);
    rc = zcrm_check_url(s, len, 1, &err);
    if (rc == ZCRM_OK) check_accepted_url(s, len, 1); else check_refusal(rc, &err);
}

/* ---- input ---------------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len;
} part;

/* The next part: a length byte, then up to that many bytes, in a buffer of its own. */
static part take(const uint8_t **p, size_t *left)
{
    part out;
    size_t want = 0;
    if (*left > 0) {
        want = **p;
        (*p)++;
        (*left)--;
    }
    out.len = want < *left ? want : *left;
    out.s = malloc(out.len ? out.len : 1);
    if (out.s == NULL) abort();
    if (out.len) memcpy(out.s, *p, out.len);
    *p += out.len;
    *left -= out.len;
    return out;
}

static char *append(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size, n = 0, i, len;
    part base, version, module, record, related, ids[MAX_IDS];
    const char *id_ptrs[MAX_IDS];
    size_t id_lens[MAX_IDS];
    zcrm_delink_target t;
    zcrm_err err;
    char *out;
    int valid;

    {   /* the whole input, in a buffer of its exact size */
        char *whole = malloc(size ? size : 1);
        if (whole == NULL) abort();
        if (size) memcpy(whole, data, size);
        check_validators(whole, size);
        free(whole);
    }

    if (left > 0) {
        n = *p++ % (MAX_IDS + 1);
        left--;
    }
    base = take(&p, &left);
    version = take(&p, &left);
    module = take(&p, &left);
    record = take(&p, &left);
    related = take(&p, &left);
    for (i = 0; i < n; i++) {
        ids[i] = take(&p, &left);
        id_ptrs[i] = ids[i].s;
        id_lens[i] = ids[i].len;
    }

    check_validators(base.s, base.len);
    check_validators(version.s, version.len);
    check_validators(module.s, module.len);
    check_validators(record.s, record.len);
    check_validators(related.s, related.len);
    for (i = 0; i < n; i++) check_validators(ids[i].s, ids[i].len);

    t.base = base.s; t.base_len = base.len;
    t.version = version.s; t.version_len = version.len;
    t.module = module.s; t.module_len = module.len;
    t.record = record.s; t.record_len = record.len;
    t.related = related.s; t.related_len = related.len;

    valid = zcrm_check_url(base.s, base.len, 0, NULL) == ZCRM_OK && ref_version(version.s, version.len) &&
            ref_api_name(module.s, module.len) && ref_id(record.s, record.len) &&
            ref_api_name(related.s, related.len);
    memset(&err, 0, sizeof err);
    CHECK((zcrm_check_target(&t, &err) == ZCRM_OK) == valid);
    if (!valid) check_refusal(err.code, &err);
    valid = valid && n >= 1 && n <= ZCRM_MAX_IDS_PER_CALL;
    for (i = 0; i < n; i++) valid = valid && ref_id(ids[i].s, ids[i].len);

    out = malloc(ZCRM_URL_MAX); /* exactly what the builder may use */
    if (out == NULL) abort();
    memset(&err, 0, sizeof err);
    len = zcrm_url_delink(out, &t, id_ptrs, id_lens, n, &err);
    CHECK((len > 0) == valid);
    if (len == 0) {
        check_refusal(err.code, &err);
    } else {
        CHECK(len < ZCRM_URL_MAX);
        CHECK(out[len] == '\0' && strlen(out) == len);
        CHECK(all_in(out, len, URL_BYTES));
        CHECK(zcrm_check_url(out, len, 1, NULL) == ZCRM_OK);

        /* The same URL, assembled here from the parts. */
        size_t base_len = base.len;
        char *want = malloc(ZCRM_URL_MAX), *w;
        if (want == NULL) abort();
        if (base.s[base_len - 1] == '/') base_len--;
        w = append(want, base.s, base_len);
        w = append(w, "/crm/", 5);
        w = append(w, version.s, version.len);
        w = append(w, "/", 1);
        w = append(w, module.s, module.len);
        w = append(w, "/", 1);
        w = append(w, record.s, record.len);
        w = append(w, "/", 1);
        w = append(w, related.s, related.len);
        w = append(w, n == 1 ? "/" : "?ids=", n == 1 ? 1 : 5);
        for (i = 0; i < n; i++) {
            if (i > 0) w = append(w, ",", 1);
            w = append(w, ids[i].s, ids[i].len);
        }
        CHECK((size_t)(w - want) == len && memcmp(want, out, len) == 0);
        free(want);
    }
    free(out);

    free(base.s);
    free(version.s);
    free(module.s);
    free(record.s);
    free(related.s);
    for (i = 0; i < n; i++) free(ids[i].s);
    return 0;
}
