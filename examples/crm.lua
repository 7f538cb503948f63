-- examples/crm.lua: the application side of examples/nginx.conf.
-- One zcrm client per worker, created on first use; the token is shared by all workers
-- through the lua_shared_dict "zcrm_tokens".
local zcrm = require "zcrm"
local cjson = require "cjson.safe"

local M = {}

local settings -- read in init_by_lua, inherited by the workers
local client

function M.init()
    local env = os.getenv
    settings = {
        client_id = env("ZCRM_CLIENT_ID"), client_secret = env("ZCRM_CLIENT_SECRET"),
        refresh_token = env("ZCRM_REFRESH_TOKEN"), dc = env("ZCRM_DC"),
        api_domain = env("ZCRM_API_DOMAIN"), accounts_url = env("ZCRM_ACCOUNTS_URL"),
    }
    assert(settings.client_id and settings.client_secret and settings.refresh_token,
           "set ZCRM_CLIENT_ID, ZCRM_CLIENT_SECRET and ZCRM_REFRESH_TOKEN")
end

local function get_client()
    if client then return client end
    local s = settings
    local dc = not (s.api_domain or s.accounts_url) and (s.dc or "us") or nil
    client = zcrm.new {
        api_domain = s.api_domain, dc = dc,
        shared_dict = "zcrm_tokens", -- one token for every worker
        refresh = zcrm.oauth_refresh { client_id = s.client_id, client_secret = s.client_secret,
                                       refresh_token = s.refresh_token, dc = dc, accounts_url = s.accounts_url },
    }
    return client
end

function M.delink_request()
    ngx.req.read_body()
    local ids = {}
    for id in (ngx.req.get_body_data() or ""):gmatch("[^%s,]+") do ids[#ids + 1] = id end
    local args = ngx.req.get_uri_args()
    local function arg(name) return type(args[name]) == "string" and args[name] or "" end
    local res, err = get_client():delink(arg("module"), arg("record"), arg("related"), ids)
    ngx.header.content_type = "application/json"
    if not res then -- nothing was sent: bad input or no token
        ngx.status = err.code == "INVALID_ARGUMENT" and 400 or 502
        ngx.say(cjson.encode { error = err.code, message = err.message })
        return
    end
    local results = {}
    for i = 1, #res do results[i] = res[i] end
    ngx.say(cjson.encode { succeeded = res.succeeded, failed = res.failed, results = results })
end

return M
