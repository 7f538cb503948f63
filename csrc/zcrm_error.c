/* zcrm_error.c - names of the core's error codes, as Lua sees them. */
#include "zcrm_error.h"

const char *zcrm_code_name(zcrm_code code)
{
    switch (code) {
    case ZCRM_OK: return "OK";
    case ZCRM_EINVAL: return "INVALID_ARGUMENT";
    case ZCRM_ETRANSPORT: return "TRANSPORT_ERROR";
    case ZCRM_ETIMEOUT: return "TIMEOUT";
    case ZCRM_EBADRESP: return "BAD_RESPONSE";
    case ZCRM_ENOMEM: return "OUT_OF_MEMORY";
    }
    return "UNKNOWN";
}
