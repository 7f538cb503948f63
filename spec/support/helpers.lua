-- Shared by the specs that talk to the simulator.
local zcrm = require "zcrm"
local assert = require "luassert"

local M = {}

M.PRODUCT = "3477061000007606020"
M.CAMPAIGN = "3652397000000327001"

-- n distinct 19-digit ids, as Zoho's look
function M.ids(n, from)
    local t = {}
    for i = 1, n do t[i] = string.format("3477061%012d", (from or 0) + i) end
    return t
end

-- A client for the simulator, with a token the simulator accepts.
function M.client(sim, opts)
    opts = opts or {}
    if opts.token == nil and opts.refresh == nil then
        opts.token = "spec-token-valid"
        sim:add_token(opts.token, { expires_in = 3600 })
    end
    opts.api_domain = opts.api_domain or sim.url
    return zcrm.new(opts)
end

-- Every id of res is in caller order and accounted for exactly once.
function M.assert_accounted(res, requested)
    assert.equal(#requested, #res)
    local ok, failed = 0, 0
    for i, id in ipairs(requested) do
        assert.equal(tostring(id), res[i].id)
        assert.is_string(res[i].code)
        if res[i].status == "success" then ok = ok + 1 else
            assert.equal("error", res[i].status)
            failed = failed + 1
        end
    end
    assert.equal(ok, res.succeeded)
    assert.equal(failed, res.failed)
end

return M
