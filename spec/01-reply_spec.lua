-- core.read: the C reader of delink answers (csrc/zcrm_reply.c, csrc/zcrm_json.c).
-- No server: bodies are given as text, including what a hostile or broken server sends.
local core = require "zcrm.core"
local errors = require "zcrm.errors"
local cjson = require "cjson"

local function read(ids, status, body, offset)
    local out = {}
    local whole = core.read(ids, status, body, out, errors.mt, offset)
    return out, whole
end

local function entry(id, ok, extra)
    local e = { code = ok and "SUCCESS" or "INVALID_DATA", details = { id = id },
                message = ok and "relation removed" or "the related id given seems to be invalid",
                status = ok and "success" or "error" }
    for k, v in pairs(extra or {}) do e[k] = v end
    return e
end

describe("core.read", function()
    it("reads one entry per id into out[id]", function()
        local body = cjson.encode { data = { entry("1", true), entry("2", false) } }
        local out, whole = read({ "1", "2" }, 207, body)
        assert.is_nil(whole)
        assert.same({ id = "1", status = "success", code = "SUCCESS", message = "relation removed",
                      details = { id = "1" } }, out["1"])
        assert.equal("INVALID_DATA", out["2"].code)
        assert.equal("error", out["2"].status)
        assert.equal(207, out["2"].http_status)
        assert.is_true(errors.is(out["2"]))
        assert.is_false(errors.is(out["1"]))
    end)

    it("makes a success entry's details, when they only repeat its id, on first read", function()
        local body = cjson.encode { data = { entry("1", true), entry("2", true, { details = { id = "2", x = 1 } }) } }
        local out = read({ "1", "2" }, 200, body)
        assert.is_nil(rawget(out["1"], "details")) -- not stored until read
        local d = out["1"].details
        assert.same({ id = "1" }, d)
        assert.equal(d, rawget(out["1"], "details")) -- then kept: the same table each time
        assert.equal(d, out["1"].details)
        assert.same({ id = "2", x = 1 }, rawget(out["2"], "details")) -- more than the id: as sent
        assert.is_nil(out["1"].nothing)
    end)

    it("writes to out[offset + i] when given an offset", function()
        local body = cjson.encode { data = { entry("7", true), entry("8", true) } }
        local out = read({ "7", "8" }, 200, body, 40)
        assert.equal("7", out[41].id)
        assert.equal("8", out[42].id)
        assert.is_nil(out["7"])
    end)

    it("decodes escapes in strings as lua-cjson does", function()
        local message = 'quote " backslash \\ tab \t newline \n é € 𝄞'
        local body = cjson.encode { data = { entry("1", false, { message = message }) } }
        body = body:gsub("é", "\\u00e9"):gsub("€", "\\u20ac"):gsub("𝄞", "\\ud834\\udd1e")
        assert.equal(message, read({ "1" }, 400, body)["1"].message)
        assert.equal(message, cjson.decode(body).data[1].message)
    end)

    it("turns a lone surrogate into U+FFFD instead of invalid UTF-8", function()
        local body = '{"data":[{"code":"X","details":{"id":"1"},"message":"a\\ud800b","status":"error"}]}'
        assert.equal("a\239\191\189b", read({ "1" }, 400, body)["1"].message)
    end)

    it("gives details as lua-cjson would, nested values, null and numbers included", function()
        local details = '{"id":"1","permissions":["a","b"],"limit":100,"ratio":0.5,"ok":true,"x":null,"o":{"k":[]}}'
        local body = '{"data":[{"code":"NO_PERMISSION","details":' .. details .. ',"message":"m","status":"error"}]}'
        local got = read({ "1" }, 400, body)["1"].details
        local want = cjson.decode(details)
        assert.same({ "a", "b" }, got.permissions)
        assert.equal(100, got.limit)
        assert.equal(0.5, got.ratio)
        assert.is_true(got.ok)
        assert.equal(cjson.null, got.x)
        assert.equal(want.x, got.x)
        assert.same({ k = {} }, got.o)
    end)

    it("matches an id sent as a JSON number exactly, even beyond 2^53", function()
        local body = '{"data":[{"code":"SUCCESS","details":{"id":3477061000007606021},"message":"m","status":"success"}]}'
        local out = read({ "3477061000007606021" }, 200, body)
        assert.equal("success", out["3477061000007606021"].status)
        out = read({ "3477061000007606020" }, 200, body) -- one off: not the same id
        assert.equal("BAD_RESPONSE", out["3477061000007606020"].code)
    end)

    it("matches entries by id whatever their order, and ignores ids not sent", function()
        local body = cjson.encode { data = { entry("3", true), entry("99", true), entry("1", false), entry("2", true) } }
        local out = read({ "1", "2", "3" }, 207, body)
        assert.same({ "INVALID_DATA", "SUCCESS", "SUCCESS" }, { out["1"].code, out["2"].code, out["3"].code })
        assert.is_nil(out["99"])
    end)

    it("lets the first entry naming an id answer it, never two ids from one entry", function()
        local body = cjson.encode { data = { entry("1", false), entry("1", true) } }
        local out = read({ "1", "2" }, 207, body)
        assert.equal("INVALID_DATA", out["1"].code)
        assert.equal("BAD_RESPONSE", out["2"].code)
    end)

    it("takes the last of duplicate keys, as decoders do", function()
        local body = '{"data":[{"status":"error","code":"SUCCESS","details":{"id":"1"},"status":"success"}]}'
        assert.equal("success", read({ "1" }, 200, body)["1"].status)
    end)

    local NO_ID = { code = "SUCCESS", details = {}, message = "relation removed", status = "success" }
    it("maps entries without an id by position only when there is one per id", function()
        local out = read({ "1", "2" }, 200, cjson.encode { data = { NO_ID, NO_ID } })
        assert.equal("success", out["1"].status)
        assert.equal("success", out["2"].status)
        out = read({ "1", "2" }, 200, cjson.encode { data = { NO_ID } })
        assert.equal("BAD_RESPONSE", out["1"].code)
        assert.equal("BAD_RESPONSE", out["2"].code)
    end)

    it("lets an entry naming an id win over one without an id at its position", function()
        local body = cjson.encode { data = { NO_ID, entry("1", false) } }
        local out = read({ "1", "2" }, 207, body)
        assert.equal("INVALID_DATA", out["1"].code)
        assert.equal("BAD_RESPONSE", out["2"].code) -- the loose entry sits at position 1, taken
    end)

    it("reports an entry with neither success nor a code, and skips non-object elements", function()
        local body = '{"data":[{"details":{"id":"1"}}, "junk", 3, null]}'
        local out = read({ "1", "2" }, 200, body)
        assert.equal("BAD_RESPONSE", out["1"].code)
        assert.matches("neither success nor an error code", out["1"].message)
        assert.equal("BAD_RESPONSE", out["2"].code)
        assert.matches("does not account for this id", out["2"].message)
    end)

    it("returns a flat whole-request error and gives it to every id", function()
        local body = '{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}'
        local out, whole = read({ "1", "2" }, 401, body)
        assert.equal("INVALID_TOKEN", whole.code)
        assert.equal(401, whole.http_status)
        assert.is_true(errors.is(whole))
        for _, id in ipairs { "1", "2" } do
            assert.equal("INVALID_TOKEN", out[id].code)
            assert.equal("invalid oauth token", out[id].message)
            assert.equal(id, out[id].id)
        end
    end)

    it("takes a flat error with HTTP 200 when its status says error", function()
        local body = '{"code":"INTERNAL_ERROR","details":{},"message":"m","status":"error"}'
        local _, whole = read({ "1" }, 200, body)
        assert.equal("INTERNAL_ERROR", whole.code)
    end)

    for _, case in ipairs {
        { "an HTML page from a proxy", 502, "<html><body>Bad Gateway</body></html>", "not JSON" },
        { "a cut body", 200, '{"data":[{"code":"SUCCESS","details":{"id":"1"}', "not JSON" },
        { "an empty body", 200, "", "not JSON" },
        { "trailing garbage", 200, '{"data":[]} x', "not JSON" },
        { "nesting deeper than 64", 200, '{"data":' .. ("["):rep(70) .. ("]"):rep(70) .. "}", "not JSON" },
        { "a control byte in a string", 200, '{"data":[{"code":"A\1"}]}', "not JSON" },
        { "a bad escape", 200, '{"data":[{"code":"\\x"}]}', "not JSON" },
        { "a top-level array", 200, "[]", "JSON that is not" },
        { "a data array with HTTP 500", 500, cjson.encode { data = { entry("1", true) } }, "JSON that is not" },
        { "data that is null", 200, '{"data":null}', "JSON that is not" },
        { "a redirect", 302, "", "unexpected redirect" },
    } do
        it("reports BAD_RESPONSE for every id after " .. case[1], function()
            local out, whole = read({ "1", "2" }, case[2], case[3])
            assert.is_nil(whole)
            for _, id in ipairs { "1", "2" } do
                assert.equal("BAD_RESPONSE", out[id].code)
                assert.equal(case[2], out[id].http_status)
                assert.matches(case[4], out[id].message, 1, true)
            end
        end)
    end

    it("redacts the secrets it is given from every string of the body, escaped ones too", function()
        local secret, token = "client-secret-123", "1000.abcdefgh"
        local body = '{"data":[{"code":"INVALID_DATA","details":{"id":"1","echo":"' .. token .. '","' .. secret
            .. '":["x' .. secret .. 'y"]},"message":"bad ' .. token .. ' and \\u0063lient-secret-123 and '
            .. token .. '","status":"error"}]}'
        local out = {}
        core.read({ "1" }, 400, body, out, errors.mt, nil, { secret, token, "short" })
        local e = out["1"]
        assert.equal("bad <redacted> and <redacted> and <redacted>", e.message)
        assert.equal("<redacted>", e.details.echo)
        assert.same({ "x<redacted>y" }, e.details["<redacted>"])
        local flat = '{"code":"INVALID_TOKEN","details":{},"message":"token ' .. token .. '","status":"error"}'
        local _, whole = read({ "1" }, 401, flat)
        assert.matches(token, whole.message, 1, true) -- without secrets given, as sent
        out = {}
        whole = core.read({ "1" }, 401, flat, out, errors.mt, nil, { token })
        assert.equal("token <redacted>", whole.message)
        assert.equal("token <redacted>", out["1"].message)
    end)

    it("refuses more ids than one call takes, and ids that are not strings", function()
        local many = {}
        for i = 1, core.MAX_IDS_PER_CALL + 1 do many[i] = tostring(i) end
        assert.has_error(function() read(many, 200, "{}") end)
        assert.has_error(function() read({ 1 }, 200, "{}") end)
    end)
end)
