-- zcrm: Zoho CRM's Delink Related Records from Lua.
--
--   local zcrm = require "zcrm"
--   local client = zcrm.new{ token = "...", dc = "eu" }
--   local res, err = client:delink("Products", "3477061000007606020", "Price_Books", ids)
--
-- The README documents every function, option, result and error.

local core = require "zcrm.core"
local client = require "zcrm.client"
local oauth = require "zcrm.oauth"
local errors = require "zcrm.errors"
local dc = require "zcrm.dc"

local os_getenv = os.getenv

-- libcurl's process-wide setup, once, when zcrm is first loaded (in nginx: from
-- init_by_lua, before workers fork).
core.init()

local M = {
    _NAME = "zcrm",
    _VERSION = core._VERSION,
    MAX_IDS_PER_CALL = core.MAX_IDS_PER_CALL,
    data_centres = dc.data_centres,
    relations = dc.relations,
    is_error = errors.is,
}

local default -- the client behind zcrm.delink

--- client = zcrm.new(options)
M.new = client.new

--- refresh = zcrm.oauth_refresh{client_id=, client_secret=, refresh_token=, accounts_url= | dc=}
M.oauth_refresh = oauth.refresher

--- zcrm.init_worker{max_threads=100, warm=0, thread_pool="zcrm"}: nginx, from init_worker_by_lua.
-- max_threads: exchanges one worker runs in the thread pool at once (more wait); keep it
-- at most lua_worker_thread_vm_pool_size. warm: thread VMs to create now, from a timer.
function M.init_worker(opts)
    opts = opts or {}
    local transport = require "zcrm.transport"
    if opts.max_threads then transport.max_threads = opts.max_threads end
    if (opts.warm or 0) > 0 then
        local ngx = rawget(_G, "ngx")
        ngx.timer.at(0, function() transport.warm(opts.warm, opts.thread_pool) end)
    end
end

--- client = zcrm.configure(options): sets (and returns) the default client.
function M.configure(opts)
    default = client.new(opts)
    return default
end

-- The default client from the environment: ZCRM_ACCESS_TOKEN, ZCRM_API_DOMAIN, ZCRM_VERSION.
local function from_env()
    local token = os_getenv("ZCRM_ACCESS_TOKEN")
    if not token or token == "" then return nil end
    local domain = os_getenv("ZCRM_API_DOMAIN")
    local version = os_getenv("ZCRM_VERSION")
    return client.new {
        token = token,
        api_domain = domain ~= "" and domain or nil,
        version = version ~= "" and version or nil,
    }
end

--- res, err = zcrm.delink(module, record_id, related_list, ids): with the default client.
function M.delink(...)
    default = default or from_env()
    if not default then
        return nil, errors.new("INVALID_ARGUMENT",
            "no default client: call zcrm.configure{...} or set ZCRM_ACCESS_TOKEN")
    end
    return default:delink(...)
end

return M
