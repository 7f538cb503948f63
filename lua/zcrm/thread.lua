-- zcrm.thread: runs inside the Lua VM of an nginx thread-pool thread, called by
-- zcrm.transport through ngx.run_worker_thread. No ngx API is used here. Each thread
-- keeps one C session per set of options, reused across calls. A thread runs one
-- exchange at a time, so its session has one slot whatever the client's concurrency.

local core = require "zcrm.core"

local sessions = {}

local M = {}

function M.request(opts, method, url, token, body, content_type)
    local key = table.concat({ opts.timeout or "", opts.connect_timeout or "", opts.ca_file or "",
                               opts.max_body or "" }, "\n")
    local session = sessions[key]
    if not session then
        session = core.session { timeout = opts.timeout, connect_timeout = opts.connect_timeout,
                                 ca_file = opts.ca_file, max_body = opts.max_body }
        sessions[key] = session
    end
    return session:request(method, url, token, body, content_type)
end

-- Loads this module (and zcrm.core) into a fresh thread VM: see zcrm.transport.warm.
function M.ping() return true end

return M
