-- zcrm.transport: where a client's HTTP exchanges run, up to `slots` at a time. Both
-- paths use the C core's libcurl session (csrc/zcrm_http_curl.c), so there is one HTTP
-- implementation:
--  * plain Lua, and nginx phases that cannot yield (init, init_worker, set, log, ...):
--    the session's multi handle runs the exchanges; waiting blocks;
--  * nginx phases that can yield (rewrite, access, content, timer, ssl_*): each exchange
--    runs in nginx's thread pool through ngx.run_worker_thread (zcrm.thread), one light
--    thread per slot, so the worker's event loop keeps serving other requests meanwhile.
--
--   exchanges = transport:open()                 -- one call's exchanges
--   slot | nil, code, message = exchanges:start(method, url, token, body, content_type)
--   slot, status, body[, retry_after] | slot, nil, code, message | nil = exchanges:wait([seconds])
--   the same | nil = exchanges:poll()            -- only an exchange already finished
--   exchanges:close()
--   status, body | nil, code, message = transport:request(...)   -- all of it, for one exchange
--   transport.now(), transport.sleep(seconds)    -- the clock and the pause of retries

local core = require "zcrm.core"

local setmetatable, tostring, error, rawget, select, pairs = setmetatable, tostring, error, rawget, select, pairs
local unpack = table.unpack or unpack -- luacheck: ignore 143
local ngx = rawget(_G, "ngx")

local M = {}

local YIELDABLE = { rewrite = true, access = true, content = true, timer = true,
                    ssl_cert = true, ssl_session_fetch = true, ssl_client_hello = true }

-- Whether this code runs in an nginx phase where it may yield (and so must not block).
function M.in_nginx_yieldable()
    return ngx ~= nil and ngx.get_phase ~= nil and YIELDABLE[ngx.get_phase()] == true
end

-- Seconds on a clock that only moves forward.
M.now = core.now

-- A pause that yields to nginx's event loop where it can, else blocks.
function M.sleep(seconds)
    if M.in_nginx_yieldable() then return ngx.sleep(seconds) end
    core.sleep(seconds)
end

local Transport = {}
Transport.__index = Transport

--- transport = transport.new{timeout=, connect_timeout=, ca_file=, max_body=, slots=1, thread_pool="zcrm"}
function M.new(opts)
    return setmetatable({
        session_opts = { timeout = opts.timeout, connect_timeout = opts.connect_timeout,
                         ca_file = opts.ca_file, max_body = opts.max_body, slots = opts.slots or 1 },
        thread_pool = opts.thread_pool or "zcrm",
        idle = nil, -- a direct session kept between calls, with its connections
        closed = false,
    }, Transport)
end

-- ---- nginx: one light thread per slot, each exchange in the thread pool -------------

local InPool = {}
InPool.__index = InPool

-- Each exchange in the pool holds one of the worker's thread Lua VMs, of which nginx
-- allows lua_worker_thread_vm_pool_size (default 100); past that, run_worker_thread
-- fails. A per-worker semaphore makes further exchanges wait for a VM instead.
M.max_threads = 100
local permits

local function in_pool(t, slot, ...)
    if not permits then permits = require("ngx.semaphore").new(M.max_threads) end
    if not permits:wait(t.session_opts.timeout or 30) then
        return slot, nil, "TRANSPORT_ERROR", "more than " .. M.max_threads .. " zcrm exchanges in flight in this worker"
    end
    local ok, status, text, message = ngx.run_worker_thread(t.thread_pool, "zcrm.thread", "request",
        t.session_opts, ...)
    permits:post(1)
    if not ok then
        local hint = tostring(status):find("thread pool", 1, true) and
            " (nginx.conf needs \"thread_pool " .. t.thread_pool .. " threads=16;\")" or ""
        return slot, nil, "TRANSPORT_ERROR", "nginx thread pool \"" .. t.thread_pool .. "\": " .. tostring(status) .. hint
    end
    return slot, status, text, message
end

local function pack(...) return { n = select("#", ...), ... } end

function InPool:start(...)
    for slot = 1, self.transport.session_opts.slots do
        if not self.threads[slot] then
            local thread, err = ngx.thread.spawn(in_pool, self.transport, slot, ...)
            if not thread then return nil, "TRANSPORT_ERROR", "ngx.thread.spawn: " .. tostring(err) end
            self.threads[slot] = thread
            return slot
        end
    end
    return nil, "INVALID_ARGUMENT", "all slots are busy"
end

-- With a timeout, a sleeping light thread joins the wait: if it ends first, nothing
-- is returned.
function InPool:wait(seconds)
    local busy = {}
    for slot = 1, self.transport.session_opts.slots do busy[#busy + 1] = self.threads[slot] end
    if #busy == 0 then return nil end
    local timer = seconds and ngx.thread.spawn(function() ngx.sleep(seconds) end)
    busy[#busy + 1] = timer or nil
    local r = pack(ngx.thread.wait(unpack(busy)))
    if timer then ngx.thread.kill(timer) end
    if not r[1] then error("zcrm: light thread failed: " .. tostring(r[2])) end
    if r[2] == nil then return nil end -- the timer, which returns nothing
    self.threads[r[2]] = nil
    return unpack(r, 2, r.n)
end

function InPool:in_flight()
    local n = 0
    for _ in pairs(self.threads) do n = n + 1 end
    return n
end

-- Light threads are collected one by one by wait.
function InPool.poll() return nil end

function InPool.close() end

-- Creates n thread-pool VMs now (each loads zcrm.thread), from a timer started in
-- init_worker_by_lua, so that the first burst of traffic does not pay for it.
function M.warm(n, thread_pool)
    local threads = {}
    local function ping() return ngx.run_worker_thread(thread_pool or "zcrm", "zcrm.thread", "ping") end
    for i = 1, n do threads[i] = ngx.thread.spawn(ping) end
    for i = 1, n do ngx.thread.wait(threads[i]) end
end

-- ---- direct: the C session's multi handle ------------------------------------------

local Direct = {}
Direct.__index = Direct

function Direct:start(...) return self.session:start(...) end
function Direct:wait(seconds) return self.session:wait(seconds) end
function Direct:poll() return self.session:poll() end
function Direct:in_flight() return self.session:in_flight() end

-- Hands the session back for the next call (or closes it if another one is kept).
function Direct:close()
    local t = self.transport
    if not t.closed and t.idle == nil and self.session:in_flight() == 0 then
        t.idle = self.session
    else
        self.session:close()
    end
end

--- exchanges = transport:open(): the exchanges of one call (a delink, a token grant),
-- so that concurrent calls on one client (coroutines, nginx requests) never see each
-- other's answers. Then exchanges:start(...), exchanges:wait(), exchanges:close().
function Transport:open()
    if self.closed then error("zcrm client is closed", 3) end
    if ngx and ngx.run_worker_thread and M.in_nginx_yieldable() then
        return setmetatable({ transport = self, threads = {} }, InPool)
    end
    local session = self.idle or core.session(self.session_opts)
    self.idle = nil
    return setmetatable({ transport = self, session = session }, Direct)
end

--- status, body | nil, code, message = transport:request(method, url, token, body, content_type)
function Transport:request(...)
    local exchanges = self:open()
    local slot, code, message = exchanges:start(...)
    local status, body, why
    if slot then
        local _
        _, status, body, why = exchanges:wait()
    else
        status, body, why = nil, code, message
    end
    exchanges:close()
    return status, body, why
end

-- Releases the kept session now instead of at garbage collection.
function Transport:close()
    if self.idle then self.idle:close() end
    self.idle = nil
    self.closed = true
end

return M
