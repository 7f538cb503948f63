-- The C core through its glue: planning (validation, duplicates, batches, URLs),
-- the URL and token checks, and the session's lifecycle. No server needed.
local core = require "zcrm.core"

local BASE = "https://www.zohoapis.com"

local ids = require("spec.support.helpers").ids

local function plan(list, overrides)
    local o = overrides or {}
    return core.plan(o.base or BASE, o.version or "v2.1", o.module or "Products",
                     o.record or "3477061000007606020", o.related or "Price_Books", list)
end

describe("core.plan", function()
    it("uses the path form for one id", function()
        local p = assert(plan("3652397000000925128"))
        assert.same({ "3652397000000925128" }, p.ids)
        assert.equal(1, #p.batches)
        assert.equal(BASE .. "/crm/v2.1/Products/3477061000007606020/Price_Books/3652397000000925128", p.batches[1].url)
    end)

    it("uses the ids= query form for several ids", function()
        local p = assert(plan({ "3477061000007596026", "3477061000007246019" }))
        assert.equal(BASE .. "/crm/v2.1/Products/3477061000007606020/Price_Books?ids=3477061000007596026,3477061000007246019",
                     p.batches[1].url)
    end)

    it("drops a trailing slash of the api domain", function()
        local p = assert(plan({ "1", "2" }, { base = "https://www.zohoapis.eu/" }))
        assert.equal("https://www.zohoapis.eu/crm/v2.1/Products/3477061000007606020/Price_Books?ids=1,2", p.batches[1].url)
    end)

    for _, case in ipairs {
        { n = 1, sizes = { 1 } }, { n = 100, sizes = { 100 } }, { n = 101, sizes = { 100, 1 } },
        { n = 250, sizes = { 100, 100, 50 } }, { n = 1000, sizes = { 100, 100, 100, 100, 100, 100, 100, 100, 100, 100 } },
    } do
        it("splits " .. case.n .. " ids into calls of at most 100, in order", function()
            local list = ids(case.n)
            local p = assert(plan(list))
            local sizes, seen = {}, {}
            for b, batch in ipairs(p.batches) do
                sizes[b] = #batch.ids
                for _, id in ipairs(batch.ids) do seen[#seen + 1] = id end
                local query = batch.url:match("%?ids=(.*)$")
                if #batch.ids == 1 then
                    assert.is_nil(query)
                    assert.equal(batch.ids[1], batch.url:match("/([0-9]+)$"))
                else
                    assert.equal(table.concat(batch.ids, ","), query)
                end
            end
            assert.same(case.sizes, sizes)
            assert.same(list, seen)
        end)
    end

    it("sends a duplicate once and keeps the caller's positions", function()
        local p = assert(plan({ "5", "3", "5", "4", "3" }))
        assert.same({ "5", "3", "5", "4", "3" }, p.ids)
        assert.same({ "5", "3", "4" }, p.batches[1].ids)
    end)

    it("batches 100 distinct ids among duplicates into one call", function()
        local list = ids(100)
        for i = 1, 100 do list[#list + 1] = list[i] end
        local p = assert(plan(list))
        assert.equal(1, #p.batches)
        assert.equal(100, #p.batches[1].ids)
        assert.equal(200, #p.ids)
    end)

    it("returns no batch for an empty list", function()
        local p = assert(plan({}))
        assert.same({}, p.ids)
        assert.same({}, p.batches)
    end)

    it("accepts integers and gives their canonical strings", function()
        local p = assert(plan({ 42, "0042", 0 }))
        assert.same({ "42", "0042", "0" }, p.ids)
    end)

    if math.type then -- Lua 5.3+: integers are exact up to 2^63-1
        it("accepts a 19-digit integer", function()
            local p = assert(plan({ 3477061000007596026 }))
            assert.same({ "3477061000007596026" }, p.ids)
        end)
    else -- Lua 5.1 / LuaJIT: numbers are doubles
        it("accepts 2^53 and refuses numbers past it instead of rounding", function()
            assert.same({ "9007199254740992" }, assert(plan({ 2 ^ 53 })).ids)
            local p, code, msg = plan({ 2 ^ 53 + 2 })
            assert.is_nil(p)
            assert.equal("INVALID_ARGUMENT", code)
            assert.matches("2%^53", msg)
        end)
    end

    describe("refuses before building anything", function()
        local bad_ids = {
            { "a float", 1.5 }, { "a negative number", -1 }, { "a comma", "12,34" },
            { "a path", "1/../2" }, { "a letter", "12a4" }, { "an empty string", "" },
            { "20 digits", "12345678901234567890" }, { "a space", "12 34" }, { "a sign", "+1" },
            { "CR/LF", "1\r\n2" }, { "a NUL", "1\0" }, { "a query", "1?x=2" }, { "a fragment", "1#2" },
            { "an ampersand", "1&ids=2" }, { "percent encoding", "1%2F2" }, { "non-ASCII", "١٢" },
            { "a boolean", true }, { "a table", {} },
        }
        if math.type then table.insert(bad_ids, { "an integral float", 5.0 }) end
        for _, case in ipairs(bad_ids) do
            it("an id with " .. case[1], function()
                local p, code, msg = plan({ "1", case[2] })
                assert.is_nil(p)
                assert.equal("INVALID_ARGUMENT", code)
                assert.matches("^ids%[2%]", msg)
                assert.is_nil(msg:find("[\r\n%z]"))
            end)
        end

        local bad_targets = {
            { "module with a slash", { module = "Products/../Leads" } },
            { "module starting with a digit", { module = "1Products" } },
            { "module with a space", { module = "Price Books" } },
            { "empty module", { module = "" } },
            { "module over 100 bytes", { module = ("M"):rep(101) } },
            { "related list with a query", { related = "Price_Books?x" } },
            { "related list with %2F", { related = "Price%2FBooks" } },
            { "related list with a fragment", { related = "Price_Books#x" } },
            { "related list with an ampersand", { related = "Price_Books&ids=1" } },
            { "related list with a comma", { related = "Price_Books,Leads" } },
            { "related list with CR/LF", { related = "Price_Books\r\nX-Evil: 1" } },
            { "related list with a NUL", { related = "Price_Books\0" } },
            { "module with non-ASCII", { module = "Prodücts" } },
            { "module with ../", { module = "../Products" } },
            { "related list over 100 bytes", { related = ("R"):rep(101) } },
            { "record id with letters", { record = "12a" } },
            { "record id with a slash", { record = "1/2" } },
            { "negative record id", { record = -5 } },
            { "version without v", { version = "2.1" } },
            { "version with a path", { version = "v2/../v8" } },
            { "http api domain that is not loopback", { base = "http://www.zohoapis.com" } },
            { "api domain with a path", { base = "https://www.zohoapis.com/crm" } },
            { "api domain with user info", { base = "https://user:pw@www.zohoapis.com" } },
            { "api domain with another scheme", { base = "ftp://www.zohoapis.com" } },
        }
        for _, case in ipairs(bad_targets) do
            it("a " .. case[1], function()
                local p, code = plan({ "1" }, case[2])
                assert.is_nil(p)
                assert.equal("INVALID_ARGUMENT", code)
            end)
        end
    end)

    it("raises on wrong argument types", function()
        assert.has_error(function() plan({ "1" }, { module = 42 }) end)
        assert.has_error(function() core.plan(BASE, "v2.1", "Products", "1", false, { "1" }) end)
        assert.has_error(function() plan({ "1" }, { record = {} }) end)
        assert.has_error(function() plan(nil) end)
    end)
end)

describe("core.check_url", function()
    for _, url in ipairs { "https://www.zohoapis.com", "https://www.zohoapis.com/", "https://x.example:8443",
                           "http://127.0.0.1:8080", "http://127.1.2.3", "http://localhost:1", "http://[::1]:80",
                           "https://[2001:db8::1]" } do
        it("accepts " .. url, function() assert.is_true(core.check_url(url)) end)
    end
    for _, url in ipairs { "", "www.zohoapis.com", "http://www.zohoapis.com", "http://10.0.0.1", "http://128.0.0.1",
                           "http://127.0.0.256", "http://localhost.evil.com", "https://", "https://a:0", "https://a:65536",
                           "https://a b", "https://a/\r\n", "https://a?x", "https://a#x", "https://u@a", "https://[]",
                           "https://" .. ("a"):rep(300) } do
        it("refuses " .. string.format("%q", url), function()
            local ok, msg = core.check_url(url)
            assert.is_nil(ok)
            assert.is_string(msg)
        end)
    end
end)

describe("core.check_token and core.check_version", function()
    it("accepts Zoho-shaped tokens and refuses header injection", function()
        assert.is_true(core.check_token("1000.abc.def"))
        for _, t in ipairs { "", "a b", "a\r\nX-Evil: 1", "a\0b", "a\tb", ("x"):rep(5000), "tök" } do
            assert.is_nil((core.check_token(t)))
        end
    end)
    it("accepts vN and vN.M only", function()
        for _, v in ipairs { "v2", "v2.1", "v8" } do assert.is_true(core.check_version(v)) end
        for _, v in ipairs { "", "v", "2.1", "v2.", "v.1", "v2.1.1", "v2/x", "V2" } do
            assert.is_nil((core.check_version(v)))
        end
    end)
end)

describe("core.session", function()
    it("closes idempotently and refuses use after close", function()
        local s = core.session {}
        assert.matches("^zcrm.session: ", tostring(s))
        s:close()
        s:close()
        assert.matches("closed", tostring(s))
        assert.has_error(function() s:request("DELETE", "https://www.zohoapis.com/x") end)
    end)

    it("is released by the garbage collector", function()
        local weak = setmetatable({}, { __mode = "v" })
        weak[1] = core.session {}
        collectgarbage()
        collectgarbage()
        assert.is_nil(weak[1])
    end)

    it("refuses a non-loopback http URL, a bad method and a bad token before sending", function()
        local s = core.session {}
        local ok, code = s:request("DELETE", "http://www.zohoapis.com/crm")
        assert.is_nil(ok)
        assert.equal("INVALID_ARGUMENT", code)
        ok, code = s:request("GET", "https://www.zohoapis.com/crm")
        assert.is_nil(ok)
        assert.equal("INVALID_ARGUMENT", code)
        local msg
        ok, code, msg = s:request("DELETE", "http://127.0.0.1:9/crm", "s3cr3tT0ken\r\nX: y")
        assert.is_nil(ok)
        assert.equal("INVALID_ARGUMENT", code)
        assert.is_nil(msg:find("s3cr3t", 1, true))
        s:close()
    end)

    it("reports a refused connection as TRANSPORT_ERROR", function()
        local s = core.session { connect_timeout = 2 }
        local ok, code = s:request("DELETE", "http://127.0.0.1:9/crm")
        assert.is_nil(ok)
        assert.equal("TRANSPORT_ERROR", code)
        s:close()
    end)

    it("checks its options", function()
        assert.has_error(function() core.session { timeout = -1 } end)
        assert.has_error(function() core.session { timeout = "x" } end)
        assert.has_error(function() core.session(nil) end)
        assert.has_error(function() core.session { max_body = -1 } end)
    end)

    it("names itself", function()
        assert.equal("zcrm.core", core._NAME)
        assert.matches("^%d+%.%d+%.%d+", core._VERSION)
        assert.equal(100, core.MAX_IDS_PER_CALL)
    end)
end)
