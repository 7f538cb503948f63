-- zcrm.transport: where a client's HTTP exchanges run, up to `slots` at a time. Both
-- paths use the C core's libcurl session (csrc/zcrm_http_curl.c), so there is one HTTP
-- implementation:
--  * plain Lua, and nginx phases that cannot yield (init, init_worker, set, log, ...):
--    the session's multi handle runs the exchanges; waiting blocks;
--  * nginx phases that can yield (rewrite, access, content, timer, ssl_*): each exchange
--    runs in nginx's thread pool through ngx.run_worker_thread (zcrm.thread), one light
--    thread per slot, so the worker's event loop keeps serving other requests meanwhile.
--
--   slot | nil, code, message = transport:start(method, url, token, body, content_type)
--   slot, status, body | slot, nil, code, message | nil = transport:wait()
--   status, body | nil, code, message = transport:request(...)   (start, then wait)

local core = require "zcrm.core"

local setmetatable, tostring, error, rawget, select, next, pairs, assert =
    setmetatable, tostring, error, rawget, select, next, pairs, assert
local unpack = table.unpack or unpack -- luacheck: ignore 143
local ngx = rawget(_G, "ngx")

local M = {}

local YIELDABLE = { rewrite = true, access = true, content = true, timer = true,
                    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true }

-- Whether this code runs in an nginx phase where it may yield (and so must not block).
function M.in_nginx_yieldable()
    return ngx ~= nil and ngx.get_phase ~= nil and YIELDABLE[ngx.get_phase()] == true
end

local Transport = {}
Transport.__index = Transport

--- transport = transport.new{timeout=, connect_timeout=, ca_file=, max_body=, slots=1, thread_pool="zcrm"}
function M.new(opts)
    return setmetatable({
        session_opts = { timeout = opts.timeout, connect_timeout = opts.connect_timeout,
                         ca_file = opts.ca_file, max_body = opts.max_body, slots = opts.slots or 1 },
        thread_pool = opts.thread_pool or "zcrm",
        session = nil, -- created on first direct use
        threads = {},  -- nginx: slot -> light thread in flight
        closed = false,
    }, Transport)
end

-- ---- nginx: one light thread per slot, each exchange in the thread pool -------------

local function in_pool(self, slot, ...)
    local ok, status, text, message = ngx.run_worker_thread(self.thread_pool, "zcrm.thread", "request",
        self.session_opts, ...)
    if not ok then
        return slot, nil, "TRANSPORT_ERROR", "nginx thread pool \"" .. self.thread_pool .. "\": " .. tostring(status) ..
            " (nginx.conf needs \"thread_pool " .. self.thread_pool .. " threads=16;\")"
    end
    return slot, status, text, message
end

local function pack(...) return { n = select("#", ...), ... } end

local function nginx_start(self, ...)
    for slot = 1, self.session_opts.slots do
        if not self.threads[slot] then
            local thread, err = ngx.thread.spawn(in_pool, self, slot, ...)
            if not thread then return nil, "TRANSPORT_ERROR", "ngx.thread.spawn: " .. tostring(err) end
            self.threads[slot] = thread
            return slot
        end
    end
    return nil, "INVALID_ARGUMENT", "all slots of the transport are busy"
end

local function nginx_wait(self)
    local busy = {}
    for slot = 1, self.session_opts.slots do busy[#busy + 1] = self.threads[slot] end
    if #busy == 0 then return nil end
    local r = pack(ngx.thread.wait(unpack(busy)))
    if not r[1] then error("zcrm: light thread failed: " .. tostring(r[2])) end
    self.threads[r[2]] = nil
    return unpack(r, 2, r.n)
end

-- ---- the direct libcurl session ----------------------------------------------------------

local function direct(self)
    local session = self.session
    if not session then
        session = core.session(self.session_opts)
        self.session = session
    end
    return session
end

function Transport:start(...)
    if self.closed then error("zcrm client is closed", 2) end
    if ngx and ngx.run_worker_thread and M.in_nginx_yieldable() then return nginx_start(self, ...) end
    return direct(self):start(...)
end

function Transport:wait()
    if next(self.threads) then return nginx_wait(self) end
    if not self.session then return nil end
    return self.session:wait()
end

function Transport:in_flight()
    local n = 0
    for _ in pairs(self.threads) do n = n + 1 end
    return n + (self.session and self.session:in_flight() or 0)
end

function Transport:request(...)
    local slot, code, message = self:start(...)
    if not slot then return nil, code, message end
    local done, status, body, why = self:wait()
    assert(done == slot, "zcrm: transport:request while other exchanges are in flight")
    return status, body, why
end

-- Releases the direct session now instead of at garbage collection.
function Transport:close()
    if self.session then self.session:close() end
    self.closed = true
end

return M
