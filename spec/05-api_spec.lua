-- The public surface: zcrm.new's options, the default client (configure, environment),
-- module metadata.
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"
local zcrm = require "zcrm"
local core = require "zcrm.core"

-- Runs a Lua snippet in a fresh interpreter (the one running busted) with env vars set.
local function run_lua(env, code)
    local interpreter = arg and arg[-1] or "lua5.4"
    local parts = { "env", "-u", "ZCRM_ACCESS_TOKEN", "-u", "ZCRM_API_DOMAIN", "-u", "ZCRM_VERSION" }
    for k, v in pairs(env) do parts[#parts + 1] = k .. "=" .. v end
    local cmd = table.concat(parts, " ") .. " " .. interpreter .. " -e " ..
        string.format("%q", "package.path='./lua/?.lua;./lua/?/init.lua;'..package.path;" ..
                      "package.cpath='" .. package.cpath:match("^[^;]+") .. ";'..package.cpath;" .. code) .. " 2>&1"
    local p = io.popen(cmd)
    local out = p:read("*a")
    p:close()
    return out
end

describe("zcrm.new", function()
    it("has documented defaults", function()
        local c = zcrm.new { token = "1000.x" }
        assert.equal("https://www.zohoapis.com", c.api_domain)
        assert.equal("v2.1", c.version)
        assert.equal(30, c.timeout)
        assert.equal(10, c.connect_timeout)
    end)

    for _, case in ipairs {
        { "an unknown option (a typo)", { token = "t", timout = 5 }, "unknown option \"timout\"" },
        { "a wrong type", { token = "t", timeout = "5" }, "timeout must be a number" },
        { "a non-function refresh", { refresh = "x" }, "refresh must be a function" },
        { "no token and no refresh", {}, "give token" },
        { "a token with CR/LF", { token = "a\r\nX: y" }, "token" },
        { "plain http to a remote host", { token = "t", api_domain = "http://www.zohoapis.com" }, "https" },
        { "an api_domain with a path", { token = "t", api_domain = "https://www.zohoapis.com/crm" }, "path" },
        { "an unknown data centre", { token = "t", dc = "mars" }, "unknown data centre" },
        { "both dc and api_domain", { token = "t", dc = "eu", api_domain = "https://www.zohoapis.eu" }, "not both" },
        { "a bad version", { token = "t", version = "2.1" }, "version" },
        { "a negative timeout", { token = "t", timeout = -1 }, "timeout" },
    } do
        it("raises on " .. case[1], function()
            local ok, msg = pcall(zcrm.new, case[2])
            assert.is_false(ok)
            assert.matches(case[3], msg, 1, true)
        end)
    end

    it("raises when options are not a table", function()
        assert.has_error(function() zcrm.new("token") end)
    end)

    it("accepts a callable table as refresh", function()
        local c = zcrm.new { refresh = setmetatable({}, { __call = function() return "t", 10 end }) }
        assert.equal("zcrm.client: https://www.zohoapis.com v2.1", tostring(c))
    end)

    it("keeps the token out of tostring and the client's fields", function()
        local c = zcrm.new { token = "spec-visible-secret-token" }
        assert.is_nil(tostring(c):find("spec-visible-secret-token", 1, true))
        for k, v in pairs(c) do
            assert.is_nil(tostring(v):find("spec-visible-secret-token", 1, true), k)
        end
    end)

    it("closes its connection on demand", function()
        local c = zcrm.new { token = "t" }
        c:close()
        assert.has_error(function() c:delink("Products", "1", "Price_Books", { "1" }) end)
    end)
end)

describe("module metadata", function()
    it("names the module and its version", function()
        assert.equal("zcrm", zcrm._NAME)
        assert.equal(core._VERSION, zcrm._VERSION)
        assert.equal(100, zcrm.MAX_IDS_PER_CALL)
        assert.same({ "Leads", "Contacts" }, zcrm.relations.Campaigns)
    end)
end)

describe("the default client", function()
    local sim

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function() sim:reset() end)

    it("is set by zcrm.configure and used by zcrm.delink", function()
        sim:add_token("spec-default-token", { expires_in = 3600 })
        sim:seed("Products", h.PRODUCT, "Price_Books", { "1", "2" })
        local c = zcrm.configure { token = "spec-default-token", api_domain = sim.url }
        assert.equal(sim.url, c.api_domain)
        local res, err = zcrm.delink("Products", h.PRODUCT, "Price_Books", { "1", "2" })
        assert.is_nil(err)
        assert.equal(2, res.succeeded)
    end)

    it("comes from ZCRM_ACCESS_TOKEN, ZCRM_API_DOMAIN and ZCRM_VERSION", function()
        sim:add_token("spec-env-token", { expires_in = 3600 })
        sim:seed("Products", h.PRODUCT, "Price_Books", { "5" })
        local out = run_lua({ ZCRM_ACCESS_TOKEN = "spec-env-token", ZCRM_API_DOMAIN = sim.url, ZCRM_VERSION = "v8" },
            "local z=require'zcrm'; local r,e=z.delink('Products','" .. h.PRODUCT .. "','Price_Books',{'5'}); " ..
            "print(r and r.succeeded, e and tostring(e))")
        assert.equal("1\tnil\n", out)
        assert.equal("/crm/v8/Products/" .. h.PRODUCT .. "/Price_Books/5", sim:log()[1].uri)
    end)

    it("is missing without configure or ZCRM_ACCESS_TOKEN: INVALID_ARGUMENT, nothing sent", function()
        local out = run_lua({}, "local z=require'zcrm'; local r,e=z.delink('Products','1','Price_Books',{'5'}); " ..
                                "print(r, e.code)")
        assert.equal("nil\tINVALID_ARGUMENT\n", out)
    end)
end)
