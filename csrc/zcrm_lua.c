/* zcrm_lua.c - the Lua glue: the only file that includes lua.h. Exposes the C core as
 * the module "zcrm.core"; the public API is lua/zcrm/init.lua.
 *
 *   core.plan(api_domain, version, module, record_id, related_list, ids)
 *       -> {ids = {canonical id per caller position},
 *           batches = {{url=, ids={...}, first=caller position of ids[1]}, ...},
 *           results = {} sized for the caller's positions, and either dense = true (no
 *           duplicates: batch b answers positions first..first+#ids-1) or outcome = {}
 *           sized for the distinct ids}
 *       |  nil, "INVALID_ARGUMENT", message
 *   core.check_url(url) -> true | nil, message        (a base URL: api_domain, accounts)
 *   core.check_token(token) -> true | nil, message
 *   core.check_version(version) -> true | nil, message
 *   core.session{timeout=, connect_timeout=, ca_file=, max_body=, slots=1} -> session
 *   session:request(method, url, token|nil, body|nil, content_type|nil)
 *       -> status, body[, retry_after] | nil, code, message  (one exchange, start to end)
 *   session:start(method, url, token|nil, body|nil, content_type|nil)
 *       -> slot | nil, code, message                     (up to `slots` in flight)
 *   session:wait([seconds]) -> slot, status, body[, retry_after]
 *       | slot, nil, code, message[, unsent] | nothing (none in flight, or none finished
 *       in time); retry_after: seconds from a Retry-After header; unsent: "connect" or
 *       "tls" when the exchange cannot have reached the server
 *   session:poll() -> the same, without waiting: nothing when none has finished yet
 *   session:in_flight() -> number
 *   session:close()
 *   core.read(ids, http_status, body, out, error_mt[, offset[, secrets]])
 *       -> whole-request error | nil
 *       reads one delink answer: out[offset + i] (or out[id] without offset) = the result
 *       entry of ids[i] (an error entry, with error_mt, for an id the body does not
 *       account for); every string from the body has each of secrets (strings of 8
 *       bytes or more) replaced by "<redacted>"
 *   core.now() -> seconds (monotonic); core.sleep(seconds)
 *   core.trap_interrupts() -> true | nil, message  (SIGINT/SIGTERM set a flag instead)
 *   core.interrupted() -> signal number | false      (for the command line tool)
 *
 * Wrong argument types raise; bad values return nil, code, message. No C globals:
 * all state lives in session userdata. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <lua.h>
#include <lauxlib.h>
#include "zcrm_compat.h"
#include "zcrm_batch.h"
#include "zcrm_http.h"
#include "zcrm_reply.h"
#include "zcrm_signal.h"
#include "zcrm_url.h"

#ifndef ZCRM_VERSION
#define ZCRM_VERSION "0.1.0"
#endif
#define ZCRM_EXPORT __attribute__((visibility("default")))
#define SESSION_MT "zcrm.session"
#define SUCCESS_MT "zcrm.success"
#define DEFAULT_MAX_BODY (8u * 1024 * 1024)

static int push_fail(lua_State *L, const zcrm_err *err)
{
    lua_pushnil(L);
    lua_pushstring(L, zcrm_code_name(err->code));
    lua_pushstring(L, err->msg);
    return 3;
}

/* ==== ids ======================================================================== */

/* A short, printable rendering of a bad value for error messages: at most 24 bytes,
 * control and non-ASCII bytes escaped, so a message never carries CR/LF or raw junk. */
static void describe(char *out, size_t size, const char *s, size_t len)
{
    size_t o = 0, i;
    for (i = 0; i < len && o + 6 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 24) { o += (size_t)snprintf(out + o, size - o, "..."); break; }
        if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\x%02X", c);
        else
            out[o++] = (char)c;
    }
    out[o] = '\0';
}

/* Pushes the canonical string of the id at idx, or sets err and pushes nothing.
 * Accepted: a string of 1-19 digits; an integer >= 0 (on Lua 5.1/LuaJIT, whose numbers
 * are doubles: an exact integer no larger than 2^53, so nothing is ever rounded). */
static zcrm_code push_id(lua_State *L, int idx, const char *what, zcrm_err *err)
{
    char shown[128];
    int t = lua_type(L, idx);
    if (t == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (!zcrm_valid_id(s, len)) {
            describe(shown, sizeof shown, s, len);
            return zcrm_fail(err, ZCRM_EINVAL, "%s \"%s\" is not a record id (1 to %d digits)",
                             what, shown, ZCRM_MAX_ID_DIGITS);
        }
        lua_pushvalue(L, idx);
        return ZCRM_OK;
    }
    if (t == LUA_TNUMBER) {
#if LUA_VERSION_NUM >= 503
        if (lua_isinteger(L, idx)) {
            lua_Integer v = lua_tointeger(L, idx);
            if (v < 0)
                return zcrm_fail(err, ZCRM_EINVAL, "%s %lld is negative, not a record id", what, (long long)v);
            lua_pushfstring(L, "%I", (LUAI_UACINT)v);
            return ZCRM_OK;
        }
        return zcrm_fail(err, ZCRM_EINVAL, "%s %.17g is a float, not a record id (give ids as strings)",
                         what, (double)lua_tonumber(L, idx));
#else
        lua_Number d = lua_tonumber(L, idx);
        char buf[32];
        if (!(d >= 0 && d <= 9007199254740992.0 && d == floor(d)))
            return zcrm_fail(err, ZCRM_EINVAL,
                             "%s %.17g is not an integer from 0 to 2^53 (give large ids as strings)", what, (double)d);
        snprintf(buf, sizeof buf, "%.0f", (double)d);
        lua_pushstring(L, buf);
        return ZCRM_OK;
#endif
    }
    return zcrm_fail(err, ZCRM_EINVAL, "%s is a %s, not a record id", what, luaL_typename(L, idx));
}

static void check_string(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TSTRING);
}

/* ==== plan ======================================================================= */

static int l_plan(lua_State *L)
{
    zcrm_err err = {ZCRM_OK, ""};
    zcrm_delink_target target;
    size_t n, i, nunique, b, nbatches;
    int ids_type = lua_type(L, 6), canon, record;
    const char **ptrs;
    size_t *lens, *unique;
    char url[ZCRM_URL_MAX];

    check_string(L, 1);
    check_string(L, 2);
    check_string(L, 3);
    luaL_argcheck(L, lua_type(L, 4) == LUA_TSTRING || lua_type(L, 4) == LUA_TNUMBER, 4,
                  "record id must be a string or an integer");
    check_string(L, 5);
    luaL_argcheck(L, ids_type == LUA_TTABLE || ids_type == LUA_TSTRING || ids_type == LUA_TNUMBER, 6,
                  "ids must be a table, a string or an integer");
    lua_settop(L, 6);

    if (push_id(L, 4, "record id", &err) != ZCRM_OK) return push_fail(L, &err);
    record = lua_gettop(L); /* 7: canonical record id */

    n = ids_type == LUA_TTABLE ? (size_t)lua_rawlen(L, 6) : 1;
    lua_createtable(L, (int)n, 0);
    canon = lua_gettop(L); /* 8: canonical id per caller position; anchors the strings */
    for (i = 0; i < n; i++) {
        int idx = 6;
        if (ids_type == LUA_TTABLE) {
            lua_rawgeti(L, 6, (int)(i + 1));
            idx = lua_gettop(L);
        }
        if (push_id(L, idx, "id", &err) != ZCRM_OK) {
            if (ids_type == LUA_TTABLE) { /* the position, named only now: it costs a printf */
                char what[40];
                snprintf(what, sizeof what, "ids[%zu]", i + 1);
                push_id(L, idx, what, &err);
            }
            return push_fail(L, &err);
        }
        lua_rawseti(L, canon, (int)(i + 1));
        if (ids_type == LUA_TTABLE) lua_pop(L, 1);
    }

    target.base = lua_tolstring(L, 1, &target.base_len);
    target.version = lua_tolstring(L, 2, &target.version_len);
    target.module = lua_tolstring(L, 3, &target.module_len);
    target.record = lua_tolstring(L, record, &target.record_len);
    target.related = lua_tolstring(L, 5, &target.related_len);
    if (zcrm_check_target(&target, &err) != ZCRM_OK) return push_fail(L, &err);

    /* Scratch arrays in Lua-owned memory: freed by the GC even if a later call raises. */
    ptrs = lua_newuserdata(L, (n ? n : 1) * (sizeof *ptrs + 2 * sizeof(size_t)));
    lens = (size_t *)(void *)(ptrs + n);
    unique = lens + n;
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, canon, (int)(i + 1));
        ptrs[i] = lua_tolstring(L, -1, &lens[i]); /* kept alive by the canon table */
        lua_pop(L, 1);
    }
    if (zcrm_dedupe(ptrs, lens, n, unique, &nunique, &err) != ZCRM_OK) return push_fail(L, &err);

    nbatches = zcrm_batch_count(nunique);
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, canon);
    lua_setfield(L, -2, "ids");
    /* Empty tables sized for what the caller fills in, so that 100,000 ids do not
     * cost a chain of rehashes (and their garbage): one outcome per distinct id, and
     * one result per caller position plus the two counts. */
    if (nunique == n) { /* no duplicates: batch b answers caller positions first.. */
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "dense");
    } else {
        lua_createtable(L, 0, (int)nunique);
        lua_setfield(L, -2, "outcome");
    }
    lua_createtable(L, (int)n, 2);
    lua_setfield(L, -2, "results");
    lua_createtable(L, (int)nbatches, 0);
    for (b = 0; b < nbatches; b++) {
        const char *bptrs[ZCRM_MAX_IDS_PER_CALL];
        size_t blens[ZCRM_MAX_IDS_PER_CALL], k, first = b * ZCRM_MAX_IDS_PER_CALL;
        size_t count = nunique - first < ZCRM_MAX_IDS_PER_CALL ? nunique - first : ZCRM_MAX_IDS_PER_CALL;
        size_t url_len;

        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)first + 1);
        lua_setfield(L, -2, "first");
        lua_createtable(L, (int)count, 0);
        for (k = 0; k < count; k++) {
            size_t src = unique[first + k];
            bptrs[k] = ptrs[src];
            blens[k] = lens[src];
            lua_rawgeti(L, canon, (lua_Integer)src + 1); /* the same string, not hashed again */
            lua_rawseti(L, -2, (int)(k + 1));
        }
        lua_setfield(L, -2, "ids");
        url_len = zcrm_url_delink(url, &target, bptrs, blens, count, &err);
        if (url_len == 0) return push_fail(L, &err);
        lua_pushlstring(L, url, url_len);
        lua_setfield(L, -2, "url");
        lua_rawseti(L, -2, (int)(b + 1));
    }
    lua_setfield(L, -2, "batches");
    return 1;
}

/* true, or nil and why: the shape of the check_* functions. */
static int push_check(lua_State *L, int ok, const char *why)
{
    if (!ok) {
        lua_pushnil(L);
        lua_pushstring(L, why);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_check_url(lua_State *L)
{
    zcrm_err err = {ZCRM_OK, ""};
    size_t len;
    const char *url;
    check_string(L, 1);
    url = lua_tolstring(L, 1, &len);
    return push_check(L, zcrm_check_url(url, len, 0, &err) == ZCRM_OK, err.msg);
}

static int l_check_token(lua_State *L)
{
    size_t len;
    const char *tok;
    check_string(L, 1);
    tok = lua_tolstring(L, 1, &len);
    return push_check(L, zcrm_valid_token(tok, len),
                      "access token must be 1 to 4096 printable ASCII bytes without spaces");
}

static int l_check_version(lua_State *L)
{
    size_t len;
    const char *v;
    check_string(L, 1);
    v = lua_tolstring(L, 1, &len);
    return push_check(L, zcrm_valid_version(v, len), "API version must look like \"v2.1\" or \"v8\"");
}

/* ==== session ==================================================================== */

typedef struct {
    zcrm_http *http; /* NULL once closed */
} session;

static session *check_session(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    if (s->http == NULL) luaL_error(L, "zcrm session is closed");
    return s;
}

static long opt_ms(lua_State *L, int t, const char *key, double dflt_s)
{
    double s;
    lua_getfield(L, t, key);
    s = lua_isnil(L, -1) ? dflt_s : (double)luaL_checknumber(L, -1);
    lua_pop(L, 1);
    if (!(s > 0 && s <= 86400)) luaL_error(L, "%s must be a number of seconds in (0, 86400]", key);
    return (long)(s * 1000 + 0.5);
}

static int l_session(lua_State *L)
{
    zcrm_err err = {ZCRM_OK, ""};
    zcrm_http_options opts;
    session *s;

    luaL_checktype(L, 1, LUA_TTABLE);
    opts.timeout_ms = opt_ms(L, 1, "timeout", 30);
    opts.connect_timeout_ms = opt_ms(L, 1, "connect_timeout", 10);
    lua_getfield(L, 1, "max_body");
    if (lua_isnil(L, -1)) {
        opts.max_body = DEFAULT_MAX_BODY;
    } else {
        lua_Number max_body = luaL_checknumber(L, -1);
        if (!(max_body >= 1 && max_body <= 1073741824.0)) luaL_error(L, "max_body must be 1 byte to 1 GiB");
        opts.max_body = (size_t)max_body;
    }
    lua_getfield(L, 1, "slots");
    opts.slots = lua_isnil(L, -1) ? 1 : (int)luaL_checknumber(L, -1);
    if (opts.slots < 1 || opts.slots > ZCRM_HTTP_MAX_SLOTS)
        luaL_error(L, "slots must be 1 to %d", ZCRM_HTTP_MAX_SLOTS);
    lua_getfield(L, 1, "ca_file");
    opts.ca_file = lua_isnil(L, -1) ? NULL : luaL_checkstring(L, -1);

    /* Userdata and metatable first, so __gc is safe whatever fails next. */
    s = lua_newuserdata(L, sizeof *s);
    s->http = NULL;
    luaL_setmetatable(L, SESSION_MT);
    s->http = zcrm_http_new(&opts, &err);
    if (s->http == NULL) return push_fail(L, &err);
    return 1;
}

static void check_request(lua_State *L, zcrm_http_request *req)
{
    req->method = luaL_checkstring(L, 2);
    req->url = luaL_checkstring(L, 3);
    req->token = luaL_optstring(L, 4, NULL);
    req->body = luaL_optlstring(L, 5, NULL, &req->body_len);
    req->content_type = luaL_optstring(L, 6, NULL);
    if (req->body == NULL) req->body_len = 0;
}

/* Pushes what zcrm_http_wait returned: slot, status, body | slot, nil, code, message. */
static int push_done(lua_State *L, int slot, const zcrm_http_response *resp, const zcrm_err *err)
{
    lua_pushinteger(L, slot + 1);
    if (err->code != ZCRM_OK) {
        push_fail(L, err);
        if (resp->unsent == NULL) return 4;
        lua_pushstring(L, resp->unsent);
        return 5;
    }
    lua_pushinteger(L, (lua_Integer)resp->status);
    lua_pushlstring(L, resp->body, resp->body_len);
    if (resp->retry_after < 0) return 3;
    lua_pushinteger(L, (lua_Integer)resp->retry_after);
    return 4;
}

/* session:start(method, url, token, body, content_type) -> slot | nil, code, message */
static int l_session_start(lua_State *L)
{
    session *s = check_session(L);
    zcrm_err err = {ZCRM_OK, ""};
    zcrm_http_request req;
    int slot;

    check_request(L, &req);
    slot = zcrm_http_start(s->http, &req, &err);
    if (slot < 0) return push_fail(L, &err);
    lua_pushinteger(L, slot + 1);
    return 1;
}

static int wait_for(lua_State *L, long timeout_ms)
{
    session *s = check_session(L);
    zcrm_err err = {ZCRM_OK, ""};
    zcrm_http_response resp;
    int slot = zcrm_http_wait(s->http, timeout_ms, &resp, &err);
    if (slot < 0) return 0;
    return push_done(L, slot, &resp, &err);
}

/* session:wait([seconds]) -> slot, status, body[, retry_after] | slot, nil, code, message
 * | nothing (none in flight, or none finished within the given seconds) */
static int l_session_wait(lua_State *L)
{
    lua_Number t = luaL_optnumber(L, 2, -1);
    return wait_for(L, t < 0 ? -1 : (long)(t * 1000) + (t > 0 && t < 0.001));
}

/* session:poll(): as wait, but returns nothing at once when no exchange has finished. */
static int l_session_poll(lua_State *L)
{
    return wait_for(L, 0);
}

/* session:request(...) -> status, body[, retry_after] | nil, code, message[, unsent]:
 * one exchange, start to end. */
static int l_session_request(lua_State *L)
{
    session *s = check_session(L);
    zcrm_err err = {ZCRM_OK, ""};
    zcrm_http_request req;
    zcrm_http_response resp;

    check_request(L, &req);
    if (zcrm_http_in_flight(s->http) > 0) return luaL_error(L, "session:request while exchanges are in flight");
    if (zcrm_http_start(s->http, &req, &err) < 0) return push_fail(L, &err);
    zcrm_http_wait(s->http, -1, &resp, &err);
    return push_done(L, 0, &resp, &err) - 1; /* without the slot */
}

static int l_session_in_flight(lua_State *L)
{
    session *s = check_session(L);
    lua_pushinteger(L, zcrm_http_in_flight(s->http));
    return 1;
}

/* close, __gc and __close: one idempotent function. */
static int l_session_close(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    zcrm_http_free(s->http);
    s->http = NULL;
    return 0;
}

static int l_session_tostring(lua_State *L)
{
    session *s = luaL_checkudata(L, 1, SESSION_MT);
    lua_pushfstring(L, "zcrm.session: %p%s", (void *)s, s->http ? "" : " (closed)");
    return 1;
}

/* ==== reply ====================================================================== */

/* What must never reach a result from a server's text: the caller's tokens and OAuth
 * secrets (strings of 8 bytes or more; core.read's 7th argument). */
#define MAX_SECRETS 8
typedef struct {
    const char *s[MAX_SECRETS];
    size_t len[MAX_SECRETS];
    int n;
} secret_list;

static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    const char *end = hay + n, *p = hay;
    while ((size_t)(end - p) >= m && (p = memchr(p, needle[0], (size_t)(end - p) - m + 1)) != NULL) {
        if (memcmp(p, needle, m) == 0) return p;
        p++;
    }
    return NULL;
}

/* Pushes s with every secret in it replaced by "<redacted>". */
static void push_redacted(lua_State *L, const char *s, size_t n, const secret_list *sec)
{
    luaL_Buffer b;
    const char *p = s, *end = s + n;
    int i, any = 0;
    for (i = 0; i < sec->n && !any; i++) any = find_bytes(s, n, sec->s[i], sec->len[i]) != NULL;
    if (!any) {
        lua_pushlstring(L, s, n);
        return;
    }
    luaL_buffinit(L, &b);
    while (p < end) {
        const char *first = NULL, *hit;
        size_t flen = 0;
        for (i = 0; i < sec->n; i++) {
            hit = find_bytes(p, (size_t)(end - p), sec->s[i], sec->len[i]);
            if (hit && (!first || hit < first)) { first = hit; flen = sec->len[i]; }
        }
        if (!first) {
            luaL_addlstring(&b, p, (size_t)(end - p));
            break;
        }
        luaL_addlstring(&b, p, (size_t)(first - p));
        luaL_addstring(&b, "<redacted>");
        p = first + flen;
    }
    luaL_pushresult(&b);
}

/* A JSON string value as a Lua string (unescaped into Lua-owned memory when long),
 * secrets redacted. */
static void push_json_string(lua_State *L, const zcrm_json_value *v, const secret_list *sec)
{
    char small[256];
    size_t raw = (size_t)(v->end - v->start);
    char *buf = raw <= sizeof small ? small : lua_newuserdata(L, raw);
    size_t n = zcrm_json_unescape(v, buf);
    push_redacted(L, buf, n, sec);
    if (buf != small) lua_remove(L, -2);
}

/* Any checked JSON value, as lua-cjson decodes it (null is cjson.null, a NULL light
 * userdata); integers stay integers where Lua has them. */
static void push_json(lua_State *L, const zcrm_json_value *v, const secret_list *sec)
{
    const char *pos = NULL;
    zcrm_json_value k, m;
    lua_Integer i = 0;
    switch (v->type) {
    case ZCRM_JSON_OBJECT:
    case ZCRM_JSON_ARRAY:
        luaL_checkstack(L, 4, "JSON nesting");
        lua_newtable(L);
        while (zcrm_json_next(v, &pos, &k, &m)) {
            if (v->type == ZCRM_JSON_OBJECT) push_json_string(L, &k, sec); else lua_pushinteger(L, ++i);
            push_json(L, &m, sec);
            lua_rawset(L, -3);
        }
        return;
    case ZCRM_JSON_STRING: push_json_string(L, v, sec); return;
    case ZCRM_JSON_TRUE: lua_pushboolean(L, 1); return;
    case ZCRM_JSON_FALSE: lua_pushboolean(L, 0); return;
    case ZCRM_JSON_NUMBER: /* Lua's own conversion: an integer where it fits */
        lua_pushlstring(L, v->start, (size_t)(v->end - v->start));
#if LUA_VERSION_NUM >= 503
        if (lua_stringtonumber(L, lua_tostring(L, -1)) == 0) lua_pushnumber(L, 0);
#else
        lua_pushnumber(L, lua_tonumber(L, -1));
#endif
        lua_remove(L, -2);
        return;
    default: lua_pushlightuserdata(L, NULL); return;
    }
}

/* Pushes the text of a string or number field (zcrm_reply_text); 0 when it has none. */
static int push_text(lua_State *L, const zcrm_json_value *v, const secret_list *sec)
{
    char buf[512]; /* any double printed with "%.0f" */
    const char *text;
    long n;
    if (v->type == ZCRM_JSON_STRING) {
        push_json_string(L, v, sec);
        return 1;
    }
    n = zcrm_reply_text(v, buf, sizeof buf, &text);
    if (n < 0) return 0;
    lua_pushlstring(L, text, (size_t)n);
    return 1;
}

static void push_text_or(lua_State *L, const zcrm_json_value *v, const char *fallback, const secret_list *sec)
{
    if (!push_text(L, v, sec)) lua_pushstring(L, fallback);
}

/* The last string pushed for one field (code, message) of a body's entries, kept at a
 * stack slot: Zoho repeats "SUCCESS" and its message in every entry, and the same bytes
 * make the same (redacted) string, so they are unescaped, searched for secrets and
 * interned once per body, not once per id. */
typedef struct {
    int slot;
    const char *raw;
    size_t len;
} text_cache;

static int push_text_cached(lua_State *L, const zcrm_json_value *v, text_cache *c, const secret_list *sec)
{
    size_t len = (size_t)(v->end - v->start);
    if (v->type != ZCRM_JSON_STRING) return push_text(L, v, sec);
    if (c->raw != NULL && c->len == len && memcmp(c->raw, v->start, len) == 0) {
        lua_pushvalue(L, c->slot);
        return 1;
    }
    push_json_string(L, v, sec);
    lua_pushvalue(L, -1);
    lua_replace(L, c->slot);
    c->raw = v->start;
    c->len = len;
    return 1;
}

static void push_cached_or(lua_State *L, const zcrm_json_value *v, const char *fallback, text_cache *c,
                           const secret_list *sec)
{
    if (!push_text_cached(L, v, c, sec)) lua_pushstring(L, fallback);
}

/* What reading one body's entries shares: the secrets, the metatables and the string
 * "success" (stack slots), the string caches. */
typedef struct {
    const secret_list *sec;
    int error_mt, success_mt, success;
    text_cache code, message;
} entry_reader;

/* A failed result entry {id, status = "error", code, message, http_status, details}
 * with the error metatable; takes message and details from the stack top (message
 * below details) and leaves the entry there. `id` and `mt` are stack indexes. */
static void push_error_entry(lua_State *L, int id, const char *code, int code_on_stack, lua_Integer status, int mt)
{
    lua_createtable(L, 0, 6);
    lua_insert(L, -3); /* entry, message, details */
    lua_setfield(L, -3, "details");
    lua_setfield(L, -2, "message");
    if (code_on_stack) {
        lua_insert(L, -2);
        lua_setfield(L, -2, "code");
    } else {
        lua_pushstring(L, code);
        lua_setfield(L, -2, "code");
    }
    lua_pushvalue(L, id);
    lua_setfield(L, -2, "id");
    lua_pushliteral(L, "error");
    lua_setfield(L, -2, "status");
    lua_pushinteger(L, status);
    lua_setfield(L, -2, "http_status");
    lua_pushvalue(L, mt);
    lua_setmetatable(L, -2);
}

static void push_details(lua_State *L, const zcrm_json_value *details, const secret_list *sec)
{
    if (details->type == ZCRM_JSON_OBJECT || details->type == ZCRM_JSON_ARRAY) push_json(L, details, sec);
    else lua_newtable(L);
}

static void push_bad_response(lua_State *L, int id, const char *why, lua_Integer status, int mt)
{
    lua_pushstring(L, why);
    lua_newtable(L);
    push_error_entry(L, id, "BAD_RESPONSE", 0, status, mt);
}

/* __index of success entries whose details only repeated their id: 100,000 such
 * tables were a quarter of the memory of a result. The table is made on first read of
 * entry.details and kept (so pairs() lists it from then on). */
static int l_success_index(lua_State *L)
{
    const char *key = lua_tostring(L, 2);
    if (key == NULL || strcmp(key, "details") != 0) return 0;
    lua_createtable(L, 0, 1);
    lua_getfield(L, 1, "id");
    lua_setfield(L, -2, "id");
    lua_pushvalue(L, -1);
    lua_setfield(L, 1, "details");
    return 1;
}

/* The result entry of the id at stack index id, from the fields of its data element. */
static void push_entry(lua_State *L, int id, const zcrm_reply_fields *e, lua_Integer status, entry_reader *rd)
{
    if (zcrm_json_string_is(&e->status, "success")) {
        /* 4 fields, or 5 with details: a table of 4 is half the memory of one of 5 */
        lua_createtable(L, 0, e->details_is_id ? 4 : 5);
        lua_pushvalue(L, id);
        lua_setfield(L, -2, "id");
        lua_pushvalue(L, rd->success);
        lua_setfield(L, -2, "status");
        push_cached_or(L, &e->code, "SUCCESS", &rd->code, rd->sec);
        lua_setfield(L, -2, "code");
        push_cached_or(L, &e->message, "", &rd->message, rd->sec);
        lua_setfield(L, -2, "message");
        if (e->details_is_id) { /* {id = <this id>}: made when first read (SUCCESS_MT) */
            lua_pushvalue(L, rd->success_mt);
            lua_setmetatable(L, -2);
        } else {
            push_details(L, &e->details, rd->sec);
            lua_setfield(L, -2, "details");
        }
    } else if (push_text_cached(L, &e->code, &rd->code, rd->sec)) {
        push_cached_or(L, &e->message, "", &rd->message, rd->sec);
        push_details(L, &e->details, rd->sec);
        push_error_entry(L, id, NULL, 1, status, rd->error_mt);
    } else {
        push_bad_response(L, id, "response entry has neither success nor an error code", status, rd->error_mt);
    }
}

/* Stores the entry on the stack top (above its id) as out[offset + i + 1], or as
 * out[id] when there is no offset; pops both. */
static void put_result(lua_State *L, lua_Integer offset, size_t i)
{
    if (offset < 0) {
        lua_rawset(L, 4);
        return;
    }
    lua_rawseti(L, 4, offset + (lua_Integer)i + 1);
    lua_pop(L, 1);
}

static int l_read(lua_State *L)
{
    const char *idp[ZCRM_MAX_IDS_PER_CALL];
    size_t idl[ZCRM_MAX_IDS_PER_CALL], n, i, len;
    zcrm_reply_fields answer[ZCRM_MAX_IDS_PER_CALL];
    zcrm_reply r;
    lua_Integer status = luaL_checkinteger(L, 2);
    const char *body = luaL_checklstring(L, 3, &len), *why;
    char why_buf[96];

    lua_Integer offset = luaL_optinteger(L, 6, -1);
    secret_list secrets_, *secrets = &secrets_;

    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    luaL_checktype(L, 5, LUA_TTABLE);
    lua_settop(L, 7);
    secrets->n = 0;
    if (!lua_isnil(L, 7)) { /* the strings stay referenced by the secrets table */
        size_t k, count;
        luaL_checktype(L, 7, LUA_TTABLE);
        count = (size_t)lua_rawlen(L, 7);
        for (k = 1; k <= count && secrets->n < MAX_SECRETS; k++) {
            size_t slen;
            const char *sv;
            lua_rawgeti(L, 7, (lua_Integer)k);
            sv = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &slen) : NULL;
            if (sv != NULL && slen >= 8) {
                secrets->s[secrets->n] = sv;
                secrets->len[secrets->n++] = slen;
            }
            lua_pop(L, 1);
        }
    }
    n = (size_t)lua_rawlen(L, 1);
    luaL_argcheck(L, n <= ZCRM_MAX_IDS_PER_CALL, 1, "more ids than one call takes");
    for (i = 0; i < n; i++) { /* the strings stay referenced by the ids table */
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        luaL_argcheck(L, lua_type(L, -1) == LUA_TSTRING, 1, "ids must be strings");
        idp[i] = lua_tolstring(L, -1, &idl[i]);
        lua_pop(L, 1);
    }

    zcrm_reply_read(body, len, (long)status, idp, idl, n, &r, answer);
    if (r.kind == ZCRM_REPLY_DATA) {
        entry_reader rd = {secrets, 5, 8, 9, {10, NULL, 0}, {11, NULL, 0}};
        luaL_getmetatable(L, SUCCESS_MT); /* 8 */
        lua_pushliteral(L, "success");    /* 9 */
        lua_pushnil(L);                   /* 10: rd.code's string */
        lua_pushnil(L);                   /* 11: rd.message's string */
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, 1, (lua_Integer)i + 1); /* 12: id */
            if (!answer[i].table)
                push_bad_response(L, 12, "response does not account for this id", status, 5);
            else
                push_entry(L, 12, &answer[i], status, &rd);
            put_result(L, offset, i);
        }
        return 0;
    }
    if (r.kind == ZCRM_REPLY_FLAT) { /* 8: the whole-request error, shared by every id */
        lua_createtable(L, 0, 4);
        push_text_or(L, &r.fields.code, "", secrets);
        lua_setfield(L, 8, "code");
        push_text_or(L, &r.fields.message, "", secrets);
        lua_setfield(L, 8, "message");
        lua_pushinteger(L, status);
        lua_setfield(L, 8, "http_status");
        push_details(L, &r.fields.details, secrets);
        lua_setfield(L, 8, "details");
        lua_pushvalue(L, 5);
        lua_setmetatable(L, 8);
        for (i = 0; i < n; i++) {
            lua_rawgeti(L, 1, (lua_Integer)i + 1); /* 9: id */
            lua_getfield(L, 8, "code");
            lua_getfield(L, 8, "message");
            lua_getfield(L, 8, "details");
            push_error_entry(L, 9, NULL, 1, status, 5);
            put_result(L, offset, i);
        }
        lua_settop(L, 8);
        return 1;
    }
    if (status >= 300 && status < 400)
        snprintf(why_buf, sizeof why_buf, "unexpected redirect (HTTP %d); redirects are not followed", (int)status);
    else if (r.kind == ZCRM_REPLY_NOT_JSON)
        snprintf(why_buf, sizeof why_buf, "HTTP %d with a body that is not JSON", (int)status);
    else
        snprintf(why_buf, sizeof why_buf, "HTTP %d with JSON that is not a Zoho delink response", (int)status);
    why = why_buf;
    for (i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1); /* 8: id */
        push_bad_response(L, 8, why, status, 5);
        put_result(L, offset, i);
    }
    return 0;
}

/* ==== module ===================================================================== */

static int l_init(lua_State *L)
{
    zcrm_err err = {ZCRM_OK, ""};
    if (zcrm_http_global_init(&err) != ZCRM_OK) return luaL_error(L, "%s", err.msg);
    lua_pushboolean(L, 1);
    return 1;
}

/* ==== time (for retry backoff outside nginx) ======================================= */

/* core.now() -> seconds on a monotonic clock */
static int l_now(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

/* core.sleep(seconds): blocks the thread (nginx code uses ngx.sleep instead) */
static int l_sleep(lua_State *L)
{
    lua_Number t = luaL_checknumber(L, 1);
    struct timespec ts;
    if (t > 0) {
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (lua_Number)ts.tv_sec) * 1e9);
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !zcrm_interrupted()) {}
    }
    return 0;
}

static int l_trap_interrupts(lua_State *L)
{
    if (zcrm_trap_interrupts() != 0) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_interrupted(lua_State *L)
{
    int sig = zcrm_interrupted();
    if (sig) lua_pushinteger(L, sig); else lua_pushboolean(L, 0);
    return 1;
}

ZCRM_EXPORT int luaopen_zcrm_core(lua_State *L)
{
    static const luaL_Reg session_methods[] = {
        {"request", l_session_request},
        {"start", l_session_start},
        {"wait", l_session_wait},
        {"poll", l_session_poll},
        {"in_flight", l_session_in_flight},
        {"close", l_session_close},
        {NULL, NULL}};
    static const luaL_Reg session_meta[] = {
        {"__gc", l_session_close},
#if LUA_VERSION_NUM >= 504
        {"__close", l_session_close},
#endif
        {"__tostring", l_session_tostring},
        {NULL, NULL}};
    static const luaL_Reg functions[] = {
        {"init", l_init},
        {"plan", l_plan},
        {"check_url", l_check_url},
        {"check_token", l_check_token},
        {"check_version", l_check_version},
        {"session", l_session},
        {"read", l_read},
        {"now", l_now},
        {"sleep", l_sleep},
        {"trap_interrupts", l_trap_interrupts},
        {"interrupted", l_interrupted},
        {NULL, NULL}};

    if (luaL_newmetatable(L, SESSION_MT)) {
        luaL_setfuncs(L, session_meta, 0);
        luaL_newlib(L, session_methods);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    if (luaL_newmetatable(L, SUCCESS_MT)) {
        lua_pushcfunction(L, l_success_index);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);

    luaL_newlib(L, functions);
    lua_pushinteger(L, ZCRM_MAX_IDS_PER_CALL);
    lua_setfield(L, -2, "MAX_IDS_PER_CALL");
    lua_pushinteger(L, ZCRM_HTTP_MAX_SLOTS);
    lua_setfield(L, -2, "MAX_CONCURRENCY");
    lua_pushliteral(L, "zcrm.core");
    lua_setfield(L, -2, "_NAME");
    lua_pushliteral(L, ZCRM_VERSION);
    lua_setfield(L, -2, "_VERSION");
    return 1;
}
