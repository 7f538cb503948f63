-- Connection reuse and parallel calls: what the simulator sees.
local simulator = require "spec.support.simulator"
local h = require "spec.support.helpers"
local core = require "zcrm.core"
local zcrm = require "zcrm"

local PRODUCT = h.PRODUCT

describe("throughput", function()
    local sim

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)
    before_each(function() sim:reset() end)

    it("reuses one connection for 1,000 sequential calls at concurrency 1", function()
        local client = h.client(sim, { concurrency = 1 })
        local ids = h.ids(1000)
        sim:seed("Products", PRODUCT, "Price_Books", ids)
        for i = 1, 1000 do
            local _, err = client:delink("Products", PRODUCT, "Price_Books", ids[i])
            assert.is_nil(err)
        end
        local counters = sim:counters()
        assert.equal(1000, counters.requests)
        assert.equal(1, counters.connections)
    end)

    it("opens at most one connection per slot across calls and batches", function()
        local client = h.client(sim, { concurrency = 4 })
        local ids = h.ids(2000)
        sim:seed("Products", PRODUCT, "Price_Books", ids)
        for part = 0, 3 do
            local slice = {}
            for i = 1, 500 do slice[i] = ids[part * 500 + i] end
            local res = client:delink("Products", PRODUCT, "Price_Books", slice)
            assert.equal(500, res.succeeded)
        end
        local counters = sim:counters()
        assert.equal(20, counters.requests)
        assert.is_true(counters.connections <= 4, "connections: " .. counters.connections)
    end)

    for _, n in ipairs { 1, 3, 10 } do
        it("keeps at most " .. n .. " calls in flight at concurrency " .. n .. ", and the caller's order", function()
            sim:config { latency_ms = 50 }
            local client = h.client(sim, { concurrency = n })
            local ids = h.ids(1500)
            local related = {}
            for i = 1, #ids, 2 do related[#related + 1] = ids[i] end -- every other id is related
            sim:seed("Products", PRODUCT, "Price_Books", related)
            local res = client:delink("Products", PRODUCT, "Price_Books", ids)
            h.assert_accounted(res, ids)
            for i = 1, #ids do
                assert.equal(i % 2 == 1 and "success" or "error", res[i].status, "position " .. i)
            end
            local counters = sim:counters()
            assert.equal(15, counters.requests)
            assert.equal(n, counters.in_flight_peak)
        end)
    end

    it("runs 10 calls of 100 ms side by side at concurrency 10", function()
        sim:config { latency_ms = 100 }
        local client = h.client(sim, { concurrency = 10 })
        local res = client:delink("Products", PRODUCT, "Price_Books", h.ids(1000))
        assert.equal(1000, res.failed) -- nothing seeded: every id is INVALID_DATA
        assert.equal(10, sim:counters().in_flight_peak)
    end)

    it("refuses a concurrency outside 1..25", function()
        for _, bad in ipairs { 0, 26, 2.5, -1 } do
            assert.has_error(function() zcrm.new { token = "t", concurrency = bad } end)
        end
        assert.equal(25, core.MAX_CONCURRENCY)
    end)
end)

describe("core.session slots", function()
    local sim

    setup(function() sim = simulator.start() end)
    teardown(function() if sim then sim:stop() end end)

    it("runs up to `slots` exchanges at once and reports each as it finishes", function()
        sim:reset()
        sim:add_token("spec-slot-token", {})
        sim:config { latency_ms = 50 }
        local session = core.session { slots = 3 }
        local url = sim.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books/"
        local started = {}
        for i = 1, 3 do started[assert(session:start("DELETE", url .. i, "spec-slot-token"))] = true end
        assert.same({ true, true, true }, started)
        local _, code = session:start("DELETE", url .. "4", "spec-slot-token")
        assert.equal("INVALID_ARGUMENT", code) -- every slot busy
        assert.equal(3, session:in_flight())
        local done = {}
        for _ = 1, 3 do
            local slot, status, body = session:wait()
            assert.equal(400, status) -- nothing seeded: INVALID_DATA entry
            assert.matches("INVALID_DATA", body)
            done[slot] = true
        end
        assert.same({ true, true, true }, done)
        assert.is_nil(session:wait())
        assert.equal(3, sim:counters().in_flight_peak)
        session:close()
    end)

    it("polls without waiting: nothing until an exchange has finished", function()
        sim:reset()
        sim:add_token("spec-slot-token", {})
        sim:config { latency_ms = 200 }
        local session = core.session { slots = 2 }
        local url = sim.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books/"
        local slot = assert(session:start("DELETE", url .. "1", "spec-slot-token"))
        assert.is_nil(session:poll())
        assert.equal(1, session:in_flight())
        local done, status = session:wait()
        assert.equal(slot, done)
        assert.equal(400, status)
        assert.is_nil(session:poll()) -- none in flight
        session:close()
    end)

    it("releases a session closed with exchanges in flight", function()
        sim:reset()
        sim:config { latency_ms = 200 }
        local session = core.session { slots = 2 }
        session:start("DELETE", sim.url .. "/crm/v2.1/Products/1/Price_Books/2", "t")
        session:close()
        assert.has_error(function() session:wait() end)
    end)
end)
