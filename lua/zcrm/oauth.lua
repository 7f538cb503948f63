-- zcrm.oauth: a ready refresh callback doing Zoho's refresh-token grant:
-- POST {accounts}/oauth/v2/token, form-encoded, through the C core's libcurl session
-- (in nginx, in the thread pool: see zcrm.transport).
-- Zoho Accounts reports errors as HTTP 200 with an "error" key, and some servers give
-- "expires_in" in milliseconds next to "expires_in_sec".

local transport = require "zcrm.transport"
local options = require "zcrm.options"
local cjson = require "cjson.safe"

local type, pairs, error, tostring, setmetatable, format = type, pairs, error, tostring, setmetatable, string.format

local M = {}

-- Secrets behind each callback made here, so a client can redact them from messages.
M.secrets = setmetatable({}, { __mode = "k" })

local OPTIONS = {
    client_id = "string", client_secret = "string", refresh_token = "string",
    accounts_url = "string", dc = "string", timeout = "number", connect_timeout = "number",
    ca_file = "string", thread_pool = "string",
}

local function urlencode(s)
    return (s:gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end

local function form(fields)
    local parts = {}
    for i = 1, #fields, 2 do parts[#parts + 1] = fields[i] .. "=" .. urlencode(fields[i + 1]) end
    return table.concat(parts, "&")
end

local function expiry_seconds(doc)
    if type(doc.expires_in_sec) == "number" then return doc.expires_in_sec end
    if type(doc.expires_in) == "number" then
        -- With expires_in_sec present but not a number, expires_in is milliseconds.
        return doc.expires_in_sec ~= nil and doc.expires_in / 1000 or doc.expires_in
    end
    return nil
end

--- refresh = zcrm.oauth_refresh{client_id=, client_secret=, refresh_token=, accounts_url= | dc=}
-- Returns a function() -> access_token, expires_in_seconds, api_domain | nil, message
function M.refresher(opts)
    options.check("zcrm.oauth_refresh", opts, OPTIONS)
    for _, k in pairs { "client_id", "client_secret", "refresh_token" } do
        if not opts[k] or opts[k] == "" then error("zcrm.oauth_refresh: option " .. k .. " is required", 2) end
    end
    local accounts = options.base_url("zcrm.oauth_refresh", opts, "accounts_url", "accounts")

    local url = accounts .. "/oauth/v2/token"
    local body = form { "grant_type", "refresh_token", "client_id", opts.client_id,
                        "client_secret", opts.client_secret, "refresh_token", opts.refresh_token }
    -- A grant that takes longer than the shared-token lock (zcrm.new's lock_timeout,
    -- 15 s) could let a second caller refresh too: keep it shorter.
    local http = transport.new { timeout = opts.timeout or 10, connect_timeout = opts.connect_timeout or 5,
                                 ca_file = opts.ca_file, thread_pool = opts.thread_pool }

    local function refresh()
        local status, text, message = http:request("POST", url, nil, body, "application/x-www-form-urlencoded")
        if not status then return nil, format("token endpoint: %s: %s", text, message) end
        local doc = cjson.decode(text)
        if type(doc) ~= "table" then
            return nil, format("token endpoint answered HTTP %d with a body that is not JSON", status)
        end
        if doc.error ~= nil then
            local desc = type(doc.error_description) == "string" and ": " .. doc.error_description or ""
            return nil, format("token endpoint refused the grant (HTTP %d): %s%s", status, tostring(doc.error), desc)
        end
        if status ~= 200 or type(doc.access_token) ~= "string" then
            return nil, format("token endpoint answered HTTP %d without an access_token", status)
        end
        local api_domain = type(doc.api_domain) == "string" and doc.api_domain or nil
        return doc.access_token, expiry_seconds(doc), api_domain
    end
    M.secrets[refresh] = { opts.client_secret, opts.refresh_token }
    return refresh
end

return M
