-- zcrm.token: where a client's access token comes from, and when it is refreshed.
-- A token is refreshed when there is none, when it is within 60 s of its expiry, and
-- when Zoho rejected it (`stale`). Refreshes are single-flight:
--  * per client: coroutines of one client wait for the refresh in flight (they yield;
--    in nginx they ngx.sleep);
--  * with a lua_shared_dict (nginx): across all workers of the server. The token lives in
--    the dict; one caller takes a lock key (added with an exptime of lock_timeout, so a
--    holder that dies or hangs cannot wedge the others), refreshes, stores the token and
--    drops the lock; the others poll the dict and use the new token, or take the lock
--    themselves once it is gone.

local core = require "zcrm.core"
local errors = require "zcrm.errors"
local transport = require "zcrm.transport"

local type, tostring, tonumber, pcall, setmetatable, error, rawget, ipairs =
    type, tostring, tonumber, pcall, setmetatable, error, rawget, ipairs
local format = string.format
local co_running, co_yield, co_isyieldable = coroutine.running, coroutine.yield, coroutine.isyieldable
local ngx = rawget(_G, "ngx")

local REFRESH_MARGIN = 60 -- seconds before expiry at which a token is refreshed
local POLL = 0.005 -- seconds between looks at the shared dict while another caller refreshes

local M = {}

local function now()
    if ngx then return ngx.now() end
    return os.time()
end

local function can_yield()
    if co_isyieldable then return co_isyieldable() end
    local co, main = co_running()
    return co ~= nil and not main
end

-- Waits a little for another caller's refresh; false when this caller cannot wait.
local function wait()
    if ngx then
        if not transport.in_nginx_yieldable() then return false end
        ngx.sleep(POLL)
        return true
    end
    if not can_yield() then return false end
    co_yield()
    return true
end

local function usable(token, expires_at, stale)
    return token ~= nil and token ~= stale and not (expires_at and now() >= expires_at - REFRESH_MARGIN)
end

local Source = {}
Source.__index = Source

--- source = token.new{token=, refresh=, secrets={...}, shared_dict=, shared_key=, lock_timeout=}
-- secrets: what must never show in a message (the given token, OAuth client secrets).
function M.new(opts)
    local self = setmetatable({
        token = opts.token,
        expires_at = nil, -- unknown for a given token: used until Zoho rejects it
        api_domain = nil, -- set when a refresh returns one
        refresh = opts.refresh,
        refreshing = false,
        secrets = opts.secrets,
        lock_timeout = opts.lock_timeout or 15, -- longer than zcrm.oauth_refresh's 10 s timeout
    }, Source)
    if opts.shared_dict then
        local dict = ngx and ngx.shared and ngx.shared[opts.shared_dict]
        if not dict then
            error(format("zcrm.new: shared_dict %q: no such lua_shared_dict (it needs nginx)", opts.shared_dict), 3)
        end
        local key = "zcrm:" .. (opts.shared_key or "default")
        self.dict, self.token_key, self.lock_key = dict, key .. ":token", key .. ":lock"
    end
    return self
end

-- Text with the secrets (those given, the current and the previous token) redacted.
function Source:redact(text)
    return errors.redact(errors.redact(text, self.secrets), { self.token or "", self.previous or "" })
end

-- The same secrets as a list, for the C reader of answers (core.read): made again
-- only when the token changed, not for every answer.
function Source:secret_list()
    local list = self.list
    if not list or list.token ~= self.token then
        list = { token = self.token }
        for _, secret in ipairs(self.secrets) do list[#list + 1] = secret end
        list[#list + 1] = self.token
        list[#list + 1] = self.previous
        self.list = list
    end
    return list
end

function Source:failed(message)
    return nil, errors.new("TOKEN_REFRESH_FAILED", self:redact(message))
end

function Source:use(tok, expires_at)
    if tok ~= self.token then self.previous, self.token = self.token, tok end
    self.expires_at = expires_at
end

-- Calls the refresh callback, guarded: it may raise, return nil, err, or junk.
function Source:run_refresh()
    self.refreshing = true
    local ok, tok, expires_in, api_domain = pcall(self.refresh)
    self.refreshing = false
    if not ok then return self:failed("refresh callback raised: " .. tostring(tok)) end
    if tok == nil then return self:failed("refresh callback failed: " .. tostring(expires_in or "no token returned")) end
    if type(tok) ~= "string" or not core.check_token(tok) then
        return self:failed("refresh callback returned something that is not an access token")
    end
    if api_domain ~= nil then
        if type(api_domain) ~= "string" or not core.check_url(api_domain) then
            return self:failed("refresh callback returned an invalid api_domain")
        end
        self.api_domain = api_domain:gsub("/$", "")
    end
    self:use(tok, type(expires_in) == "number" and now() + expires_in or nil)
    return tok
end

--- token | nil, err = source:get(stale): the token to use now. `stale` is a token Zoho
-- just rejected; a different current token means another caller already refreshed.
function Source:get(stale)
    if self.dict then return self:get_shared(stale) end
    while self.refreshing do
        if not wait() then
            return self:failed("a token refresh is in flight in another coroutine and this caller cannot wait")
        end
    end
    if usable(self.token, self.expires_at, stale) then return self.token end
    if not self.refresh then
        if self.token ~= nil and self.token ~= stale then return self.token end -- no expiry known
        return self:failed("the access token was rejected or expired and no refresh callback is set")
    end
    return self:run_refresh()
end

-- The shared dict holds "expires_at token api_domain" (expires_at -1 when unknown).
function Source:read_shared()
    local value = self.dict:get(self.token_key)
    if not value then return nil end
    local expires_at, tok, api_domain = value:match("^(%S+) (%S+) ?(%S*)$")
    expires_at = tonumber(expires_at)
    return tok, expires_at ~= -1 and expires_at or nil, api_domain ~= "" and api_domain or nil
end

function Source:adopt_shared(stale)
    local tok, expires_at, api_domain = self:read_shared()
    if not usable(tok, expires_at, stale) then return nil end
    self:use(tok, expires_at)
    if api_domain then self.api_domain = api_domain end
    return tok
end

function Source:store_shared()
    local ttl = 0 -- no known expiry: kept until replaced
    if self.expires_at then ttl = math.max(self.expires_at - now(), 0.001) end
    self.dict:set(self.token_key, format("%.3f %s %s", self.expires_at or -1, self.token, self.api_domain or ""), ttl)
end

local lock_serial = 0

function Source:get_shared(stale)
    local tok = self:adopt_shared(stale)
    if tok then return tok end
    -- A token given to zcrm.new is used until the dict has one or Zoho rejects it.
    if self:read_shared() == nil and usable(self.token, self.expires_at, stale) then return self.token end
    if not self.refresh then
        return self:failed("the access token was rejected or expired and no refresh callback is set")
    end

    local deadline = now() + 2 * self.lock_timeout + 1
    lock_serial = lock_serial + 1
    local lock_id = format("%d:%d", ngx.worker.pid(), lock_serial)
    while true do
        if self.dict:add(self.lock_key, lock_id, self.lock_timeout) then
            tok = self:adopt_shared(stale) -- the previous holder may have just stored one
            local err
            if not tok then
                tok, err = self:run_refresh()
                if tok then self:store_shared() end
            end
            if self.dict:get(self.lock_key) == lock_id then self.dict:delete(self.lock_key) end
            -- A refresh that failed, or hung past the lock, may have been done by another.
            tok = tok or self:adopt_shared(stale)
            if tok then return tok end
            return nil, err
        end
        tok = self:adopt_shared(stale)
        if tok then return tok end
        if now() >= deadline then
            return self:failed("gave up waiting for another worker's token refresh")
        end
        if not wait() then
            return self:failed("a token refresh is in flight in another worker and this phase cannot wait")
        end
    end
end

return M
