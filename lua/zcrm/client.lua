-- zcrm.client: a client holds its settings, its token source (zcrm.token) and its
-- transport (zcrm.transport: the C core's libcurl session, kept alive between calls).
-- client:delink plans the calls in C (validation, duplicates, batches of 100, URLs),
-- then sends them in order, up to `concurrency` at a time.

local core = require "zcrm.core"
local errors = require "zcrm.errors"
local response = require "zcrm.response"
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
}

local DEFAULT_CONCURRENCY = 4 -- under Zoho's lowest limit (5 calls in flight, Free edition)

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
    for _, k in pairs { "timeout", "connect_timeout", "lock_timeout" } do
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
    }, Client)
    local c = self.concurrency
    if c ~= math.floor(c) or c < 1 or c > core.MAX_CONCURRENCY then
        error(format("zcrm.new: concurrency must be an integer from 1 to %d", core.MAX_CONCURRENCY), 2)
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
                                    ca_file = self.ca_file, thread_pool = opts.thread_pool, slots = self.concurrency },
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
    -- outcome[id]. A call answered 401 INVALID_TOKEN is sent again, once, with a new
    -- token; at most one refresh per delink is caused that way (`renewed`).
    local outcome, batches, nbatches = plan.outcome or res, plan.batches, #plan.batches
    local jobs, next_batch, halted, renewed = {}, 1, nil, nil
    local http = st.transport:open()

    local function fail(b, code, message)
        local batch = batches[b]
        response.fail(batch.ids, outcome, code, message, nil, plan.dense and batch.first - 1)
    end

    local function launch(b, tok, retried)
        local slot, why_code, why = http:start("DELETE", url_of(self, plan_domain, batches[b]), tok)
        if slot then
            jobs[slot] = { batch = b, token = tok, retried = retried }
        else
            fail(b, why_code, tokens:redact(why))
        end
    end

    -- Starts batches until every slot is busy. False when no token could be had for the
    -- first batch: nothing was sent.
    local function fill()
        while not halted and next_batch <= nbatches and http:in_flight() < self.concurrency do
            local tok, terr = self:_token()
            if not tok then
                halted = terr
                if next_batch == 1 then return false end
            else
                launch(next_batch, tok, false)
                next_batch = next_batch + 1
            end
        end
        return true
    end

    -- Reads one finished call; sends it again after a 401 INVALID_TOKEN. A batch read
    -- for good is dropped from the plan (its URL and id list are garbage from then on).
    local function read(job, status, body, why)
        local b = job.batch
        local whole
        if status then
            local batch = batches[b]
            whole = response.read(batch.ids, status, body, outcome, plan.dense and batch.first - 1)
        else
            fail(b, body, tokens:redact(why))
        end
        if whole and whole.code == "INVALID_TOKEN" and tokens.refresh and not job.retried
            and job.token ~= renewed then
            local tok, terr = self:_token(job.token) -- refreshes unless another call already did
            if tok then
                renewed = renewed or tok
                return launch(b, tok, true)
            end
            fail(b, terr.code, terr.message)
            halted = halted or terr
        end
        batches[b] = nil
    end

    while true do
        if not fill() then
            http:close()
            return nil, halted
        end
        -- Take every call that has finished, refill the freed slots, then read the
        -- answers: the next calls travel while these are decoded. (Not after a 401: its
        -- batch may need a slot to be sent again.)
        local done = { { http:wait() } } -- each {slot, status, body} or {slot, nil, code, message}
        if done[1][1] == nil then break end
        repeat
            local more = { http:poll() }
            done[#done + 1] = more[1] and more or nil
        until more[1] == nil
        local refused = false
        for _, d in ipairs(done) do
            d.job, jobs[d[1]] = jobs[d[1]], nil
            refused = refused or d[2] == 401
        end
        if not refused then fill() end
        for _, d in ipairs(done) do read(d.job, d[2], d[3], d[4]) end
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
