/* zcrm_error.h - the error context every C core function fills (hiredis style):
 * a code and a message, never a global. Messages never contain a token or secret. */
#ifndef ZCRM_ERROR_H
#define ZCRM_ERROR_H

#include <stdarg.h>
#include <stdio.h>

typedef enum {
    ZCRM_OK = 0,
    ZCRM_EINVAL,     /* INVALID_ARGUMENT: bad input, nothing sent */
    ZCRM_ETRANSPORT, /* TRANSPORT_ERROR: connection, TLS, protocol */
    ZCRM_ETIMEOUT,   /* TIMEOUT */
    ZCRM_EBADRESP,   /* BAD_RESPONSE: e.g. a body over the size cap */
    ZCRM_ENOMEM      /* out of memory */
} zcrm_code;

typedef struct {
    zcrm_code code;
    char msg[256];
} zcrm_err;

/* Sets err (when not NULL) and returns code, so callers can `return zcrm_fail(...)`. */
static inline zcrm_code zcrm_fail(zcrm_err *err, zcrm_code code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* The name Lua sees for a code ("INVALID_ARGUMENT", ...). */
const char *zcrm_code_name(zcrm_code code);

#endif
