-- zcrm.retry: which failed calls are sent again, and when. DELETE is idempotent, so a
-- call that failed on the way (connection, timeout, 5xx) or was refused for load (429)
-- is sent again, after a growing, jittered pause that honours Retry-After.

local random, min = math.random, math.min

local M = {}

M.RETRIES = 3      -- retries per call, by default
M.BACKOFF = 0.5    -- seconds before the first retry (about: jitter takes up to half off)
M.MAX_DELAY = 60   -- a longer pause (a Retry-After of an hour) is not waited for

--- retry, lost = retry.classify(status, code, unsent): whether the call is worth sending
-- again, and whether the server may have carried it out already (its answer was lost).
-- status is the HTTP status, or nil with code and unsent (zcrm.core's session:wait).
function M.classify(status, code, unsent)
    if status then
        if status == 429 then return true, false end -- refused before any work
        return status >= 500, status >= 500
    end
    if code ~= "TRANSPORT_ERROR" and code ~= "TIMEOUT" then return false, false end -- over the cap, bad input
    if unsent == "tls" then return false, false end -- a certificate does not fix itself
    return true, unsent == nil
end

--- seconds = retry.delay(n, backoff, retry_after): the pause before the n-th retry.
function M.delay(n, backoff, retry_after)
    local base = backoff * 2 ^ (n - 1)
    local d = min(base / 2 + random() * base / 2, M.MAX_DELAY)
    if retry_after and retry_after > d then d = retry_after end
    return d
end

--- After a lost answer, a retry that finds an id "not related" (Zoho's per-id
-- INVALID_DATA naming the id) means the lost call removed it.
function M.removed_before(e)
    return e.code == "INVALID_DATA" and type(e.details) == "table" and e.details.id == e.id
end

M.REMOVED_BEFORE = "not related when sent again after an answer was lost: " ..
    "the lost call removed it (or it was never related)"

return M
