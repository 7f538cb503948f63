-- client:delink against the simulator: URL forms, batching as the server counts it,
-- order and duplicates, per-id and whole-request errors, status codes, bad bodies.
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"

local PRODUCT, CAMPAIGN = h.PRODUCT, h.CAMPAIGN

-- How each answer maps to results, so clients here do not retry (retries = 0): the
-- retries themselves are specced in spec/11-faults_spec.lua.
describe("client:delink", function()
    local sim, client

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function()
        sim:reset()
        client = h.client(sim, { retries = 0 })
    end)

    it("delinks one id with the /{related_id} form", function()
        sim:seed("Campaigns", CAMPAIGN, "Contacts", { "3652397000000925128", "3652397000000925129" })
        local res, err = client:delink("Campaigns", CAMPAIGN, "Contacts", "3652397000000925128")
        assert.is_nil(err)
        assert.same({ id = "3652397000000925128", status = "success", code = "SUCCESS",
                      message = "relation removed", details = { id = "3652397000000925128" } }, res[1])
        assert.equal(1, res.succeeded)
        assert.equal(0, res.failed)
        local log = sim:log()
        assert.equal(1, #log)
        assert.equal("DELETE", log[1].method)
        assert.equal("/crm/v2.1/Campaigns/" .. CAMPAIGN .. "/Contacts/3652397000000925128", log[1].uri)
        assert.equal("Zoho-oauthtoken spec-token-valid", log[1].authorization)
        assert.same({ "3652397000000925129" }, sim:relations("Campaigns", CAMPAIGN, "Contacts"))
    end)

    it("delinks several ids with the ?ids= form", function()
        local ids = { "3477061000007596026", "3477061000007246019" }
        sim:seed("Products", PRODUCT, "Price_Books", ids)
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        assert.is_nil(err)
        h.assert_accounted(res, ids)
        assert.equal(2, res.succeeded)
        assert.equal("/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books?ids=" .. table.concat(ids, ","), sim:log()[1].uri)
        assert.same({}, sim:relations("Products", PRODUCT, "Price_Books"))
    end)

    for _, case in ipairs {
        { n = 1, per_call = { 1 } }, { n = 100, per_call = { 100 } }, { n = 101, per_call = { 100, 1 } },
        { n = 250, per_call = { 100, 100, 50 } }, { n = 1000, per_call = { 100, 100, 100, 100, 100, 100, 100, 100, 100, 100 } },
    } do
        it("delinks " .. case.n .. " ids in " .. #case.per_call .. " call(s)", function()
            local ids = h.ids(case.n)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            assert.is_nil(err)
            h.assert_accounted(res, ids)
            assert.equal(case.n, res.succeeded)
            local counters = sim:counters()
            assert.equal(#case.per_call, counters.requests)
            local per_call = counters.ids_per_request -- arrival order varies with concurrency
            table.sort(per_call, function(a, b) return a > b end)
            assert.same(case.per_call, per_call)
            assert.same({}, sim:relations("Products", PRODUCT, "Price_Books"))
        end)
    end

    it("keeps the caller's order and sends a duplicate once, reporting it at every position", function()
        local ids = { "30", "10", "20", "10", "30", "30" }
        sim:seed("Products", PRODUCT, "Price_Books", { "10", "30" })
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        h.assert_accounted(res, ids)
        assert.same({ 3 }, sim:counters().ids_per_request)
        assert.same({ "success", "success", "error", "success", "success", "success" },
                    { res[1].status, res[2].status, res[3].status, res[4].status, res[5].status, res[6].status })
        assert.equal("INVALID_DATA", res[3].code)
        assert.equal("20", err.id)
        assert.equal(5, res.succeeded)
        assert.equal(1, res.failed)
        assert.are_not.equal(res[1], res[5]) -- each position has its own table
        assert.same(res[1], res[5])
    end)

    it("accepts integer ids and reports them as strings", function()
        sim:seed("Products", PRODUCT, "Price_Books", { "12345" })
        local res = client:delink("Products", tonumber(PRODUCT:sub(1, 15)), "Price_Books", { 12345 })
        assert.equal("12345", res[1].id)
        assert.equal("INVALID_DATA", res[1].code) -- seeded under another record id
    end)

    it("returns an empty result and sends nothing for an empty list", function()
        local res, err = client:delink("Products", PRODUCT, "Price_Books", {})
        assert.is_nil(err)
        assert.same({ succeeded = 0, failed = 0 }, res)
        assert.equal(0, sim:counters().requests)
    end)

    describe("refuses bad input with INVALID_ARGUMENT and sends nothing", function()
        for _, case in ipairs {
            { "a float id", { "1", 2.5 } }, { "a negative id", { -3 } }, { "a comma in an id", "12,34" },
            { "a path in an id", "1/../2" }, { "an id with letters", { "12a4" } }, { "CR/LF in an id", { "1\r\n" } },
            { "an id of 20 digits", { "12345678901234567890" } }, { "a boolean id", { true } },
        } do
            it("given " .. case[1], function()
                local res, err = client:delink("Products", PRODUCT, "Price_Books", case[2])
                assert.is_nil(res)
                assert.equal("INVALID_ARGUMENT", err.code)
                assert.equal(0, sim:counters().requests)
            end)
        end
        for _, case in ipairs {
            { "module", "Price Books", PRODUCT, "Price_Books" }, { "module", "../Leads", PRODUCT, "Price_Books" },
            { "record id", "Products", "12a", "Price_Books" }, { "record id", "Products", "1/2", "Price_Books" },
            { "related list", "Products", PRODUCT, "Price_Books?x=1" }, { "related list", "Products", PRODUCT, "" },
        } do
            it("given a bad " .. case[1] .. " " .. string.format("%q", case[2] .. "/" .. case[3] .. "/" .. case[4]), function()
                local res, err = client:delink(case[2], case[3], case[4], { "1" })
                assert.is_nil(res)
                assert.equal("INVALID_ARGUMENT", err.code)
                assert.equal(0, sim:counters().requests)
            end)
        end
        it("and one bad id among 250 stops all of them", function()
            local ids = h.ids(250)
            ids[200] = "12,34"
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            assert.is_nil(res)
            assert.matches("ids%[200%]", err.message)
            assert.equal(0, sim:counters().requests)
        end)
    end)

    it("raises on wrong argument types", function()
        assert.has_error(function() client:delink(42, PRODUCT, "Price_Books", { "1" }) end)
        assert.has_error(function() client:delink("Products", {}, "Price_Books", { "1" }) end)
        assert.has_error(function() client:delink("Products", PRODUCT, nil, { "1" }) end)
        assert.has_error(function() client:delink("Products", PRODUCT, "Price_Books", nil) end)
        assert.equal(0, sim:counters().requests)
    end)

    describe("per-id results", function()
        it("reports unrelated ids as INVALID_DATA and still delinks the rest (207 by default)", function()
            sim:seed("Products", PRODUCT, "Price_Books", { "1", "3" })
            local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1", "2", "3" })
            h.assert_accounted(res, { "1", "2", "3" })
            assert.equal("error", res[2].status)
            assert.equal("INVALID_DATA", res[2].code)
            assert.equal("the related id given seems to be invalid", res[2].message)
            assert.equal(207, res[2].http_status)
            assert.same({ id = "2" }, res[2].details)
            assert.equal(res[2].code, err.code)
            assert.equal(2, res.succeeded)
            assert.equal(207, sim:log()[1].status)
        end)

        it("reads a mixed result answered with 200", function()
            sim:config { mixed_status = 200 }
            sim:seed("Products", PRODUCT, "Price_Books", { "1" })
            local res = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
            assert.equal("success", res[1].status)
            assert.equal("INVALID_DATA", res[2].code)
            assert.equal(200, sim:log()[1].status)
        end)

        it("reads a 400 that carries a data array entry by entry", function()
            local res, err = client:delink("Products", PRODUCT, "Price_Books", { "7", "8" })
            assert.equal(400, sim:log()[1].status)
            h.assert_accounted(res, { "7", "8" })
            assert.equal(2, res.failed)
            assert.equal("INVALID_DATA", err.code)
            assert.equal(400, err.http_status)
            assert.equal("7", err.id)
        end)
    end)

    describe("whole-request errors give every id the error", function()
        local natural = {
            { code = "INVALID_MODULE", status = 400, call = { "Widgets", PRODUCT, "Price_Books" } },
            { code = "INVALID_URL_PATTERN", status = 404, version = "v99" },
            { code = "INVALID_DATA", status = 400, call = { "Products", PRODUCT, "Not_A_Relation" } },
            { code = "OAUTH_SCOPE_MISMATCH", status = 401, token = { scope = "ZohoCRM.modules.Leads.READ" } },
            { code = "NO_PERMISSION", status = 403, token = { no_permission = true } },
            { code = "AUTHORIZATION_FAILED", status = 400, token = { authorization_failed = true } },
            { code = "INVALID_TOKEN", status = 401, token = { expires_in = -10 } },
        }
        for _, case in ipairs(natural) do
            it(case.code .. " (" .. case.status .. ")", function()
                local opts = { version = case.version, retries = 0 }
                if case.token then
                    opts.token = "spec-token-special"
                    sim:add_token(opts.token, case.token)
                end
                local c = h.client(sim, opts)
                local call = case.call or { "Products", PRODUCT, "Price_Books" }
                local res, err = c:delink(call[1], call[2], call[3], { "1", "2" })
                h.assert_accounted(res, { "1", "2" })
                for i = 1, 2 do
                    assert.equal(case.code, res[i].code)
                    assert.equal(case.status, res[i].http_status)
                    assert.is_string(res[i].message)
                end
                assert.equal(case.code, err.code)
                assert.equal(1, sim:counters().requests)
            end)
        end

        for _, code in ipairs { "INTERNAL_ERROR", "INVALID_REQUEST_METHOD", "UNABLE_TO_PARSE_DATA_TYPE",
                                "INVALID_MODULE", "INVALID_URL_PATTERN", "NO_PERMISSION", "INVALID_DATA",
                                "AUTHORIZATION_FAILED", "OAUTH_SCOPE_MISMATCH" } do
            it(code .. " as the simulator sends it", function()
                sim:inject { code = code, count = 1 }
                local res, err = client:delink("Products", PRODUCT, "Price_Books", h.ids(3))
                h.assert_accounted(res, h.ids(3))
                assert.equal(3, res.failed)
                assert.equal(code, err.code)
                assert.equal(sim:log()[1].status, err.http_status)
            end)
        end

        it("stops at nothing: later batches still run after one batch fails", function()
            local ids = h.ids(250)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            sim:inject { code = "INTERNAL_ERROR", count = 1 }
            local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
            h.assert_accounted(res, ids)
            assert.equal(100, res.failed)
            assert.equal(150, res.succeeded)
            assert.equal("INTERNAL_ERROR", err.code)
            assert.equal(500, err.http_status)
            assert.equal(100, #sim:relations("Products", PRODUCT, "Price_Books"))
        end)
    end)

    describe("bodies that are not Zoho's give BAD_RESPONSE, never a crash", function()
        for _, case in ipairs {
            { "an HTML 502", { status = 502, body = "<html>bad gateway</html>", content_type = "text/html" } },
            { "truncated JSON", { status = 200, body = '{"data":[{"code":"SUCC' } },
            { "an empty 200", { status = 200, body = "" } },
            { "JSON of another shape", { status = 200, body = '{"items":[1,2]}' } },
            { "a JSON string", { status = 200, body = '"ok"' } },
            { "data that is not an array of objects", { status = 200, body = '{"data":[1,"x",null]}' } },
            { "a redirect", { status = 302, body = "", headers = { Location = "https://elsewhere.example/" } } },
        } do
            it("for " .. case[1], function()
                local fault = case[2]
                fault.count = 1
                sim:inject(fault)
                local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
                h.assert_accounted(res, { "1", "2" })
                assert.equal("BAD_RESPONSE", res[1].code)
                assert.equal("BAD_RESPONSE", res[2].code)
                assert.equal(fault.status, err.http_status)
            end)
        end

        it("for a data array that names other ids, or too few", function()
            sim:inject { status = 200, count = 1, body = '{"data":[{"code":"SUCCESS","details":{"id":"999"},' ..
                         '"message":"relation removed","status":"success"},{"code":"SUCCESS","details":{"id":"2"},' ..
                         '"message":"relation removed","status":"success"}]}' }
            local res = client:delink("Products", PRODUCT, "Price_Books", { "1", "2", "3" })
            h.assert_accounted(res, { "1", "2", "3" })
            assert.equal("BAD_RESPONSE", res[1].code)
            assert.equal("SUCCESS", res[2].code)
            assert.equal("BAD_RESPONSE", res[3].code)
        end)

        it("maps entries by id whatever their order", function()
            local function entry(id, ok)
                return string.format('{"code":"%s","details":{"id":"%s"},"message":"m","status":"%s"}',
                    ok and "SUCCESS" or "INVALID_DATA", id, ok and "success" or "error")
            end
            sim:inject { status = 207, count = 1,
                         body = '{"data":[' .. entry("3", true) .. ',' .. entry("1", false) .. ',' .. entry("2", true) .. ']}' }
            local res = client:delink("Products", PRODUCT, "Price_Books", { "1", "2", "3" })
            h.assert_accounted(res, { "1", "2", "3" })
            assert.same({ "INVALID_DATA", "SUCCESS", "SUCCESS" }, { res[1].code, res[2].code, res[3].code })
        end)

        local NO_ID = '{"code":"SUCCESS","details":{},"message":"relation removed","status":"success"}'
        it("for entries without ids when their count differs from the ids sent", function()
            sim:inject { status = 200, count = 1, body = '{"data":[' .. NO_ID .. ']}' }
            local res = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
            assert.equal("BAD_RESPONSE", res[1].code)
            assert.equal("BAD_RESPONSE", res[2].code)
        end)

        it("but maps entries without ids by position when there is one per id", function()
            sim:inject { status = 200, count = 1, body = '{"data":[' .. NO_ID .. ',' .. NO_ID .. ']}' }
            local res = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
            assert.equal("SUCCESS", res[1].code)
            assert.equal("SUCCESS", res[2].code)
        end)
    end)

    it("never follows a redirect: the token does not reach the redirect's target", function()
        local other = simulator.start()
        local ok, failure = pcall(function()
            sim:inject { status = 302, body = "", count = 1,
                         headers = { Location = other.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books?ids=1,2" } }
            local res, err = client:delink("Products", PRODUCT, "Price_Books", { "1", "2" })
            h.assert_accounted(res, { "1", "2" })
            assert.equal("BAD_RESPONSE", err.code)
            assert.equal(302, err.http_status)
            assert.matches("redirect", err.message)
            assert.same({}, other:log())
        end)
        other:stop()
        assert(ok, failure)
    end)

    it("reports a server that is gone as TRANSPORT_ERROR for every id", function()
        local gone = require("zcrm").new { token = "t0ken-for-nothing", api_domain = "http://127.0.0.1:9",
                                                  retries = 0 }
        local res, err = gone:delink("Products", PRODUCT, "Price_Books", h.ids(150))
        h.assert_accounted(res, h.ids(150))
        assert.equal(150, res.failed)
        assert.equal("TRANSPORT_ERROR", err.code)
        assert.is_nil(err.http_status)
    end)

    it("cuts off a body larger than the session's cap with BAD_RESPONSE", function()
        local session = require("zcrm.core").session { max_body = 64 }
        sim:add_token("spec-cap-token", {})
        local status, code, message = session:request("DELETE",
            sim.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books?ids=" .. table.concat(h.ids(100), ","),
            "spec-cap-token")
        assert.is_nil(status)
        assert.equal("BAD_RESPONSE", code)
        assert.matches("exceeds 64 bytes", message)
        session:close()
    end)

    it("reports a server slower than the timeout as TIMEOUT", function()
        sim:config { latency_ms = 1500 }
        local slow = h.client(sim, { timeout = 0.3, retries = 0 })
        local res, err = slow:delink("Products", PRODUCT, "Price_Books", { "1" })
        assert.equal("TIMEOUT", err.code)
        assert.equal("TIMEOUT", res[1].code)
    end)
end)
