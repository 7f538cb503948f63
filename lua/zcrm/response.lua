-- zcrm.response: reads one delink response into an outcome for each id sent.
-- The reading is the C core's (csrc/zcrm_reply.c, via core.read): Zoho answers 200/207
-- (and 400 for all-failed) with {"data":[entry, ...]}, one entry per id, or a flat
-- whole-request error {"code","details","message","status"}. Nothing is invented: an id
-- the body does not account for gets BAD_RESPONSE.

local core = require "zcrm.core"
local errors = require "zcrm.errors"

local M = {}

-- Fills out[offset + i] (or, without an offset, out[id]) for every ids[i], with each of
-- secrets redacted from the server's text. Returns the whole-request error when the
-- body was one (so the caller can react to INVALID_TOKEN), else nil.
function M.read(ids, status, body, out, offset, secrets)
    return core.read(ids, status, body, out, errors.mt, offset or nil, secrets)
end

-- The same for a local error (transport, timeout, refresh).
function M.fail(ids, out, code, message, http_status, offset)
    for i = 1, #ids do
        out[offset and offset + i or ids[i]] = errors.entry(ids[i], code, message, http_status)
    end
end

return M
