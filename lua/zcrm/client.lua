-- zcrm.client: a client holds its settings, its token source (zcrm.token) and its
-- transport (zcrm.transport: the C core's libcurl session, kept alive between calls).
-- client:delink plans the calls in C (validation, duplicates, batches of 100, URLs),
-- then sends them in order, up to `concurrency` at a time.

local core = require "zcrm.core"
local errors = require "zcrm.errors"
local response = require "zcrm.response"
local retry = require "zcrm.retry"
local oauth = require "zcrm.oauth"
local options = require "zcrm.options"
local token = require "zcrm.token"
local transport = require "zcrm.transport"

local type, pairs, ipairs, error, setmetatable, getmetatable = type, pairs, ipairs, error, setmetatable, getmetatable
local format = string.format

local OPTIONS = {
    token = "string", refresh = "function", api_domain = "string", dc = "string",
    version = "string", timeout = "number", connect_timeout = "number", ca_file = "string",
    -- nginx (see README "OpenResty / nginx")
    thread_pool = "string", shared_dict = "string", shared_key = "string", lock_timeout = "number",
    concurrency = "number",
    -- failure handling (see README "Failure handling")
    retries = "number", backoff = "number", deadline = "number", max_body = "number",
}

local DEFAULT_CONCURRENCY = 4 -- under Zoho's lowest limit (5 calls in flight, Free edition)
local DEFAULT_MAX_BODY = 4 * 1024 * 1024 -- 100 answers take about 20 KiB

local Client = {}
Client.__index = Client

-- Token source and transport live here, not in the client table, so that dumping a
-- client (inspect, cjson.encode, pairs) never shows a token.
local private = setmetatable({}, { __mode = "k" })

local function new(opts)
    options.check("zcrm.new", opts, OPTIONS)
    local api_domain = options.base_url("zcrm.new", opts, "api_domain", "api_domain")
    if opts.token then
        local valid, msg = core.check_token(opts.token)
        if not valid then error("zcrm.new: token: " .. msg, 2) end
    end
    if not opts.token and not opts.refresh then
        error("zcrm.new: give token (an access token) or refresh (a function returning one)", 2)
    end
    for _, k in pairs { "timeout", "connect_timeout", "lock_timeout", "deadline" } do
        -- luacheck: ignore 581 ("not (x > 0)" also refuses NaN)
        if opts[k] and not (opts[k] > 0) then error("zcrm.new: " .. k .. " must be > 0", 2) end
    end

    local self = setmetatable({
        api_domain = api_domain,
        version = opts.version or "v2.1",
        timeout = opts.timeout or 30,
        connect_timeout = opts.connect_timeout or 10,
        ca_file = opts.ca_file,
        concurrency = opts.concurrency or DEFAULT_CONCURRENCY,
        retries = opts.retries or retry.RETRIES,
        backoff = opts.backoff or retry.BACKOFF,
        deadline = opts.deadline,
        max_body = opts.max_body or DEFAULT_MAX_BODY,
    }, Client)
    local function integer(k, lo, hi)
        local v = self[k]
        if v ~= math.floor(v) or v < lo or v > hi then
            error(format("zcrm.new: %s must be an integer from %d to %d", k, lo, hi), 3)
        end
    end
    integer("concurrency", 1, core.MAX_CONCURRENCY)
    integer("retries", 0, 10)
    integer("max_body", 1024, 2 ^ 31)
    -- luacheck: ignore 581 (NaN too)
    if not (self.backoff >= 0 and self.backoff <= retry.MAX_DELAY) then
        error(format("zcrm.new: backoff must be from 0 to %d seconds", retry.MAX_DELAY), 2)
    end
    local valid_version, version_why = core.check_version(self.version)
    if not valid_version then error("zcrm.new: version: " .. version_why, 2) end
    local secrets = { opts.token } -- and those behind a zcrm.oauth_refresh callback
    for _, secret in ipairs(opts.refresh and oauth.secrets[opts.refresh] or {}) do secrets[#secrets + 1] = secret end
    private[self] = {
        tokens = token.new { token = opts.token, refresh = opts.refresh, secrets = secrets,
                             shared_dict = opts.shared_dict, shared_key = opts.shared_key,
                             lock_timeout = opts.lock_timeout },
        transport = transport.new { timeout = self.timeout, connect_timeout = self.connect_timeout,
                                    ca_file = self.ca_file, max_body = self.max_body,
                                    thread_pool = opts.thread_pool, slots = self.concurrency },
    }
    return self
end

function Client:__tostring()
    return format("zcrm.client: %s %s", self.api_domain, self.version)
end

-- Releases the connection now rather than at garbage collection.
function Client:close()
    private[self].transport:close()
end

-- The token to use now (see zcrm.token); adopts the api_domain a refresh returned.
function Client:_token(stale)
    local source = private[self].tokens
    local tok, err = source:get(stale)
    if source.api_domain then self.api_domain = source.api_domain end
    return tok, err
end

local function check_arg(v, n, name, types)
    local t = type(v)
    if not types[t] then
        error(format("bad argument #%d to 'delink' (%s expected, got %s)", n, name, t), 3)
    end
end

local STRING = { string = true }
local ID = { string = true, number = true }
local IDS = { string = true, number = true, table = true }

-- The batch's URL on the client's current api_domain (a refresh may have moved it).
local function url_of(self, plan_domain, batch)
    if plan_domain == self.api_domain then return batch.url end
    return self.api_domain .. batch.url:sub(#plan_domain + 1)
end

--- res, err = client:delink(module, record_id, related_list, ids)
function Client:delink(module, record_id, related_list, ids)
    check_arg(module, 1, "module name: string", STRING)
    check_arg(record_id, 2, "record id: string", ID)
    check_arg(related_list, 3, "related list name: string", STRING)
    check_arg(ids, 4, "ids: table or string", IDS)
    local st = private[self]
    local tokens = st.tokens
    local plan_domain = self.api_domain
    local plan, code, message = core.plan(plan_domain, self.version, module, record_id, related_list, ids)
    if not plan then return nil, errors.new(code, message) end

    local res = plan.results
    res.succeeded, res.failed = 0, 0
    if #plan.ids == 0 then return res end

    -- Up to `concurrency` calls in flight; each answer is read as it comes, straight
    -- into the results when the ids have no duplicates (plan.dense), else into
    -- outcome[id]. Every answer is read, so a call that is sent again and fails for
    -- good leaves its last error. A call answered 401 INVALID_TOKEN is sent again at
    -- once with a new token; at most one refresh per delink is caused that way
    -- (`renewed`). Other failures worth it (zcrm.retry) wait in `later` for their turn.
    local outcome, batches, nbatches = plan.outcome or res, plan.batches, #plan.batches
    local jobs, next_batch, halted, renewed = {}, 1, nil, nil
    local later, tries, lost = {}, {}, {} -- {batch=, at=}; per batch: retries, answer lost
    local deadline = self.deadline and transport.now() + self.deadline
    local http = st.transport:open()

    local function offset(b)
        return plan.dense and batches[b].first - 1
    end

    local function fail(b, why_code, why)
        response.fail(batches[b].ids, outcome, why_code, why, nil, offset(b))
    end

    local function launch(b, tok, refreshed)
        local slot, why_code, why = http:start("DELETE", url_of(self, plan_domain, batches[b]), tok)
        if slot then
            jobs[slot] = { batch = b, token = tok, refreshed = refreshed }
        else
            fail(b, why_code, tokens:redact(why))
        end
    end

    -- The batch whose retry is due first, taken out of `later`; nil when none is due.
    local function due()
        local now, k = transport.now(), nil
        for i, r in ipairs(later) do
            if r.at <= now and (not k or r.at < later[k].at) then k = i end
        end
        return k and table.remove(later, k).batch
    end

    -- Starts due retries, then new batches, until every slot is busy. False when no
    -- token could be had for the first batch: nothing was sent.
    local function fill()
        while not halted and http:in_flight() < self.concurrency do
            local b, fresh = due(), false
            if not b and next_batch <= nbatches then b, fresh = next_batch, true end
            if not b then break end
            local tok, terr = self:_token()
            if not tok then
                halted = terr -- a fresh batch stays unsent: failed with terr at the end
                if b == 1 and fresh then return false end
                break
            end
            if fresh then next_batch = next_batch + 1 end
            launch(b, tok, false)
        end
        return true
    end

    -- Queues batch b for a retry, unless it is out of retries or the pause would end
    -- past the deadline (or past retry.MAX_DELAY).
    local function retry_later(b, retry_after, answer_lost)
        local n = (tries[b] or 0) + 1
        if n > self.retries then return false end
        local pause = retry.delay(n, self.backoff, retry_after)
        local at = transport.now() + pause
        if pause > retry.MAX_DELAY or (deadline and at > deadline) then return false end
        tries[b], lost[b] = n, lost[b] or answer_lost
        later[#later + 1] = { batch = b, at = at }
        return true
    end

    -- After a lost answer, "not related" means the lost call removed the id.
    local function removed_before(b)
        local batch_ids, off = batches[b].ids, offset(b)
        for i = 1, #batch_ids do
            local k = off and off + i or batch_ids[i]
            local e = outcome[k]
            if retry.removed_before(e) then
                outcome[k] = { id = e.id, status = "success", code = "ALREADY_REMOVED",
                               message = retry.REMOVED_BEFORE, details = e.details }
            end
        end
    end

    -- Reads one finished call, d = {slot, status, body, retry_after} or {slot, nil,
    -- code, message, unsent}; sends it again, now or later, when that is worth it. A
    -- batch read for good is dropped from the plan (its URL and ids become garbage).
    local function read(job, d)
        local b, status = job.batch, d[2]
        local whole
        if status then
            whole = response.read(batches[b].ids, status, d[3], outcome, offset(b), tokens:secret_list())
            if lost[b] then removed_before(b) end
        else
            fail(b, d[3], tokens:redact(d[4]))
        end
        if whole and whole.code == "INVALID_TOKEN" and tokens.refresh and not job.refreshed
            and job.token ~= renewed then
            local tok, terr = self:_token(job.token) -- refreshes unless another call already did
            if tok then
                renewed = renewed or tok
                return launch(b, tok, true)
            end
            fail(b, terr.code, terr.message)
            halted = halted or terr
        end
        local worth, answer_lost = retry.classify(status, d[3], d[5])
        if worth and not halted and retry_later(b, status and d[4], answer_lost) then return end
        batches[b] = nil
    end

    -- Finished calls wait in `ready` to be read, one at a time; before each read, every
    -- call that has finished meanwhile is taken and its slot refilled, so the next
    -- calls travel while answers are decoded. (No refill while a 401 waits to be read:
    -- its batch may need a slot to be sent again.)
    local ready, refused = {}, 0
    local function take(d) -- {slot, status, body, retry_after} or {slot, nil, code, message, unsent}
        d.job, jobs[d[1]] = jobs[d[1]], nil
        ready[#ready + 1] = d
        if d[2] == 401 then refused = refused + 1 end
    end

    while true do
        if refused == 0 and not fill() then
            http:close()
            return nil, halted
        end
        if #ready == 0 then
            local pause = nil -- until the next retry is due
            if not halted and #later > 0 then
                pause = math.huge
                for _, r in ipairs(later) do pause = math.min(pause, r.at) end
                pause = math.max(0, pause - transport.now())
            end
            if http:in_flight() == 0 then
                if not pause then break end
                transport.sleep(pause)
            else
                local d = { http:wait(pause) }
                if d[1] then take(d) end
            end
        end
        if #ready > 0 then
            repeat
                local d = { http:poll() }
                if d[1] then take(d) end
            until d[1] == nil
            if refused == 0 then fill() end
            local d = table.remove(ready, 1)
            if d[2] == 401 then refused = refused - 1 end
            read(d.job, d)
        end
    end
    http:close()
    for b = next_batch, nbatches do fail(b, halted.code, halted.message) end

    -- One entry per caller position. With duplicates, an outcome once placed is
    -- replaced by its position, so that a duplicate id gets its own copy.
    local err
    local canon, dense = plan.ids, plan.dense
    for i = 1, #canon do
        local e = res[i]
        if not dense then
            e = outcome[canon[i]]
            if type(e) == "number" then
                local copy = {}
                for k, v in pairs(res[e]) do copy[k] = v end
                e = setmetatable(copy, getmetatable(res[e]))
            else
                outcome[canon[i]] = i
            end
            res[i] = e
        end
        if e.status == "success" then
            res.succeeded = res.succeeded + 1
        else
            res.failed = res.failed + 1
            err = err or e
        end
    end
    return res, err
end

return { new = new }
