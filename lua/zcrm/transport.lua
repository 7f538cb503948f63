-- zcrm.transport: where a client's HTTP exchanges run. Both paths use the C core's
-- libcurl session (csrc/zcrm_http_curl.c), so there is one HTTP implementation:
--  * plain Lua, and nginx phases that cannot yield (init, init_worker, set, log, ...):
--    the session is called directly and blocks until the answer;
--  * nginx phases that can yield (rewrite, access, content, timer, ssl_*): the same
--    call runs in nginx's thread pool through ngx.run_worker_thread (zcrm.thread), so
--    the worker's event loop keeps serving other requests meanwhile.

local core = require "zcrm.core"

local setmetatable, tostring, error, rawget = setmetatable, tostring, error, rawget
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

--- transport = transport.new{timeout=, connect_timeout=, ca_file=, max_body=, thread_pool=}
function M.new(opts)
    return setmetatable({
        session_opts = { timeout = opts.timeout, connect_timeout = opts.connect_timeout,
                         ca_file = opts.ca_file, max_body = opts.max_body },
        thread_pool = opts.thread_pool or "zcrm",
        session = nil, -- created on first direct use
        closed = false,
    }, Transport)
end

--- status, body | nil, code, message = transport:request(method, url, token, body, content_type)
function Transport:request(method, url, token, body, content_type)
    if self.closed then error("zcrm client is closed", 2) end
    if ngx and ngx.run_worker_thread and M.in_nginx_yieldable() then
        local ok, status, text, message = ngx.run_worker_thread(self.thread_pool, "zcrm.thread", "request",
            self.session_opts, method, url, token, body, content_type)
        if not ok then
            return nil, "TRANSPORT_ERROR", "nginx thread pool \"" .. self.thread_pool .. "\": " .. tostring(status) ..
                " (nginx.conf needs \"thread_pool " .. self.thread_pool .. " threads=16;\")"
        end
        return status, text, message
    end
    local session = self.session
    if not session then
        session = core.session(self.session_opts)
        self.session = session
    end
    return session:request(method, url, token, body, content_type)
end

-- Releases the direct session now instead of at garbage collection.
function Transport:close()
    if self.session then self.session:close() end
    self.closed = true
end

return M
