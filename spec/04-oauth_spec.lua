-- zcrm.oauth_refresh: Zoho's refresh-token grant against the simulator's token
-- endpoint, with Zoho's quirks, and the data-centre table.
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"
local zcrm = require "zcrm"

local CLIENT_SECRET = "spec-client-secret-&=+/ %x"
local REFRESH_TOKEN = "spec-refresh-token-1000.abc"

describe("zcrm.oauth_refresh", function()
    local sim

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function()
        sim:reset()
        sim:oauth_client { client_id = "spec-client", client_secret = CLIENT_SECRET, refresh_token = REFRESH_TOKEN }
    end)

    local function refresher(overrides)
        local opts = { client_id = "spec-client", client_secret = CLIENT_SECRET,
                       refresh_token = REFRESH_TOKEN, accounts_url = sim.url }
        for k, v in pairs(overrides or {}) do opts[k] = v end
        return zcrm.oauth_refresh(opts)
    end

    it("grants an access token with its lifetime and api_domain (form-encoded POST)", function()
        local token, expires_in, api_domain = refresher()()
        assert.is_string(token)
        assert.equal(3600, expires_in)
        assert.equal(sim.url, api_domain)
        local log = sim:log()
        assert.equal("POST", log[1].method)
        assert.equal("/oauth/v2/token", log[1].uri) -- secrets travel in the body, not the URL
        assert.equal(1, sim:counters().token_grants)
    end)

    it("reads expires_in as milliseconds when expires_in_sec is present", function()
        sim:oauth_client { client_id = "spec-client", client_secret = CLIENT_SECRET, refresh_token = REFRESH_TOKEN,
                           quirk_ms = true, expires_in = 1800 }
        local _, expires_in = refresher()()
        assert.equal(1800, expires_in)
    end)

    it("treats HTTP 200 with invalid_client as a failure", function()
        local token, message = refresher { client_secret = "wrong-secret-value" }()
        assert.is_nil(token)
        assert.matches("invalid_client", message)
    end)

    it("treats HTTP 200 with invalid_code (a revoked refresh token) as a failure", function()
        local token, message = refresher { refresh_token = "spec-revoked-refresh-token" }()
        assert.is_nil(token)
        assert.matches("invalid_code", message)
    end)

    it("reports Zoho's throttle after 10 grants in 10 minutes", function()
        local refresh = refresher()
        for _ = 1, 10 do assert.is_string((refresh())) end
        local token, message = refresh()
        assert.is_nil(token)
        assert.matches("Access Denied", message)
        assert.equal(10, sim:counters().token_grants)
    end)

    it("reports a token endpoint that is down, or not JSON", function()
        local token, message = refresher { accounts_url = "http://127.0.0.1:9" }()
        assert.is_nil(token)
        assert.matches("TRANSPORT_ERROR", message)
        sim:inject { target = "token", status = 502, body = "<html>proxy</html>", count = 1 }
        token, message = refresher()()
        assert.is_nil(token)
        assert.matches("not JSON", message)
    end)

    it("drives a client: one grant serves many delinks", function()
        local client = zcrm.new { api_domain = sim.url, refresh = refresher() }
        sim:seed("Products", h.PRODUCT, "Price_Books", h.ids(300))
        for i = 0, 2 do
            local res, err = client:delink("Products", h.PRODUCT, "Price_Books", h.ids(100, i * 100))
            assert.is_nil(err)
            assert.equal(100, res.succeeded)
        end
        assert.equal(1, sim:counters().token_grants)
    end)

    it("keeps the client secret and refresh token out of a client's errors", function()
        sim:reset() -- the OAuth client is gone: every grant fails
        local client = zcrm.new { api_domain = sim.url, refresh = refresher() }
        local res, err = client:delink("Products", h.PRODUCT, "Price_Books", { "1" })
        assert.is_nil(res)
        assert.equal("TOKEN_REFRESH_FAILED", err.code)
        for _, secret in ipairs { CLIENT_SECRET, REFRESH_TOKEN } do
            assert.is_nil(tostring(err):find(secret, 1, true))
        end
    end)

    it("redacts the secrets when the token endpoint echoes them", function()
        sim:inject { target = "token", status = 200, count = 1,
                     body = '{"error":"invalid_client","error_description":"bad secret ' .. CLIENT_SECRET .. '"}' }
        local client = zcrm.new { api_domain = sim.url, refresh = refresher() } -- no token: refresh only
        local res, err = client:delink("Products", h.PRODUCT, "Price_Books", { "1" })
        assert.is_nil(res)
        assert.equal("TOKEN_REFRESH_FAILED", err.code)
        assert.is_nil(tostring(err):find(CLIENT_SECRET, 1, true), tostring(err))
        assert.matches("<redacted>", err.message, 1, true)
    end)

    it("checks its options", function()
        assert.has_error(function() zcrm.oauth_refresh { client_id = "x", client_secret = "y" } end)
        assert.has_error(function() refresher { client_secert = "typo" } end)
        assert.has_error(function() refresher { client_id = 42 } end)
        assert.has_error(function() refresher { dc = "eu" } end) -- both dc and accounts_url
        assert.has_error(function() refresher { accounts_url = "http://accounts.zoho.com" } end)
        assert.has_error(function()
            zcrm.oauth_refresh { client_id = "x", client_secret = "y", refresh_token = "z", dc = "mars" }
        end)
        assert.is_function(zcrm.oauth_refresh { client_id = "x", client_secret = "y", refresh_token = "z", dc = "jp" })
    end)
end)

describe("data centres", function()
    local expected = {
        us = { "https://accounts.zoho.com", "https://www.zohoapis.com" },
        eu = { "https://accounts.zoho.eu", "https://www.zohoapis.eu" },
        ["in"] = { "https://accounts.zoho.in", "https://www.zohoapis.in" },
        au = { "https://accounts.zoho.com.au", "https://www.zohoapis.com.au" },
        cn = { "https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn" },
        jp = { "https://accounts.zoho.jp", "https://www.zohoapis.jp" },
        ca = { "https://accounts.zohocloud.ca", "https://www.zohoapis.ca" },
        sa = { "https://accounts.zoho.sa", "https://www.zohoapis.sa" },
    }
    for name, want in pairs(expected) do
        it(name .. " has Zoho's accounts server and API domain", function()
            assert.same({ accounts = want[1], api_domain = want[2] }, zcrm.data_centres[name])
            assert.equal(want[2], zcrm.new { dc = name, token = "t" }.api_domain)
        end)
    end
    it("has exactly these", function()
        local n = 0
        for _ in pairs(zcrm.data_centres) do n = n + 1 end
        assert.equal(8, n)
    end)
end)
