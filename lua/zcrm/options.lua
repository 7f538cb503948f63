-- zcrm.options: checking the option tables of zcrm.new and zcrm.oauth_refresh.
-- Misuse raises at the caller (level 3: the caller of new / oauth_refresh).

local core = require "zcrm.core"
local dc = require "zcrm.dc"

local type, pairs, tostring, error, getmetatable = type, pairs, tostring, error, getmetatable
local format = string.format

local M = {}

local function is_callable(f)
    if type(f) == "function" then return true end
    local mt = getmetatable(f)
    return mt ~= nil and type(mt.__call) == "function"
end

--- options.check(fname, opts, spec): opts is a table whose keys are in spec
-- (key -> Lua type, "function" meaning callable) with values of that type.
function M.check(fname, opts, spec)
    if type(opts) ~= "table" then error(fname .. ": options must be a table", 3) end
    for k, v in pairs(opts) do
        local want = spec[k]
        if not want then error(format("%s: unknown option %q", fname, tostring(k)), 3) end
        if want == "function" then
            if not is_callable(v) then error(format("%s: option %s must be a function", fname, k), 3) end
        elseif type(v) ~= want then
            error(format("%s: option %s must be a %s, got %s", fname, k, want, type(v)), 3)
        end
    end
end

--- url = options.base_url(fname, opts, key, field): opts[key], or the data centre
-- opts.dc's `field` ("api_domain" or "accounts"), or the US one; checked, without a
-- trailing slash.
function M.base_url(fname, opts, key, field)
    if opts[key] and opts.dc then error(format("%s: give %s or dc, not both", fname, key), 3) end
    local url = opts[key]
    if opts.dc then
        local centre = dc.data_centres[opts.dc]
        if not centre then error(format("%s: unknown data centre %q", fname, opts.dc), 3) end
        url = centre[field]
    end
    url = url or dc.data_centres.us[field]
    local ok, why = core.check_url(url)
    if not ok then error(format("%s: %s: %s", fname, key, why), 3) end
    return (url:gsub("/$", ""))
end

return M
