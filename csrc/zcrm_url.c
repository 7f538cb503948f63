/* zcrm_url.c - validation and the delink URL builder (see zcrm_url.h). */
#include <string.h>
#include "zcrm_url.h"

static int is_alpha(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'); }
static int is_digit(char c) { return c >= '0' && c <= '9'; }

int zcrm_valid_api_name(const char *s, size_t len)
{
    size_t i;
    if (len == 0 || len > ZCRM_MAX_API_NAME || !is_alpha(s[0])) return 0;
    for (i = 1; i < len; i++)
        if (!is_alpha(s[i]) && !is_digit(s[i]) && s[i] != '_') return 0;
    return 1;
}

static int all_digits(const char *s, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (!is_digit(s[i])) return 0;
    return 1;
}

int zcrm_valid_id(const char *s, size_t len)
{
    return len >= 1 && len <= ZCRM_MAX_ID_DIGITS && all_digits(s, len);
}

int zcrm_valid_version(const char *s, size_t len)
{
    size_t i = 1, start;
    if (len < 2 || len > ZCRM_MAX_VERSION || s[0] != 'v') return 0;
    start = i;
    while (i < len && is_digit(s[i])) i++;
    if (i == start) return 0;
    if (i == len) return 1;
    if (s[i++] != '.') return 0;
    start = i;
    while (i < len && is_digit(s[i])) i++;
    return i == len && i > start;
}

int zcrm_valid_token(const char *s, size_t len)
{
    size_t i;
    if (len == 0 || len > ZCRM_MAX_TOKEN) return 0;
    for (i = 0; i < len; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f) return 0;
    return 1;
}

/* ---- base URL ------------------------------------------------------------------ */

static int prefix_nocase(const char *s, size_t len, const char *p)
{
    size_t i, n = strlen(p);
    if (len < n) return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
        if (c != p[i]) return 0;
    }
    return 1;
}

/* 127.a.b.c with each part 0..255 */
static int is_loopback_ipv4(const char *h, size_t len)
{
    size_t i = 0;
    int part;
    for (part = 0; part < 4; part++) {
        unsigned v = 0;
        size_t start = i;
        while (i < len && is_digit(h[i]) && i - start < 3) v = v * 10 + (unsigned)(h[i++] - '0');
        if (i == start || v > 255 || (part == 0 && v != 127)) return 0;
        if (part < 3 && (i >= len || h[i++] != '.')) return 0;
    }
    return i == len;
}

static int is_loopback(const char *h, size_t len)
{
    return (len == 9 && prefix_nocase(h, len, "localhost")) ||
           (len == 5 && memcmp(h, "[::1]", 5) == 0) || is_loopback_ipv4(h, len);
}

zcrm_code zcrm_check_url(const char *url, size_t len, int allow_path, zcrm_err *err)
{
    size_t i, host_start, host_end;
    int https;

    if (len == 0) return zcrm_fail(err, ZCRM_EINVAL, "URL is empty");
    if (!allow_path && len > ZCRM_MAX_BASE_URL)
        return zcrm_fail(err, ZCRM_EINVAL, "URL is longer than %d bytes", ZCRM_MAX_BASE_URL);
    if (prefix_nocase(url, len, "https://")) { https = 1; i = 8; }
    else if (prefix_nocase(url, len, "http://")) { https = 0; i = 7; }
    else return zcrm_fail(err, ZCRM_EINVAL, "URL must start with https://");

    host_start = i;
    if (i < len && url[i] == '[') { /* IPv6 literal */
        while (i < len && url[i] != ']') {
            char c = url[i];
            if (i > host_start && !is_digit(c) && !(c >= 'a' && c <= 'f') &&
                !(c >= 'A' && c <= 'F') && c != ':' && c != '.')
                return zcrm_fail(err, ZCRM_EINVAL, "URL has an invalid IPv6 host");
            i++;
        }
        if (i == len || i == host_start + 1)
            return zcrm_fail(err, ZCRM_EINVAL, "URL has an empty or unterminated IPv6 host");
        i++;
    } else {
        while (i < len && (is_alpha(url[i]) || is_digit(url[i]) || url[i] == '.' || url[i] == '-'))
            i++;
    }
    host_end = i;
    if (host_end == host_start) return zcrm_fail(err, ZCRM_EINVAL, "URL has no host");

    if (i < len && url[i] == ':') { /* port */
        unsigned long port = 0;
        size_t start = ++i;
        while (i < len && is_digit(url[i]) && i - start < 5) port = port * 10 + (unsigned)(url[i++] - '0');
        if (i == start || port == 0 || port > 65535)
            return zcrm_fail(err, ZCRM_EINVAL, "URL has an invalid port");
    }

    if (i < len && url[i] != '/')
        return zcrm_fail(err, ZCRM_EINVAL, "URL may hold only scheme, host and port before its path");
    if (!allow_path && !(i == len || (i + 1 == len && url[i] == '/')))
        return zcrm_fail(err, ZCRM_EINVAL, "URL must not have a path, query or fragment");
    for (; i < len; i++) {
        unsigned char c = (unsigned char)url[i];
        if (c <= 0x20 || c >= 0x7f || c == '#')
            return zcrm_fail(err, ZCRM_EINVAL, "URL has a space, control, '#' or non-ASCII byte");
    }

    if (!https && !is_loopback(url + host_start, host_end - host_start))
        return zcrm_fail(err, ZCRM_EINVAL, "URL must use https (plain http only to a loopback address)");
    return ZCRM_OK;
}

/* ---- delink URL ---------------------------------------------------------------- */

zcrm_code zcrm_check_target(const zcrm_delink_target *t, zcrm_err *err)
{
    zcrm_code rc = zcrm_check_url(t->base, t->base_len, 0, err);
    if (rc != ZCRM_OK) return rc;
    if (!zcrm_valid_version(t->version, t->version_len))
        return zcrm_fail(err, ZCRM_EINVAL, "version is not like \"v2.1\" or \"v8\"");
    if (!zcrm_valid_api_name(t->module, t->module_len))
        return zcrm_fail(err, ZCRM_EINVAL, "module is not an API name (letters, digits, _; a letter first)");
    if (!zcrm_valid_id(t->record, t->record_len))
        return zcrm_fail(err, ZCRM_EINVAL, "record id is not 1 to %d digits", ZCRM_MAX_ID_DIGITS);
    if (!zcrm_valid_api_name(t->related, t->related_len))
        return zcrm_fail(err, ZCRM_EINVAL, "related list is not an API name (letters, digits, _; a letter first)");
    return ZCRM_OK;
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

size_t zcrm_url_delink(char *out, const zcrm_delink_target *t,
                       const char *const *ids, const size_t *lens, size_t n, zcrm_err *err)
{
    char *p = out;
    size_t i, base_len = t->base_len;

    if (zcrm_check_target(t, err) != ZCRM_OK) return 0;
    if (n == 0 || n > ZCRM_MAX_IDS_PER_CALL) {
        zcrm_fail(err, ZCRM_EINVAL, "a delink call takes 1 to %d ids, not %zu", ZCRM_MAX_IDS_PER_CALL, n);
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!zcrm_valid_id(ids[i], lens[i])) {
            zcrm_fail(err, ZCRM_EINVAL, "related id is not 1 to %d digits", ZCRM_MAX_ID_DIGITS);
            return 0;
        }
    }
    if (t->base[base_len - 1] == '/') base_len--;

    /* Every part is length-checked above, so the result fits in ZCRM_URL_MAX. */
    p = put(p, t->base, base_len);
    p = put(p, "/crm/", 5);
    p = put(p, t->version, t->version_len);
    *p++ = '/';
    p = put(p, t->module, t->module_len);
    *p++ = '/';
    p = put(p, t->record, t->record_len);
    *p++ = '/';
    p = put(p, t->related, t->related_len);
    if (n == 1) {
        *p++ = '/';
        p = put(p, ids[0], lens[0]);
    } else {
        p = put(p, "?ids=", 5);
        for (i = 0; i < n; i++) {
            if (i > 0) *p++ = ',';
            p = put(p, ids[i], lens[i]);
        }
    }
    *p = '\0';
    return (size_t)(p - out);
}
