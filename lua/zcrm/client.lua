-- zcrm.client: a client holds its settings, its token source (zcrm.token) and its
-- transport (zcrm.transport: the C core's libcurl session, kept alive between calls).
-- client:delink plans the calls in C (validation, duplicates, batches of 100, URLs),
-- then sends them in order.

local core = require "zcrm.core"
local errors = require "zcrm.errors"
local response = require "zcrm.response"
local dc = require "zcrm.dc"
local oauth = require "zcrm.oauth"
local token = require "zcrm.token"
local transport = require "zcrm.transport"

local type, pairs, tostring, error, setmetatable, getmetatable =
    type, pairs, tostring, error, setmetatable, getmetatable
local format = string.format

local OPTIONS = {
    token = "string", refresh = "function", api_domain = "string", dc = "string",
    version = "string", timeout = "number", connect_timeout = "number", ca_file = "string",
    -- nginx (see README "OpenResty / nginx")
    thread_pool = "string", shared_dict = "string", shared_key = "string", lock_timeout = "number",
}

local Client = {}
Client.__index = Client

-- Token source and transport live here, not in the client table, so that dumping a
-- client (inspect, cjson.encode, pairs) never shows a token.
local private = setmetatable({}, { __mode = "k" })

local function is_callable(f)
    if type(f) == "function" then return true end
    local mt = getmetatable(f)
    return mt ~= nil and type(mt.__call) == "function"
end

local unpack_secrets = table.unpack or unpack -- luacheck: ignore 143

local function strip_slash(url)
    return (url:gsub("/$", ""))
end

local function check_options(opts)
    if type(opts) ~= "table" then error("zcrm.new: options must be a table", 3) end
    for k, v in pairs(opts) do
        local want = OPTIONS[k]
        if not want then error(format("zcrm.new: unknown option %q", tostring(k)), 3) end
        if want == "function" then
            if not is_callable(v) then error("zcrm.new: option refresh must be a function", 3) end
        elseif type(v) ~= want then
            error(format("zcrm.new: option %s must be a %s, got %s", k, want, type(v)), 3)
        end
    end
end

local function new(opts)
    check_options(opts)
    if opts.api_domain and opts.dc then error("zcrm.new: give api_domain or dc, not both", 2) end
    local api_domain = opts.api_domain
    if opts.dc then
        local centre = dc.data_centres[opts.dc]
        if not centre then error(format("zcrm.new: unknown data centre %q", opts.dc), 2) end
        api_domain = centre.api_domain
    end
    api_domain = api_domain or dc.data_centres.us.api_domain
    local ok, why = core.check_url(api_domain)
    if not ok then error("zcrm.new: api_domain: " .. why, 2) end
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
        api_domain = strip_slash(api_domain),
        version = opts.version or "v2.1",
        timeout = opts.timeout or 30,
        connect_timeout = opts.connect_timeout or 10,
        ca_file = opts.ca_file,
    }, Client)
    local valid_version, version_why = core.check_version(self.version)
    if not valid_version then error("zcrm.new: version: " .. version_why, 2) end
    local secrets = { opts.token, unpack_secrets(opts.refresh and oauth.secrets[opts.refresh] or {}) }
    private[self] = {
        tokens = token.new { token = opts.token, refresh = opts.refresh, secrets = secrets,
                             shared_dict = opts.shared_dict, shared_key = opts.shared_key,
                             lock_timeout = opts.lock_timeout },
        transport = transport.new { timeout = self.timeout, connect_timeout = self.connect_timeout,
                                    ca_file = self.ca_file, thread_pool = opts.thread_pool },
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

-- Sends one call and reads the answer into outcome[id]. Returns Zoho's whole-request
-- error, if the answer was one.
local function send(st, url, tok, ids, outcome)
    local status, body, why = st.transport:request("DELETE", url, tok)
    if not status then
        response.fail(ids, outcome, body, errors.redact(why, st.tokens.secrets))
        return nil
    end
    return response.read(ids, status, body, outcome)
end

--- res, err = client:delink(module, record_id, related_list, ids)
function Client:delink(module, record_id, related_list, ids)
    check_arg(module, 1, "module name: string", STRING)
    check_arg(record_id, 2, "record id: string", ID)
    check_arg(related_list, 3, "related list name: string", STRING)
    check_arg(ids, 4, "ids: table or string", IDS)
    local st = private[self]
    local plan_domain = self.api_domain
    local plan, code, message = core.plan(plan_domain, self.version, module, record_id, related_list, ids)
    if not plan then return nil, errors.new(code, message) end

    local res = { succeeded = 0, failed = 0 }
    if #plan.ids == 0 then return res end

    local outcome, batches = {}, plan.batches
    local forced_refresh = false -- at most one refresh on INVALID_TOKEN per call
    for b = 1, #batches do
        local batch = batches[b]
        local tok, terr = self:_token()
        if not tok and b == 1 then return nil, terr end -- nothing sent yet
        if tok then
            local whole = send(st, url_of(self, plan_domain, batch), tok, batch.ids, outcome)
            if whole and whole.code == "INVALID_TOKEN" and st.tokens.refresh and not forced_refresh then
                forced_refresh = true
                tok, terr = self:_token(tok)
                if tok then send(st, url_of(self, plan_domain, batch), tok, batch.ids, outcome) end
            end
        end
        if not tok then -- this batch (when its retry could not happen) and the rest
            for rest = b, #batches do response.fail(batches[rest].ids, outcome, terr.code, terr.message) end
            break
        end
    end

    -- One entry per caller position; a duplicate id gets its own copy of the outcome.
    local err, used = nil, {}
    for i = 1, #plan.ids do
        local e = outcome[plan.ids[i]]
        if used[e] then
            local copy = {}
            for k, v in pairs(e) do copy[k] = v end
            e = setmetatable(copy, getmetatable(e))
        end
        used[e] = true
        if e.status == "success" then
            res.succeeded = res.succeeded + 1
        else
            res.failed = res.failed + 1
            err = err or e
        end
        res[i] = e
    end
    return res, err
end

return { new = new }
