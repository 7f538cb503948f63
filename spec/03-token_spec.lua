-- Token handling: refresh when there is no token, near expiry and on 401 INVALID_TOKEN
-- (then one retry); failures reported as TOKEN_REFRESH_FAILED; one refresh shared by
-- coroutines; no token in any message.
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"
local zcrm = require "zcrm"

local PRODUCT = h.PRODUCT

describe("token refresh", function()
    local sim

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function() sim:reset() end)

    -- A refresh callback that hands out fresh simulator tokens and counts its calls.
    local function refresher(expires_in)
        local r = { calls = 0 }
        function r.fn()
            r.calls = r.calls + 1
            local tok = "spec-fresh-token-" .. r.calls
            sim:add_token(tok, { expires_in = 3600 })
            return tok, expires_in
        end
        return r
    end

    it("fetches a token when there is none, then reuses it", function()
        local r = refresher(3600)
        local client = h.client(sim, { refresh = r.fn })
        sim:seed("Products", PRODUCT, "Price_Books", h.ids(3))
        for i = 1, 3 do
            local _, err = client:delink("Products", PRODUCT, "Price_Books", h.ids(1, i - 1))
            assert.is_nil(err)
        end
        assert.equal(1, r.calls)
        assert.equal(3, sim:counters().requests)
    end)

    it("refreshes a token that is within 60 s of its expiry before using it", function()
        local r = refresher(30)
        local client = h.client(sim, { refresh = r.fn })
        client:delink("Products", PRODUCT, "Price_Books", { "1" })
        client:delink("Products", PRODUCT, "Price_Books", { "1" })
        assert.equal(2, r.calls)
        local log = sim:log()
        assert.equal("Zoho-oauthtoken spec-fresh-token-1", log[1].authorization)
        assert.equal("Zoho-oauthtoken spec-fresh-token-2", log[2].authorization)
    end)

    it("on 401 INVALID_TOKEN refreshes once and retries the call with the new token", function()
        sim:add_token("spec-expired-token", { expires_in = -1 })
        sim:seed("Products", PRODUCT, "Price_Books", h.ids(2))
        local r = refresher(3600)
        local client = h.client(sim, { token = "spec-expired-token", refresh = r.fn })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", h.ids(2))
        assert.is_nil(err)
        assert.equal(2, res.succeeded)
        assert.equal(1, r.calls)
        local log = sim:log()
        assert.equal(2, #log)
        assert.equal(401, log[1].status)
        assert.equal("Zoho-oauthtoken spec-fresh-token-1", log[2].authorization)
        assert.equal(log[1].uri, log[2].uri)
    end)

    -- An expired token, and the calls refused with it sent again with one new token.
    for _, case in ipairs {
        { "continues the remaining batches with the new token (one call at a time)", n = 250, concurrency = 1,
          per_call = { 100, 100, 100, 50 } },
        { "refreshes once when every call in flight is refused, and sends each again", n = 250, concurrency = 3,
          requests = 6 },
        { "sends a refused call again even when more batches wait for its slot", n = 500, concurrency = 2 },
    } do
        it(case[1], function()
            sim:add_token("spec-expired-token", { expires_in = -1 })
            local ids = h.ids(case.n)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local r = refresher(3600)
            local client = h.client(sim, { token = "spec-expired-token", refresh = r.fn,
                                           concurrency = case.concurrency })
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            assert.is_nil(err)
            assert.equal(case.n, res.succeeded)
            assert.equal(1, r.calls)
            if case.per_call then assert.same(case.per_call, sim:counters().ids_per_request) end
            if case.requests then assert.equal(case.requests, sim:counters().requests) end
        end)
    end

    it("retries only once when the new token is refused too", function()
        local calls = 0
        local client = h.client(sim, { concurrency = 1, refresh = function()
            calls = calls + 1
            return "spec-unknown-token-" .. calls, 3600
        end })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", h.ids(250))
        h.assert_accounted(res, h.ids(250))
        assert.equal("INVALID_TOKEN", err.code)
        assert.equal(401, err.http_status)
        assert.equal(2, calls) -- the first token, then one refresh after the 401
        assert.equal(4, sim:counters().requests) -- batch 1 twice, batches 2 and 3 once
    end)

    it("passes INVALID_TOKEN through when there is no refresh callback", function()
        sim:add_token("spec-expired-token", { expires_in = -1 })
        local client = h.client(sim, { token = "spec-expired-token" })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
        assert.equal(2, res.failed)
        assert.equal("INVALID_TOKEN", err.code)
        assert.equal(1, sim:counters().requests)
    end)

    describe("a refresh that fails", function()
        for _, case in ipairs {
            { "returns nil and a message", function() return nil, "accounts said no" end, "accounts said no" },
            { "raises", function() error("callback exploded") end, "callback exploded" },
            -- delink runs outside any coroutine here, so a yield has nowhere to go
            { "yields where it may not", function() return coroutine.yield("a token?") end, "yield" },
            { "returns a number", function() return 42 end, "not an access token" },
            { "returns a token with CR/LF", function() return "tok\r\nX-Evil: 1" end, "not an access token" },
            { "returns a bad api_domain", function() return "spec-fresh", 3600, "http://evil.example" end, "api_domain" },
        } do
            it(case[1] .. ": TOKEN_REFRESH_FAILED before anything is sent", function()
                local client = h.client(sim, { refresh = case[2] })
                local res, err = client:delink("Products", PRODUCT, "Price_Books", h.ids(5))
                assert.is_nil(res)
                assert.equal("TOKEN_REFRESH_FAILED", err.code)
                assert.matches(case[3], err.message, 1, true)
                assert.equal(0, sim:counters().requests)
            end)
        end

        it("after a 401: the ids not yet delinked get TOKEN_REFRESH_FAILED", function()
            sim:add_token("spec-expired-token", { expires_in = -1 })
            local client = h.client(sim, { token = "spec-expired-token", concurrency = 1, refresh = function()
                return nil, "accounts unreachable"
            end })
            local ids = h.ids(250)
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            h.assert_accounted(res, ids)
            assert.equal(250, res.failed)
            for i = 1, 250 do assert.equal("TOKEN_REFRESH_FAILED", res[i].code) end
            assert.matches("accounts unreachable", err.message)
            assert.equal(1, sim:counters().requests)
        end)

        it("midway: delinked ids stay delinked, the rest get TOKEN_REFRESH_FAILED", function()
            local calls = 0
            local client = h.client(sim, { refresh = function()
                calls = calls + 1
                if calls > 1 then return nil, "second refresh refused" end
                sim:add_token("spec-short-token", { expires_in = 3600 })
                return "spec-short-token", 0 -- already inside the 60 s margin for the next batch
            end })
            local ids = h.ids(250)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            h.assert_accounted(res, ids)
            assert.equal(100, res.succeeded)
            assert.equal(150, res.failed)
            assert.equal("TOKEN_REFRESH_FAILED", res[101].code)
            assert.equal("TOKEN_REFRESH_FAILED", err.code)
            assert.equal(150, #sim:relations("Products", PRODUCT, "Price_Books"))
        end)
    end)

    it("adopts the api_domain a refresh returns", function()
        local client = zcrm.new { api_domain = "http://127.0.0.1:9", refresh = function()
            sim:add_token("spec-moved-token", { expires_in = 3600 })
            return "spec-moved-token", 3600, sim.url
        end }
        sim:seed("Products", PRODUCT, "Price_Books", { "1" })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1" })
        assert.is_nil(err)
        assert.equal(1, res.succeeded)
        assert.equal(sim.url, client.api_domain)
    end)

    it("shares one refresh in flight between coroutines of one client", function()
        local calls = 0
        local client = h.client(sim, { refresh = function()
            calls = calls + 1
            coroutine.yield() -- e.g. a refresh doing non-blocking I/O
            sim:add_token("spec-shared-token", { expires_in = 3600 })
            return "spec-shared-token", 3600
        end })
        sim:seed("Products", PRODUCT, "Price_Books", { "1", "2" })
        local results = {}
        local workers = {}
        for i = 1, 2 do
            workers[i] = coroutine.create(function()
                results[i] = { client:delink("Products", PRODUCT, "Price_Books", { tostring(i) }) }
            end)
        end
        -- A round-robin scheduler.
        local alive = 2
        while alive > 0 do
            alive = 0
            for i = 1, 2 do
                if coroutine.status(workers[i]) ~= "dead" then
                    assert(coroutine.resume(workers[i]))
                    if coroutine.status(workers[i]) ~= "dead" then alive = alive + 1 end
                end
            end
        end
        assert.equal(1, calls)
        for i = 1, 2 do
            assert.is_nil(results[i][2])
            assert.equal(1, results[i][1].succeeded)
        end
    end)

    it("never shows the token or a secret in messages, tostring or the client table", function()
        local secret = "spec-secret-token-0123456789"
        sim:add_token(secret, { expires_in = -1 })
        local client = h.client(sim, { token = secret, refresh = function()
            error("could not renew " .. secret)
        end })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
        local seen = { tostring(err), err.message, tostring(client), tostring(res[1]), res[2].message }
        for k, v in pairs(client) do seen[#seen + 1] = tostring(k) .. "=" .. tostring(v) end
        for _, text in ipairs(seen) do assert.is_nil(text:find(secret, 1, true), text) end
        assert.matches("<redacted>", err.message, 1, true)
    end)
end)
