-- Faults (issue 5, README "Failure handling"): each fault the simulator can inject, and
-- after every one THE INVARIANT (invariant() below): every requested id is in the result
-- exactly once, in order; the simulator's record of removed relations equals exactly the
-- ids reported "success"; nothing is reported success that the server did not confirm.
-- Then the secrets: nothing zcrm produced in this file shows a token or an OAuth secret.
local simulator = require "spec.support.simulator"
local nginx = require "spec.support.nginx"
local h = require "spec.support.helpers"
local zcrm = require "zcrm"
local cjson = require "cjson"
local socket = require "socket"

local MODULE, PRODUCT, RELATED = "Products", h.PRODUCT, "Price_Books"

-- Secrets used in this file. Every access token the simulator saw (its log) is added
-- to these as the specs run (the OAuth grants' tokens are random).
local TOKEN = "spec-faults-token-1000.a1b2c3d4e5f6"
local CLIENT_ID = "1000.SPECFAULTSCLIENT"
local CLIENT_SECRET = "spec-faults-client-secret-9f8e7d6c"
local REFRESH_TOKEN = "1000.spec-faults-refresh-token-5a4b3c"

-- Ids sort as the simulator sorts them (shorter first, then by text).
local function sorted(list)
    table.sort(list, function(a, b)
        if #a ~= #b then return #a < #b end
        return a < b
    end)
    return list
end

describe("faults", function()
    local sim
    local outputs = {}  -- everything zcrm produced in this file: { text, spec name }
    local secrets = { TOKEN, CLIENT_SECRET, REFRESH_TOKEN } -- and every token the simulator saw
    local known_secret = { [TOKEN] = true, [CLIENT_SECRET] = true, [REFRESH_TOKEN] = true }
    local current = "?" -- the running spec's name, for reports

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function()
        sim:reset()
        sim:seed(MODULE, PRODUCT, RELATED, {}) -- makes the related list valid
    end)
    -- Tokens that travelled (granted by the OAuth flow, handed out by callbacks) become
    -- secrets too: after each spec, and before a reset inside one.
    local function learn_tokens()
        for _, e in ipairs(sim:log()) do
            local tok = e.authorization and e.authorization:match("^Zoho%-oauthtoken (%S+)$")
            if tok and #tok >= 8 and not known_secret[tok] then
                known_secret[tok] = true
                secrets[#secrets + 1] = tok
            end
        end
    end
    after_each(learn_tokens)
    local function reset()
        learn_tokens()
        sim:reset()
    end

    local function output(text)
        outputs[#outputs + 1] = { text = tostring(text), spec = current }
    end

    -- The text of everything a delink gave back: tostring and message of err and of
    -- every entry. (Not `details`: Zoho's data, passed through as it came.)
    local function collect(res, err)
        if err ~= nil then
            output(tostring(err))
            if type(err) == "table" then output(err.message) end
        end
        for _, e in ipairs(res or {}) do
            output(tostring(e))
            output(e.message)
        end
    end

    -- A client for the simulator: TOKEN (registered) unless a token or refresh is given;
    -- small backoff and a short timeout unless given.
    local function client(opts)
        opts = opts or {}
        if opts.token == nil and opts.refresh == nil then
            opts.token = TOKEN
            sim:add_token(TOKEN, { expires_in = 3600 })
        end
        opts.api_domain = opts.api_domain or sim.url
        opts.backoff = opts.backoff or 0.01
        opts.timeout = opts.timeout or 5
        opts.connect_timeout = opts.connect_timeout or 2
        local c = zcrm.new(opts)
        output(tostring(c))
        for k, v in pairs(c) do output(tostring(k) .. "=" .. tostring(v)) end
        return c
    end

    -- Waits until the simulator has no request in flight (a call the client gave up on
    -- may still be running there, and may still remove relations).
    local function settle()
        local t0 = socket.gettime()
        while sim:counters().in_flight > 0 do
            assert(socket.gettime() - t0 < 5, "the simulator still has requests in flight after 5 s")
            socket.sleep(0.02)
        end
    end

    -- What the simulator had done before the delink under test, so that a spec may make
    -- several delinks: invariant() looks at what this one did.
    local baseline

    -- res, err, seconds
    local function delink(c, ids)
        settle()
        local before = {}
        for _, id in ipairs(sim:removed(MODULE, PRODUCT, RELATED)) do before[id] = true end
        baseline = { removed = before, requests = sim:counters().requests, per_id = sim:requests_per_id() }
        local t0 = socket.gettime()
        local res, err = c:delink(MODULE, PRODUCT, RELATED, ids)
        local elapsed = socket.gettime() - t0
        collect(res, err)
        return res, err, elapsed
    end

    -- The API requests the simulator received, in arrival order, each with its ids.
    local function api_log()
        local out = {}
        for _, e in ipairs(sim:log()) do
            if e.uri:sub(1, 5) == "/crm/" then
                e.ids = simulator.uri_ids(e.uri)
                out[#out + 1] = e
            end
        end
        return out
    end

    -- THE INVARIANT, after every fault spec.
    --  * res nil (nothing sent): err is a zcrm error, no API request was made, nothing removed;
    --  * else every requested id exactly once, in order (h.assert_accounted); err is the
    --    first failed entry (nil when none failed);
    --  * the simulator's removed relations are exactly the ids reported "success";
    --  * a success is SUCCESS (the server said so) or ALREADY_REMOVED (the server said
    --    "not related" when the call was sent again: so the id was sent at least twice).
    -- All of it about what the delink just made did (see `baseline`).
    -- opts.never_related: ids never seeded that README documents are reported
    -- ALREADY_REMOVED after a lost answer (the one documented exception): each must be
    -- ALREADY_REMOVED and not in the simulator's removed set.
    local function invariant(res, err, ids, opts)
        opts = opts or {}
        settle()
        local removed = {} -- by this delink
        for _, id in ipairs(sim:removed(MODULE, PRODUCT, RELATED)) do
            if not baseline.removed[id] then removed[#removed + 1] = id end
        end
        if res == nil then
            assert.is_true(zcrm.is_error(err), "nil result without a zcrm error")
            assert.equal(baseline.requests, sim:counters().requests, "a nil result, yet API requests were made")
            assert.same({}, removed)
            return
        end
        h.assert_accounted(res, ids)
        local first_failed
        for i = 1, #res do
            if res[i].status ~= "success" then first_failed = res[i] break end
        end
        assert.equal(first_failed, err, "err is not the first failed entry")
        local exempt = {}
        for _, id in ipairs(opts.never_related or {}) do exempt[id] = true end
        local per_id = sim:requests_per_id()
        for id, n in pairs(baseline.per_id) do per_id[id] = per_id[id] - n end
        local success, seen = {}, {}
        for _, e in ipairs(res) do
            if e.status == "success" then
                assert.is_truthy(e.code == "SUCCESS" or e.code == "ALREADY_REMOVED",
                                 "a success with code " .. tostring(e.code))
                if e.code == "ALREADY_REMOVED" then
                    assert.is_true((per_id[e.id] or 0) >= 2,
                                   "ALREADY_REMOVED for id " .. e.id .. " that was sent " .. (per_id[e.id] or 0) .. " time(s)")
                end
                if exempt[e.id] then
                    assert.equal("ALREADY_REMOVED", e.code)
                elseif not seen[e.id] then
                    seen[e.id] = true
                    success[#success + 1] = e.id
                end
            else
                assert.is_true(zcrm.is_error(e))
            end
        end
        assert.same(sorted(success), removed, "the simulator's removed relations are not the ids reported success")
        for id in pairs(exempt) do
            for _, r in ipairs(removed) do assert.are_not.equal(id, r) end
        end
    end

    ---------------------------------------------------------------------------------
    describe("429 and 5xx", function()
        for _, case in ipairs {
            { "429 TOO_MANY_REQUESTS without Retry-After", { code = "TOO_MANY_REQUESTS" }, 429 },
            { "500 INTERNAL_ERROR (flat error)", { code = "INTERNAL_ERROR" }, 500 },
            { "an HTML 502 from a proxy", { status = 502, body = "<html><body>502 Bad Gateway</body></html>",
                                            content_type = "text/html" }, 502 },
            { "503 with an empty body", { status = 503, body = "", content_type = "text/plain" }, 503 },
        } do
            it(case[1] .. " twice: retried, then every id succeeds", function()
                current = case[1] .. " retried"
                local ids = h.ids(3)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local fault = { count = 2 }
                for k, v in pairs(case[2]) do fault[k] = v end
                sim:inject(fault)
                local res, err = delink(client { retries = 3 }, ids)
                invariant(res, err, ids)
                assert.is_nil(err)
                assert.equal(3, res.succeeded)
                for _, e in ipairs(res) do assert.equal("SUCCESS", e.code) end
                local statuses = {}
                for i, e in ipairs(api_log()) do statuses[i] = e.status end
                assert.same({ case[3], case[3], 200 }, statuses)
            end)
        end

        it("429 with Retry-After: 1 waits at least a second, and only that batch waits", function()
            current = "429 Retry-After"
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "1" } }
            local res, err, elapsed = delink(client { retries = 3, concurrency = 2 }, ids)
            invariant(res, err, ids)
            assert.is_nil(err)
            assert.equal(250, res.succeeded)
            assert.is_true(elapsed >= 0.95, "retried after " .. elapsed .. " s, before Retry-After")
            assert.is_true(elapsed < 3, "took " .. elapsed .. " s")
            local log = api_log()
            assert.equal(4, #log)
            local refused = {}
            for _, e in ipairs(log) do
                if e.status == 429 then refused[#refused + 1] = e end
            end
            assert.equal(1, #refused)
            -- The other batches did not wait for it: its retry is the last request.
            assert.equal(refused[1].uri, log[#log].uri)
            assert.equal(200, log[#log].status)
        end)

        it("429 without Retry-After is retried after the (small) backoff", function()
            current = "429 no Retry-After"
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { code = "TOO_MANY_REQUESTS", count = 2 }
            local res, err, elapsed = delink(client { retries = 3, concurrency = 2, backoff = 0.01 }, ids)
            invariant(res, err, ids)
            assert.is_nil(err)
            assert.equal(5, sim:counters().requests)
            assert.is_true(elapsed < 0.8, "took " .. elapsed .. " s")
        end)

        -- 3 batches, retries = 1, and 3 x 1 + 1 faults: whatever order the calls arrive
        -- in, at least one batch gets a fault on both of its tries (fails for good) and at
        -- least one gets none on its last try (succeeds). The log says which is which.
        for _, case in ipairs {
            { "429 TOO_MANY_REQUESTS", { code = "TOO_MANY_REQUESTS" }, 429, "TOO_MANY_REQUESTS" },
            { "500 INTERNAL_ERROR", { code = "INTERNAL_ERROR" }, 500, "INTERNAL_ERROR" },
            { "an HTML 502", { status = 502, body = "<html>Bad Gateway</html>", content_type = "text/html" }, 502,
              "BAD_RESPONSE" },
            { "503", { status = 503, body = "Service Unavailable", content_type = "text/plain" }, 503,
              "BAD_RESPONSE" },
        } do
            it(case[1] .. " past the retries: that batch's ids get " .. case[4] .. ", the other batches succeed",
               function()
                current = case[1] .. " exhausted"
                local retries, ids = 1, h.ids(250)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local fault = { count = 3 * retries + 1 }
                for k, v in pairs(case[2]) do fault[k] = v end
                sim:inject(fault)
                local res, err = delink(client { retries = retries, concurrency = 3 }, ids)
                invariant(res, err, ids)
                local last, tries = {}, {}
                local faulted = 0
                for _, e in ipairs(api_log()) do
                    if e.status == case[3] then faulted = faulted + 1 end
                    for _, id in ipairs(e.ids) do
                        last[id] = e
                        tries[id] = (tries[id] or 0) + 1
                    end
                end
                assert.equal(fault.count, faulted) -- every fault was served
                local failed_batches, ok_batches = {}, {}
                for i, id in ipairs(ids) do
                    local e, answer = res[i], last[id]
                    if answer.status == 200 then
                        assert.equal("SUCCESS", e.code)
                        ok_batches[answer.uri] = true
                    else
                        assert.equal(case[3], answer.status)
                        assert.equal("error", e.status)
                        assert.equal(case[4], e.code)
                        assert.equal(case[3], e.http_status)
                        assert.equal(retries + 1, tries[id]) -- sent, then retried `retries` times
                        failed_batches[answer.uri] = true
                    end
                end
                assert.is_not_nil(next(failed_batches), "no batch failed for good")
                assert.is_not_nil(next(ok_batches), "no batch succeeded")
                assert.equal(case[4], err.code)
            end)
        end

        for _, case in ipairs {
            { "500", { code = "INTERNAL_ERROR" }, "INTERNAL_ERROR" },
            { "429", { code = "TOO_MANY_REQUESTS" }, "TOO_MANY_REQUESTS" },
            { "a connection reset", { action = "reset" }, "TRANSPORT_ERROR" },
        } do
            it("retries = 0 sends once: " .. case[1] .. " gives " .. case[3], function()
                current = "retries=0 " .. case[1]
                local ids = h.ids(3)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local fault = { count = 5 }
                for k, v in pairs(case[2]) do fault[k] = v end
                sim:inject(fault)
                local res, err = delink(client { retries = 0 }, ids)
                invariant(res, err, ids)
                assert.equal(1, sim:counters().requests)
                assert.equal(3, res.failed)
                for _, e in ipairs(res) do assert.equal(case[3], e.code) end
            end)
        end

        it("the deadline stops retries: a Retry-After past it is not waited for", function()
            current = "deadline Retry-After"
            local ids = h.ids(3)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "1" }, count = 5 }
            local res, err, elapsed = delink(client { retries = 3, deadline = 0.2 }, ids)
            invariant(res, err, ids)
            assert.equal(1, sim:counters().requests)
            assert.equal("TOO_MANY_REQUESTS", err.code)
            assert.equal(429, err.http_status)
            for _, e in ipairs(res) do assert.equal("TOO_MANY_REQUESTS", e.code) end
            assert.is_true(elapsed < 0.8, "took " .. elapsed .. " s")
        end)

        it("without a deadline, a Retry-After over 60 s is not waited for either", function()
            current = "long Retry-After"
            local ids = h.ids(3)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "120" }, count = 5 }
            local res, err, elapsed = delink(client { retries = 3 }, ids)
            invariant(res, err, ids)
            assert.equal(1, sim:counters().requests)
            assert.equal("TOO_MANY_REQUESTS", err.code)
            assert.is_true(elapsed < 0.8, "took " .. elapsed .. " s")
        end)

        it("the deadline stops backoff retries: a pause that would end past it is not taken", function()
            current = "deadline backoff"
            local ids = h.ids(3)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { code = "INTERNAL_ERROR", count = 10 }
            -- First pause 0.1-0.2 s (ends before 0.3 s): taken. Second 0.2-0.4 s, from
            -- after 0.1 s: would end past 0.3 s, not taken.
            local res, err, elapsed = delink(client { retries = 10, backoff = 0.2, deadline = 0.3 }, ids)
            invariant(res, err, ids)
            assert.equal(2, sim:counters().requests)
            assert.equal("INTERNAL_ERROR", err.code)
            assert.is_true(elapsed < 0.9, "took " .. elapsed .. " s")
        end)
    end)

    ---------------------------------------------------------------------------------
    describe("connection faults", function()
        -- One fault among 3 batches (2 in flight): the batch that got it is sent again;
        -- the others are not touched.
        for _, case in ipairs {
            { "reset", "connection reset (nothing applied)", "SUCCESS" },
            { "truncate", "dropped mid-response (applied, body cut short)", "ALREADY_REMOVED" },
            { "drop_after_apply", "dropped after the delink was applied", "ALREADY_REMOVED" },
        } do
            it(case[2] .. ": retried; its ids are " .. case[3] .. ", the others SUCCESS", function()
                current = "connection " .. case[1]
                local ids = h.ids(250)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                sim:inject { action = case[1] }
                local res, err = delink(client { retries = 3, concurrency = 2 }, ids)
                invariant(res, err, ids)
                assert.is_nil(err)
                assert.equal(250, res.succeeded)
                local log = api_log()
                assert.equal(4, #log)
                local faulted
                for _, e in ipairs(log) do
                    if e.action == case[1] then faulted = e end
                end
                assert.is_not_nil(faulted)
                local hit = {}
                for _, id in ipairs(faulted.ids) do hit[id] = true end
                assert.is_true(#faulted.ids == 100 or #faulted.ids == 50)
                assert.equal(faulted.uri, log[4].uri, "the faulted call was sent again last")
                for _, e in ipairs(res) do
                    if hit[e.id] then
                        assert.equal(case[3], e.code)
                        if case[3] == "ALREADY_REMOVED" then
                            assert.matches("answer was lost", e.message, 1, true)
                        end
                    else
                        assert.equal("SUCCESS", e.code)
                    end
                end
            end)
        end

        it("a lost answer with duplicate ids: each position gets its own ALREADY_REMOVED", function()
            current = "drop_after_apply duplicates"
            local ids = { "31", "32", "31", "33", "32" }
            sim:seed(MODULE, PRODUCT, RELATED, { "31", "32", "33" })
            sim:inject { action = "drop_after_apply" }
            local res, err = delink(client { retries = 2 }, ids)
            invariant(res, err, ids)
            assert.same({ 3, 3 }, sim:counters().ids_per_request)
            for _, e in ipairs(res) do assert.equal("ALREADY_REMOVED", e.code) end
            assert.are_not.equal(res[1], res[3])
        end)

        it("a lost answer for an id that was never related: ALREADY_REMOVED too (README), not in removed", function()
            current = "drop_after_apply never related"
            local ids = h.ids(5)
            sim:seed(MODULE, PRODUCT, RELATED, { ids[1], ids[2], ids[3], ids[4] }) -- not ids[5]
            sim:inject { action = "drop_after_apply" }
            local res, err = delink(client { retries = 2 }, ids)
            invariant(res, err, ids, { never_related = { ids[5] } })
            assert.is_nil(err)
            for _, e in ipairs(res) do assert.equal("ALREADY_REMOVED", e.code) end
            assert.same({ ids[1], ids[2], ids[3], ids[4] }, sim:removed(MODULE, PRODUCT, RELATED))
        end)

        -- The server sleeps past the client's timeout, then applies the delink anyway.
        for _, case in ipairs {
            { "retried after the late delink was applied: ALREADY_REMOVED", backoff = 1.0, "ALREADY_REMOVED" },
            { "retried before the late delink ran: SUCCESS (the late call removes nothing)", backoff = 0.01,
              "SUCCESS" },
        } do
            it("a timeout: " .. case[1], function()
                current = "timeout " .. case[2]
                local ids = h.ids(250)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                sim:inject { action = "delay", delay_ms = 600 }
                -- backoff 1.0: first pause 0.5-1 s after the 0.3 s timeout, so the retry
                -- comes after the delayed call applied (0.6 s); backoff 0.01: before it.
                local res, err = delink(client { retries = 2, concurrency = 2, timeout = 0.3,
                                                 backoff = case.backoff }, ids)
                invariant(res, err, ids)
                assert.is_nil(err)
                assert.equal(250, res.succeeded)
                local log = api_log()
                assert.equal(4, #log)
                local delayed
                for _, e in ipairs(log) do
                    if e.action == "delay" then delayed = e end
                end
                local hit = {}
                for _, id in ipairs(delayed.ids) do hit[id] = true end
                for _, e in ipairs(res) do assert.equal(hit[e.id] and case[2] or "SUCCESS", e.code) end
            end)
        end

        it("connection refused: every id TRANSPORT_ERROR, after the retries' pauses", function()
            current = "connection refused"
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            local c = client { api_domain = "http://127.0.0.1:" .. nginx.free_port(), retries = 2, backoff = 0.1,
                               concurrency = 2 }
            local res, err, elapsed = delink(c, ids)
            invariant(res, err, ids)
            assert.equal(250, res.failed)
            for _, e in ipairs(res) do assert.equal("TRANSPORT_ERROR", e.code) end
            -- Two retries: pauses of at least 0.05 s and 0.1 s (jitter takes up to half off).
            assert.is_true(elapsed >= 0.15, "gave up after " .. elapsed .. " s: not retried")
            assert.is_true(elapsed < 3, "took " .. elapsed .. " s")
        end)
    end)

    ---------------------------------------------------------------------------------
    describe("bodies that do not account for the ids", function()
        local A, B, C = "3477061000000000901", "3477061000000000902", "3477061000000000903"
        local X, Y = "3477061000000000998", "3477061000000000999"
        local IDS = { A, B, C }

        -- An entry that accounts for an id (an error: injected answers apply nothing, so a
        -- "success" here would break the invariant for the wrong reason); without id, by position.
        local function e(id, n)
            if id then
                return { code = "INVALID_DATA", details = { id = id }, message = "injected answer " .. id,
                         status = "error" }
            end
            return { code = "INVALID_DATA", message = "injected answer #" .. n, status = "error" }
        end
        -- A success entry: a trap for a reader that invents.
        local function s(id)
            return { code = "SUCCESS", details = { id = id }, message = "relation removed", status = "success" }
        end
        local function data(list) return cjson.encode { data = list } end

        -- body, content type, then what each of A, B, C must get: "bad" (BAD_RESPONSE) or
        -- the message of the entry that answers it.
        for _, case in ipairs {
            { "not JSON: an HTML page with 200", "<html><body>OK</body></html>", "text/html", "bad", "bad", "bad" },
            { "truncated JSON (whole Content-Length)", data { s(A), s(B), s(C) }:sub(1, 60), nil, "bad", "bad", "bad" },
            { "JSON without data", '{"result":"ok","status":"success"}', nil, "bad", "bad", "bad" },
            { "a top-level array of success entries", cjson.encode { s(A), s(B), s(C) }, nil, "bad", "bad", "bad" },
            { "data that is an object", cjson.encode { data = s(A) }, nil, "bad", "bad", "bad" },
            { "a flat object saying success", cjson.encode { code = "SUCCESS", details = {}, message = "ok",
                                                             status = "success" }, nil, "bad", "bad", "bad" },
            { "data of numbers", '{"data":[1,2,3]}', nil, "bad", "bad", "bad" },
            { "an empty data array", '{"data":[]}', nil, "bad", "bad", "bad" },
            { "a JSON string", '"SUCCESS"', nil, "bad", "bad", "bad" },
            { "data shorter than the ids (with ids)", data { e(A), e(B) }, nil, "injected answer " .. A,
              "injected answer " .. B, "bad" },
            { "data shorter than the ids (without ids)", data { e(nil, 1), e(nil, 2) }, nil, "bad", "bad", "bad" },
            { "data longer than the ids (with ids)", data { e(A), e(B), e(C), s(X) }, nil, "injected answer " .. A,
              "injected answer " .. B, "injected answer " .. C },
            { "data longer than the ids (without ids)", data { e(nil, 1), e(nil, 2), e(nil, 3), e(nil, 4) }, nil,
              "bad", "bad", "bad" },
            { "data naming other ids", data { e(A), s(X), s(Y) }, nil, "injected answer " .. A, "bad", "bad" },
            { "data naming only other ids", data { s(X), s(Y), s(X) }, nil, "bad", "bad", "bad" },
            { "data out of order", data { e(C), e(A), e(B) }, nil, "injected answer " .. A, "injected answer " .. B,
              "injected answer " .. C },
            { "data answering one id twice", data { e(A), e(A), e(B) }, nil, "injected answer " .. A,
              "injected answer " .. B, "bad" },
            { "data with one entry per id, one without an id", data { e(A), e(nil, 2), e(C) }, nil,
              "injected answer " .. A, "injected answer #2", "injected answer " .. C },
        } do
            it(case[1] .. ": BAD_RESPONSE exactly for the ids not accounted for, not retried", function()
                current = "body: " .. case[1]
                sim:seed(MODULE, PRODUCT, RELATED, IDS)
                sim:inject { status = 200, body = case[2], content_type = case[3] or "application/json" }
                local res, err = delink(client { retries = 3 }, IDS)
                invariant(res, err, IDS)
                assert.equal(1, sim:counters().requests)
                assert.same({}, sim:removed(MODULE, PRODUCT, RELATED))
                assert.equal(3, #res) -- nothing invented: no entry for X or Y
                for i, want in ipairs { case[4], case[5], case[6] } do
                    local got = res[i]
                    assert.equal("error", got.status)
                    assert.equal(200, got.http_status)
                    if want == "bad" then
                        assert.equal("BAD_RESPONSE", got.code)
                    else
                        assert.equal("INVALID_DATA", got.code)
                        assert.equal(want, got.message)
                    end
                end
            end)
        end
    end)

    ---------------------------------------------------------------------------------
    describe("oversized responses", function()
        it("over max_body: that batch's ids get BAD_RESPONSE naming the cap, not retried; the others succeed",
           function()
            current = "oversize max_body"
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { action = "oversize", size = 100000 }
            -- 100 answers take about 10 KiB: under the 16 KiB cap.
            local res, err = delink(client { retries = 3, concurrency = 2, max_body = 16384 }, ids)
            invariant(res, err, ids)
            assert.equal(3, sim:counters().requests)
            local big
            for _, e in ipairs(api_log()) do
                if e.action == "oversize" then big = e end
            end
            local hit = {}
            for _, id in ipairs(big.ids) do hit[id] = true end
            for _, e in ipairs(res) do
                if hit[e.id] then
                    assert.equal("BAD_RESPONSE", e.code)
                    assert.matches("16384", e.message, 1, true)
                else
                    assert.equal("SUCCESS", e.code)
                end
            end
            assert.equal(#big.ids, res.failed)
        end)

        it("max_body 4096 with a 100,000-byte answer", function()
            current = "oversize 4096"
            local ids = h.ids(3)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { action = "oversize", size = 100000 }
            local res, err = delink(client { max_body = 4096 }, ids)
            invariant(res, err, ids)
            assert.equal(1, sim:counters().requests)
            for _, e in ipairs(res) do
                assert.equal("BAD_RESPONSE", e.code)
                assert.matches("4096", e.message, 1, true)
            end
        end)

        it("the default cap (4 MiB) cuts off a 9 MiB answer", function()
            current = "oversize default"
            local ids = h.ids(3)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { action = "oversize", size = 9 * 1024 * 1024 }
            local res, err = delink(client(), ids)
            invariant(res, err, ids)
            assert.equal(1, sim:counters().requests)
            for _, e in ipairs(res) do
                assert.equal("BAD_RESPONSE", e.code)
                assert.matches(tostring(4 * 1024 * 1024), e.message, 1, true)
            end
        end)
    end)

    ---------------------------------------------------------------------------------
    describe("tokens", function()
        it("a token that expires mid-job: one refresh, the remaining batches continue with the new token",
           function()
            current = "token expired mid-job"
            local calls = 0
            local function refresh()
                calls = calls + 1
                local tok = "spec-faults-fresh-token-" .. calls
                -- The first expires at the simulator 0.6 s from now; the client is told an hour.
                sim:add_token(tok, { expires_in = calls == 1 and 0.6 or 3600 })
                return tok, 3600
            end
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            sim:inject { action = "delay", delay_ms = 0 }   -- batch 1: at once
            sim:inject { action = "delay", delay_ms = 800 } -- batch 2: checked after the token expired
            local res, err = delink(client { refresh = refresh, concurrency = 1 }, ids)
            invariant(res, err, ids)
            assert.is_nil(err)
            assert.equal(250, res.succeeded)
            assert.equal(2, calls) -- the first token, then exactly one refresh
            local got = {}
            for i, e in ipairs(api_log()) do got[i] = { e.status, e.authorization, #e.ids } end
            assert.same({
                { 200, "Zoho-oauthtoken spec-faults-fresh-token-1", 100 },
                { 401, "Zoho-oauthtoken spec-faults-fresh-token-1", 100 },
                { 200, "Zoho-oauthtoken spec-faults-fresh-token-2", 100 },
                { 200, "Zoho-oauthtoken spec-faults-fresh-token-2", 50 },
            }, got)
        end)

        -- Refresh callbacks that misbehave. The message each must leave in the error.
        local BAD_REFRESH = {
            { "raises a Lua error", function() error("refresh exploded") end, "refresh exploded" },
            { "raises a table", function() error({ why = "a table" }) end, "raised" },
            { "yields outside any coroutine", function() coroutine.yield() end, "yield" },
            { "returns nothing", function() end, "no token returned" },
            { "returns junk (a table)", function() return {} end, "not an access token" },
            { "returns junk (CR/LF in the token)", function() return "tok\r\nX-Evil: 1", 3600 end,
              "not an access token" },
            { "returns junk (a bad api_domain)", function() return "spec-faults-junk-domain-tok", 3600, 42 end,
              "api_domain" },
        }

        for _, case in ipairs(BAD_REFRESH) do
            it("a refresh callback that " .. case[1] .. " before the first call: TOKEN_REFRESH_FAILED, nothing sent",
               function()
                current = "refresh first " .. case[1]
                local ids = h.ids(5)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local res, err = delink(client { refresh = case[2] }, ids)
                invariant(res, err, ids)
                assert.is_nil(res)
                assert.equal("TOKEN_REFRESH_FAILED", err.code)
                assert.matches(case[3], err.message, 1, true)
            end)

            it("a refresh callback that " .. case[1] .. " mid-job: sent ids keep their outcome, the rest "
               .. "TOKEN_REFRESH_FAILED", function()
                current = "refresh mid-job " .. case[1]
                local calls = 0
                local function refresh()
                    calls = calls + 1
                    if calls > 1 then return case[2]() end
                    sim:add_token("spec-faults-short-token", { expires_in = 3600 })
                    return "spec-faults-short-token", 0 -- inside the 60 s margin: refreshed for the next call
                end
                local ids = h.ids(250)
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local res, err = delink(client { refresh = refresh, concurrency = 2 }, ids)
                invariant(res, err, ids)
                assert.equal(2, calls)
                assert.equal(1, sim:counters().requests)
                assert.equal(100, res.succeeded)
                for i = 1, 100 do assert.equal("SUCCESS", res[i].code) end
                for i = 101, 250 do assert.equal("TOKEN_REFRESH_FAILED", res[i].code) end
                assert.equal("TOKEN_REFRESH_FAILED", err.code)
                assert.matches(case[3], err.message, 1, true)
            end)
        end

        it("a refresh callback that yields across a C-call boundary inside a coroutine: TOKEN_REFRESH_FAILED",
           function()
            current = "refresh yields across C"
            local ids = h.ids(5)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            local c = client { refresh = function()
                coroutine.yield()
                return "spec-faults-never-token", 3600
            end }
            local res, err
            local co = coroutine.create(function()
                -- string.gsub's callback is called from C: no yield can cross it.
                string.gsub("x", "x", function() res, err = delink(c, ids) end)
                return "done"
            end)
            local ok, value = coroutine.resume(co)
            assert.is_true(ok, tostring(value))
            assert.equal("done", value) -- not suspended: the yield did not escape
            invariant(res, err, ids)
            assert.is_nil(res)
            assert.equal("TOKEN_REFRESH_FAILED", err.code)
        end)

        it("leaves nothing behind: clients whose refresh failed (before or mid-job) are collected", function()
            current = "refresh leaks"
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)
            local weak = setmetatable({}, { __mode = "k" })
            -- In a function of its own, so that no stack slot keeps a client alive.
            local function run(case, midway)
                reset()
                sim:seed(MODULE, PRODUCT, RELATED, ids)
                local calls = 0
                local refresh = case[2]
                if midway then
                    refresh = function()
                        calls = calls + 1
                        if calls > 1 then return case[2]() end
                        sim:add_token("spec-faults-leak-token", { expires_in = 3600 })
                        return "spec-faults-leak-token", 0
                    end
                end
                local c = client { refresh = refresh, concurrency = 2 }
                weak[c] = true
                local res, err = delink(c, ids)
                invariant(res, err, ids)
                assert.equal("TOKEN_REFRESH_FAILED", err.code)
                return res and res.succeeded or 0
            end
            for _, case in ipairs(BAD_REFRESH) do
                assert.equal(0, run(case, false))
                assert.equal(100, run(case, true))
            end
            collectgarbage()
            collectgarbage()
            assert.is_nil(next(weak), "a client (and its libcurl session) was not collected")
        end)
    end)

    ---------------------------------------------------------------------------------
    describe("secrets", function()
        local function leaks(texts)
            local found = {}
            for _, o in ipairs(texts) do
                for _, secret in ipairs(secrets) do
                    if o.text:find(secret, 1, true) then
                        found[#found + 1] = string.format("[%s] %q shows %q", o.spec, o.text:sub(1, 200), secret)
                    end
                end
            end
            return found
        end

        it("an OAuth client through faults (a failed grant, a 500 and a reset, an expired token, "
           .. "answers echoing the secrets): no secret in what it gives back", function()
            current = "secrets OAuth"
            local first = #outputs
            sim:oauth_client { client_id = CLIENT_ID, client_secret = CLIENT_SECRET, refresh_token = REFRESH_TOKEN }
            local c = client { refresh = zcrm.oauth_refresh { client_id = CLIENT_ID, client_secret = CLIENT_SECRET,
                                                              refresh_token = REFRESH_TOKEN, accounts_url = sim.url },
                               retries = 2, concurrency = 3 }
            local ids = h.ids(250)
            sim:seed(MODULE, PRODUCT, RELATED, ids)

            -- 1. The token endpoint refuses the grant and echoes the secrets.
            sim:inject { target = "token", status = 200, body = cjson.encode {
                error = "invalid_client",
                error_description = "client_secret=" .. CLIENT_SECRET .. " refresh_token=" .. REFRESH_TOKEN } }
            local res, err = delink(c, ids)
            invariant(res, err, ids)
            assert.is_nil(res)
            assert.equal("TOKEN_REFRESH_FAILED", err.code)
            assert.matches("<redacted>", err.message, 1, true)

            -- 2. A 500 whose message echoes the secrets, and a reset: retried, all delinked.
            sim:inject { code = "INTERNAL_ERROR", message = "upstream rejected client_secret=" .. CLIENT_SECRET
                                                              .. " refresh_token=" .. REFRESH_TOKEN }
            sim:inject { action = "reset" }
            res, err = delink(c, ids)
            invariant(res, err, ids)
            assert.is_nil(err)
            assert.equal(250, res.succeeded)
            assert.equal(1, sim:counters().token_grants)

            -- 3. The token expires at the server: a 401, one more grant, and the delink goes through.
            assert.is_true(sim:expire_tokens() >= 1)
            local later = h.ids(250, 1000)
            sim:seed(MODULE, PRODUCT, RELATED, later)
            res, err = delink(c, later)
            invariant(res, err, later)
            assert.is_nil(err)
            assert.equal(2, sim:counters().token_grants)
            local log = api_log()
            local tok = log[#log].authorization:match("^Zoho%-oauthtoken (%S+)$")
            assert.is_string(tok)
            learn_tokens()
            assert.is_true(known_secret[tok])

            -- 4. Answers that echo the access token in use and the OAuth secrets, past the
            --    retries (a flat error) and per id (a data array).
            local more = h.ids(4, 5000)
            sim:seed(MODULE, PRODUCT, RELATED, more)
            local echo = "token " .. tok .. " secret " .. CLIENT_SECRET .. " refresh " .. REFRESH_TOKEN
            sim:inject { code = "INTERNAL_ERROR", message = "bad " .. echo, count = 3 }
            res, err = delink(c, { more[1], more[2] })
            invariant(res, err, { more[1], more[2] })
            assert.equal("INTERNAL_ERROR", err.code)
            sim:inject { status = 200, body = cjson.encode { data = {
                { code = "INVALID_DATA", details = { id = more[3], note = echo }, message = "no: " .. echo,
                  status = "error" },
                { code = "INVALID_DATA", details = { id = more[4] }, message = "no: " .. echo, status = "error" },
            } } }
            res, err = delink(c, { more[3], more[4] })
            invariant(res, err, { more[3], more[4] })
            assert.equal("INVALID_DATA", err.code)

            local mine = {}
            for i = first + 1, #outputs do mine[#mine + 1] = outputs[i] end
            assert.is_true(#mine > 0)
            local found = leaks(mine)
            assert.equal(0, #found, "secrets in zcrm's output:\n" .. table.concat(found, "\n"))
        end)

        it("nothing zcrm produced in this file (results, errors, tostring, messages) nor the simulator's "
           .. "error log shows a token or secret", function()
            current = "secrets, all"
            -- Standalone too: a delink whose token is refused and whose refresh raises with
            -- that token in its text.
            sim:add_token(TOKEN, { expires_in = -1 })
            local c = client { token = TOKEN, refresh = function() error("could not renew " .. TOKEN) end }
            local res, err = delink(c, h.ids(3))
            invariant(res, err, h.ids(3))
            assert.equal("TOKEN_REFRESH_FAILED", err.code)
            assert.matches("<redacted>", err.message, 1, true)

            local texts = {}
            for _, o in ipairs(outputs) do texts[#texts + 1] = o end
            texts[#texts + 1] = { text = sim:error_log() or "", spec = "simulator error log" }
            assert.is_true(#texts > 10)
            local found = leaks(texts)
            assert.equal(0, #found, #found .. " secret(s) in zcrm's output:\n" .. table.concat(found, "\n", 1,
                                                                                           math.min(#found, 20)))
        end)
    end)
end)
