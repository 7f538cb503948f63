-- Specs for the Zoho CRM simulator itself (spec/simulator/, spec/support/simulator.lua).
-- Talks raw HTTP/1.1 over LuaSocket so what is checked is what goes on the wire.
-- Run from the repo root: lua5.4 /usr/bin/busted spec/simulator_spec.lua (or luajit).

local simulator = require "spec.support.simulator"
local socket = require "socket"
local cjson = require "cjson"

local CANONICAL = {
  INVALID_MODULE = { 400, "the module name given seems to be invalid" },
  INVALID_URL_PATTERN = { 404, "Please check if the URL trying to access is a correct one" },
  OAUTH_SCOPE_MISMATCH = { 401, "invalid oauth scope to access this URL" },
  INVALID_TOKEN = { 401, "invalid oauth token" },
  NO_PERMISSION = { 403, "permission denied" },
  INTERNAL_ERROR = { 500, "Internal Server Error" },
  INVALID_REQUEST_METHOD = { 400, "The http request method type is not a valid one" },
  AUTHORIZATION_FAILED = { 400, "User does not have sufficient privilege to perform this action" },
  INVALID_DATA = { 400, "invalid data" },
  UNABLE_TO_PARSE_DATA_TYPE = { 400, "either the request body or parameters is in wrong format" },
  REQUIRED_PARAM_MISSING = { 400, "One of the expected parameter is missing" },
  TOO_MANY_REQUESTS = { 429, "You have reached the maximum number of concurrent API calls" },
  AUTHENTICATION_FAILURE = { 401, "Authentication failed" },
}

local THROTTLE_DESCRIPTION = "You have made too many requests continuously. Please try again after some time."

---------------------------------------------------------------------------
-- A minimal keep-alive HTTP/1.1 client (the simulator always sends
-- Content-Length, so no chunked decoding is needed).

local Conn = {}
Conn.__index = Conn

local function connect(port)
  local s = assert(socket.connect("127.0.0.1", port))
  s:settimeout(10)
  return setmetatable({ s = s }, Conn)
end

function Conn:send_request(method, path, headers, body)
  local lines = { method .. " " .. path .. " HTTP/1.1", "Host: 127.0.0.1" }
  for k, v in pairs(headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if body then lines[#lines + 1] = "Content-Length: " .. #body end
  assert(self.s:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")))
end

function Conn:read_response()
  local line = assert(self.s:receive("*l"))
  local res = { status = tonumber(line:match("^HTTP/1%.1 (%d+)")), headers = {}, body = "" }
  while true do
    local l = assert(self.s:receive("*l"))
    if l == "" then break end
    local k, v = l:match("^([^:]+):%s*(.*)$")
    res.headers[k:lower()] = v
  end
  local n = tonumber(res.headers["content-length"] or "0")
  if n > 0 then res.body = assert(self.s:receive(n)) end
  local ok, json = pcall(cjson.decode, res.body)
  if ok then res.json = json end
  return res
end

function Conn:request(method, path, headers, body)
  self:send_request(method, path, headers, body)
  return self:read_response()
end

function Conn:close()
  self.s:close()
end

---------------------------------------------------------------------------

describe("zoho simulator", function()
  local sim, startup_seconds

  local function call(method, path, headers, body)
    local c = connect(sim.port)
    local res = c:request(method, path, headers, body)
    c:close()
    return res
  end

  local function auth(token)
    return { Authorization = "Zoho-oauthtoken " .. (token or "tok") }
  end

  local function del(path, token)
    return call("DELETE", path, auth(token))
  end

  local function token_post(body, headers)
    local h = { ["Content-Type"] = "application/x-www-form-urlencoded" }
    for k, v in pairs(headers or {}) do h[k] = v end
    return call("POST", "/oauth/v2/token", h, body)
  end

  local function refresh(client, secret, rt)
    return token_post("grant_type=refresh_token&client_id=" .. (client or "cid")
      .. "&client_secret=" .. (secret or "csecret") .. "&refresh_token=" .. (rt or "rtok"))
  end

  -- Asserts a whole-request error: one flat object with the canonical fields.
  local function assert_flat(res, code, message, details)
    assert.equal(CANONICAL[code][1], res.status)
    assert.equal("application/json", res.headers["content-type"])
    assert.is_table(res.json, "body is not JSON: " .. res.body)
    assert.same({
      code = code,
      details = details or {},
      message = message or CANONICAL[code][2],
      status = "error",
    }, res.json)
    if not details then assert.truthy(res.body:find('"details":{}', 1, true)) end
  end

  local function entry(id, ok)
    if ok then
      return { code = "SUCCESS", details = { id = id }, message = "relation removed", status = "success" }
    end
    return { code = "INVALID_DATA", details = { id = id },
      message = "the related id given seems to be invalid", status = "error" }
  end

  local function ids(from, to)
    local t = {}
    for i = from, to do t[#t + 1] = tostring(i) end
    return t
  end

  setup(function()
    local t0 = socket.gettime()
    -- Two workers: state must be shared through the dict, not worker memory.
    sim = simulator.start { workers = 2 }
    startup_seconds = socket.gettime() - t0
  end)

  teardown(function()
    if sim then sim:stop() end
  end)

  before_each(function()
    sim:reset()
    sim:add_token("tok")
  end)

  it("starts in under 2 s and answers ping", function()
    assert.is_true(startup_seconds < 2, "startup took " .. startup_seconds .. " s")
    assert.matches("^http://127%.0%.0%.1:%d+$", sim.url)
    assert.equal(sim.url, "http://127.0.0.1:" .. sim.port)
    local res = call("GET", "/__sim/ping")
    assert.equal(200, res.status)
    assert.same({ ok = true }, res.json)
  end)

  describe("delink", function()
    it("removes several relations with ?ids= and answers 200 with one entry per id", function()
      sim:seed("Products", "100", "Leads", { "1", "2", "3" })
      local res = del("/crm/v8/Products/100/Leads?ids=2,1")
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.same({ data = { entry("2", true), entry("1", true) } }, res.json)
      assert.same({ "3" }, sim:relations("Products", "100", "Leads"))
    end)

    it("removes one relation with the path form", function()
      sim:seed("Products", "100", "Leads", { "3", "4" })
      local res = del("/crm/v2.1/Products/100/Leads/3")
      assert.equal(200, res.status)
      assert.same({ data = { entry("3", true) } }, res.json)
      assert.same({ "4" }, sim:relations("Products", "100", "Leads"))
    end)

    it("accepts every known version", function()
      for _, v in ipairs { "v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8" } do
        sim:seed("Campaigns", "7", "Contacts", { "70" })
        local res = del("/crm/" .. v .. "/Campaigns/7/Contacts/70")
        assert.equal(200, res.status, v)
      end
    end)

    it("gives INVALID_DATA entries for unrelated ids and 207 when mixed", function()
      sim:seed("Products", "100", "Leads", { "1", "2" })
      local res = del("/crm/v8/Products/100/Leads?ids=1,99,2")
      assert.equal(207, res.status)
      assert.same({ data = { entry("1", true), entry("99", false), entry("2", true) } }, res.json)
      assert.same({}, sim:relations("Products", "100", "Leads"))
    end)

    it("answers 400 with a data array when every id fails, also on a second delink", function()
      sim:seed("Products", "100", "Leads", { "5" })
      assert.equal(200, del("/crm/v8/Products/100/Leads/5").status)
      local res = del("/crm/v8/Products/100/Leads/5")
      assert.equal(400, res.status)
      assert.same({ data = { entry("5", false) } }, res.json)
      res = del("/crm/v8/Products/100/Leads?ids=8,9")
      assert.equal(400, res.status)
      assert.same({ data = { entry("8", false), entry("9", false) } }, res.json)
    end)

    it("lets a duplicate id in one request succeed once", function()
      sim:seed("Products", "100", "Leads", { "5" })
      local res = del("/crm/v8/Products/100/Leads?ids=5,5")
      assert.equal(207, res.status)
      assert.same({ data = { entry("5", true), entry("5", false) } }, res.json)
    end)

    it("switches the mixed and all-failed statuses", function()
      sim:seed("Products", "100", "Leads", { "1", "2" })
      sim:config { mixed_status = 200, all_failed_status = 200 }
      local res = del("/crm/v8/Products/100/Leads?ids=1,99")
      assert.equal(200, res.status)
      assert.same({ data = { entry("1", true), entry("99", false) } }, res.json)
      assert.equal(200, del("/crm/v8/Products/100/Leads/99").status)
      sim:config { all_failed_status = 207 }
      res = del("/crm/v8/Products/100/Leads/99")
      assert.equal(207, res.status)
      assert.same({ data = { entry("99", false) } }, res.json)
      assert.equal(200, del("/crm/v8/Products/100/Leads?ids=2,98").status, "mixed_status is still 200")
    end)

    it("treats documented relations as valid without seeding", function()
      local documented = {
        { "Campaigns", "Leads" }, { "Campaigns", "Contacts" }, { "Products", "Leads" },
        { "Products", "Accounts" }, { "Products", "Contacts" }, { "Products", "Potentials" },
        { "Products", "Deals" }, { "Products", "Price_Books" }, { "Appointments", "Services" },
        { "Leads", "Notes" },
      }
      for _, pair in ipairs(documented) do
        local res = del("/crm/v8/" .. pair[1] .. "/1/" .. pair[2] .. "/2")
        assert.equal(400, res.status)
        assert.same({ data = { entry("2", false) } }, res.json, pair[1] .. "/" .. pair[2])
      end
    end)

    it("makes a seeded related list valid for its module, even with no ids", function()
      local res = del("/crm/v8/Accounts/1/Custom_List/2")
      assert_flat(res, "INVALID_DATA", "The relation name given seems to be invalid", { param_name = "related_list" })
      sim:seed("Accounts", "1", "Custom_List", {})
      res = del("/crm/v8/Accounts/1/Custom_List/2")
      assert.same({ data = { entry("2", false) } }, res.json)
      -- Only for that module.
      assert_flat(del("/crm/v8/Contacts/1/Custom_List/2"), "INVALID_DATA",
        "The relation name given seems to be invalid", { param_name = "related_list" })
    end)

    it("accepts exactly 100 ids and refuses 101", function()
      sim:seed("Products", "1", "Leads", ids(1, 100))
      local res = del("/crm/v8/Products/1/Leads?ids=" .. table.concat(ids(1, 100), ","))
      assert.equal(200, res.status)
      assert.equal(100, #res.json.data)
      sim:seed("Products", "1", "Leads", ids(1, 101))
      res = del("/crm/v8/Products/1/Leads?ids=" .. table.concat(ids(1, 101), ","))
      assert.equal(400, res.status)
      assert.is_nil(res.json.data)
      assert.equal("INVALID_DATA", res.json.code)
      assert.equal("error", res.json.status)
      assert.same({ limit = 100 }, res.json.details)
      assert.matches("100", res.json.message)
      assert.equal(101, #sim:relations("Products", "1", "Leads"), "a refused request removes nothing")
    end)

    it("joins repeated ids parameters and decodes %2C", function()
      sim:seed("Products", "1", "Leads", { "1", "2", "3" })
      local res = del("/crm/v8/Products/1/Leads?ids=1%2C2&ids=3")
      assert.equal(200, res.status)
      assert.same({ data = { entry("1", true), entry("2", true), entry("3", true) } }, res.json)
    end)

    it("returns relations sorted numerically as strings", function()
      sim:seed("Products", "1", "Leads", { "30", "4", "200", "4" })
      sim:seed("Products", "1", "Leads", { 5 })
      assert.same({ "4", "5", "30", "200" }, sim:relations("Products", "1", "Leads"))
      assert.same({}, sim:relations("Products", "2", "Leads"))
    end)
  end)

  describe("whole-request errors", function()
    it("INVALID_REQUEST_METHOD for anything but DELETE, checked first", function()
      for _, m in ipairs { "GET", "POST", "PUT", "PATCH" } do
        assert_flat(call(m, "/crm/v8/Products/1/Leads/2", auth()), "INVALID_REQUEST_METHOD")
      end
      assert_flat(call("GET", "/crm/v99/Nope"), "INVALID_REQUEST_METHOD")
    end)

    it("INVALID_URL_PATTERN for bad versions and shapes, before the token check", function()
      local bad = {
        "/crm/v9/Products/1/Leads/2", "/crm/v1/Products/1/Leads/2", "/crm/V8/Products/1/Leads/2",
        "/crm/v8/Products/1", "/crm/v8/Products/1/Leads/2/3", "/crm/v8/Products//Leads/2",
        "/crm/v8/Products/1/Leads/", "/crm/", "/crm/v8",
      }
      for _, path in ipairs(bad) do assert_flat(del(path), "INVALID_URL_PATTERN") end
      assert_flat(call("DELETE", "/crm/v9/Products/1/Leads/2"), "INVALID_URL_PATTERN")
    end)

    it("INVALID_URL_PATTERN for paths outside the API", function()
      assert_flat(call("GET", "/"), "INVALID_URL_PATTERN")
      assert_flat(del("/api/v8/Products/1/Leads/2"), "INVALID_URL_PATTERN")
      assert_flat(call("POST", "/oauth/v2/token/revoke"), "INVALID_URL_PATTERN")
    end)

    it("INVALID_TOKEN for a missing, unknown, malformed or expired token", function()
      sim:add_token("old", { expires_in = 0 })
      sim:add_token("older", { expires_in = -60 })
      sim:add_token("soon", { expires_in = 1 })
      local path = "/crm/v8/Products/1/Leads/2"
      assert_flat(call("DELETE", path), "INVALID_TOKEN")
      assert_flat(del(path, "nope"), "INVALID_TOKEN")
      assert_flat(call("DELETE", path, { Authorization = "Bearer tok" }), "INVALID_TOKEN")
      assert_flat(del(path, "old"), "INVALID_TOKEN")
      assert_flat(del(path, "older"), "INVALID_TOKEN")
      assert.equal(400, del(path, "soon").status)
      socket.sleep(1.1)
      assert_flat(del(path, "soon"), "INVALID_TOKEN")
    end)

    it("checks the token before the module", function()
      assert_flat(call("DELETE", "/crm/v8/Nope/x/y/z"), "INVALID_TOKEN")
    end)

    it("OAUTH_SCOPE_MISMATCH unless the scope covers the module", function()
      local path = "/crm/v8/Products/1/Leads/2"
      local cases = {
        { "ZohoCRM.modules.Leads.ALL", false },
        { "ZohoCRM.modules.Products.READ", false },
        { "ZohoCRM.settings.ALL", false },
        { "ZohoCRM.modules.ALL", true },
        { "zohocrm.MODULES.all", true },
        { "ZohoCRM.modules.Products.ALL", true },
        { "ZohoCRM.modules.products.write", true },
        { "ZohoCRM.modules.Products.DELETE", true },
        { "ZohoCRM.settings.ALL, ZohoCRM.modules.Products.DELETE", true },
        { "ZohoCRM.settings.ALL,ZohoCRM.modules.Leads.ALL", false },
      }
      for i, case in ipairs(cases) do
        local tok = "scoped" .. i
        sim:add_token(tok, { scope = case[1] })
        local res = del(path, tok)
        if case[2] then
          assert.equal(400, res.status, case[1])
          assert.is_table(res.json.data, case[1])
        else
          assert_flat(res, "OAUTH_SCOPE_MISMATCH")
        end
      end
    end)

    it("AUTHORIZATION_FAILED and NO_PERMISSION for flagged tokens", function()
      sim:add_token("authfail", { authorization_failed = true })
      sim:add_token("noperm", { no_permission = true })
      assert_flat(del("/crm/v8/Products/1/Leads/2", "authfail"), "AUTHORIZATION_FAILED")
      assert_flat(del("/crm/v8/Products/1/Leads/2", "noperm"), "NO_PERMISSION")
    end)

    it("INVALID_MODULE for unknown modules", function()
      assert_flat(del("/crm/v8/Widgets/1/Leads/2"), "INVALID_MODULE")
      assert_flat(del("/crm/v8/products/1/Leads/2"), "INVALID_MODULE")
      assert_flat(del("/crm/v8/Widgets/abc/Nope?ids=x"), "INVALID_MODULE")
    end)

    it("UNABLE_TO_PARSE_DATA_TYPE for a non-numeric record or related id", function()
      assert_flat(del("/crm/v8/Products/abc/Leads/2"), "UNABLE_TO_PARSE_DATA_TYPE")
      assert_flat(del("/crm/v8/Products/1/Leads/x2"), "UNABLE_TO_PARSE_DATA_TYPE")
      assert_flat(del("/crm/v8/Products/1/Leads/2,3"), "UNABLE_TO_PARSE_DATA_TYPE") -- the path names one id
      assert_flat(del("/crm/v8/Products/1/Leads?ids=1,x,3"), "UNABLE_TO_PARSE_DATA_TYPE")
      assert_flat(del("/crm/v8/Products/1/Leads?ids=1,,3"), "UNABLE_TO_PARSE_DATA_TYPE")
      assert_flat(del("/crm/v8/Products/1/Leads?ids=-1"), "UNABLE_TO_PARSE_DATA_TYPE")
    end)

    it("INVALID_DATA for an unknown related list", function()
      assert_flat(del("/crm/v8/Products/1/Notes/2"), "INVALID_DATA",
        "The relation name given seems to be invalid", { param_name = "related_list" })
    end)

    it("REQUIRED_PARAM_MISSING when the multi form has no ids", function()
      for _, path in ipairs { "/crm/v8/Products/1/Leads", "/crm/v8/Products/1/Leads?ids=",
        "/crm/v8/Products/1/Leads?ids", "/crm/v8/Products/1/Leads?id=1" } do
        assert_flat(del(path), "REQUIRED_PARAM_MISSING", nil, { param_name = "ids" })
      end
    end)

    it("answers every canonical error by injection", function()
      sim:seed("Products", "1", "Leads", { "2" })
      for code in pairs(CANONICAL) do
        sim:inject { code = code }
        assert_flat(del("/crm/v8/Products/1/Leads/2"), code)
      end
      assert.same({ "2" }, sim:relations("Products", "1", "Leads"), "injected answers change no state")
    end)
  end)

  describe("injection", function()
    before_each(function()
      sim:seed("Products", "1", "Leads", { "2", "3" })
    end)

    it("serves a code fault count times, then the real answer", function()
      sim:inject { code = "TOO_MANY_REQUESTS", count = 2 }
      assert_flat(del("/crm/v8/Products/1/Leads/2"), "TOO_MANY_REQUESTS")
      assert_flat(del("/crm/v8/Products/1/Leads/2"), "TOO_MANY_REQUESTS")
      assert.equal(200, del("/crm/v8/Products/1/Leads/2").status)
    end)

    it("serves raw answers with headers and content type", function()
      sim:inject { status = 502, body = "<html>bad gateway</html>", content_type = "text/html",
        headers = { ["Retry-After"] = "2" } }
      local res = del("/crm/v8/Products/1/Leads/2")
      assert.equal(502, res.status)
      assert.equal("text/html", res.headers["content-type"])
      assert.equal("2", res.headers["retry-after"])
      assert.equal("<html>bad gateway</html>", res.body)
    end)

    it("adds headers to a code fault", function()
      sim:inject { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "1" } }
      local res = del("/crm/v8/Products/1/Leads/2")
      assert_flat(res, "TOO_MANY_REQUESTS")
      assert.equal("1", res.headers["retry-after"])
    end)

    it("is FIFO and applies to any request of its target", function()
      sim:inject { code = "INTERNAL_ERROR" }
      sim:inject { status = 503, body = "" }
      assert_flat(call("GET", "/crm/v8/whatever", auth()), "INTERNAL_ERROR")
      local res = del("/crm/v8/Products/1/Leads/2")
      assert.equal(503, res.status)
      assert.equal("", res.body)
      assert.equal(200, del("/crm/v8/Products/1/Leads/2").status)
    end)

    it("keeps api and token faults apart", function()
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      sim:inject { code = "INTERNAL_ERROR", target = "token" }
      assert.equal(200, del("/crm/v8/Products/1/Leads/2").status)
      assert_flat(refresh(), "INTERNAL_ERROR")
      sim:inject { status = 200, body = '{"error":"invalid_code"}', target = "token" }
      assert.same({ error = "invalid_code" }, refresh().json)
      assert.equal(200, refresh().status)
      assert.equal(1, sim:counters().token_grants, "injected answers grant nothing")
    end)

    it("is counted and logged", function()
      sim:inject { code = "INTERNAL_ERROR" }
      del("/crm/v8/Products/1/Leads/2")
      local c = sim:counters()
      assert.equal(1, c.requests)
      assert.same({ 1 }, c.ids_per_request)
      local log = sim:log()
      assert.equal(1, #log)
      assert.equal(500, log[1].status)
    end)

    it("refuses malformed faults with a clear error", function()
      assert.has_error(function() sim:inject { code = "NOT_A_CODE" } end)
      local ok, err = pcall(sim.inject, sim, { code = "INTERNAL_ERROR", target = "elsewhere" })
      assert.is_false(ok)
      assert.matches("target must be api or token", err)
      assert.matches("/__sim/inject", err)
    end)
  end)

  describe("connection faults (action)", function()
    local ALL = { "2", "3" }

    before_each(function()
      sim:seed("Products", "1", "Leads", ALL)
    end)

    -- One request on a fresh connection, read until the server closes it: for the
    -- faults that close. Returns the raw bytes ("" when nothing was answered).
    local function raw(path, method, headers, body)
      local c = connect(sim.port)
      c:send_request(method or "DELETE", path, headers or auth(), body)
      local data, _, partial = c.s:receive("*a")
      c:close()
      return data or partial
    end

    -- status, headers (lower-case names), body of raw bytes.
    local function parse(bytes)
      local head, body = bytes:match("^(.-)\r\n\r\n(.*)$")
      local status = tonumber(head:match("^HTTP/1%.1 (%d+)"))
      local headers = {}
      for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do headers[k:lower()] = v end
      return status, headers, body
    end

    local function removed() return sim:removed("Products", "1", "Leads") end
    local function related() return sim:relations("Products", "1", "Leads") end

    it("reset closes the connection without answering and applies nothing", function()
      sim:inject { action = "reset", count = 2 }
      assert.equal("", raw("/crm/v8/Products/1/Leads?ids=2,3"))
      assert.equal("", raw("/crm/v8/Products/1/Leads/2"))
      assert.same(ALL, related())
      assert.same({}, removed())
      local res = del("/crm/v8/Products/1/Leads/2")
      assert.equal(200, res.status, "count 2: the third request is answered")
      local log = sim:log()
      assert.equal(3, #log)
      assert.equal(444, log[1].status)
      assert.equal("reset", log[1].action)
      assert.is_nil(log[3].action)
      assert.same({ 2, 1, 1 }, sim:counters().ids_per_request)
    end)

    it("drop_after_apply removes the relations, then closes without answering", function()
      sim:inject { action = "drop_after_apply" }
      assert.equal("", raw("/crm/v8/Products/1/Leads?ids=2,9"))
      assert.same({ "3" }, related())
      assert.same({ "2" }, removed())
      assert.same({ status = 444, action = "drop_after_apply" },
        { status = sim:log()[1].status, action = sim:log()[1].action })
      -- The retry of a dropped call finds the relation gone.
      local res = del("/crm/v8/Products/1/Leads?ids=2,9")
      assert.equal(400, res.status)
      assert.same({ data = { entry("2", false), entry("9", false) } }, res.json)
    end)

    it("drop_after_apply on the token endpoint grants a token nobody receives", function()
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      sim:inject { action = "drop_after_apply", target = "token" }
      assert.equal("", raw("/oauth/v2/token", "POST", { ["Content-Type"] = "application/x-www-form-urlencoded" },
        "grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=rtok"))
      assert.equal(1, sim:counters().token_grants)
      assert.is_string(refresh().json.access_token, "once")
    end)

    it("truncate answers the real status and full Content-Length, then half the body", function()
      sim:inject { action = "truncate" }
      local status, headers, body = parse(raw("/crm/v8/Products/1/Leads?ids=2,9"))
      assert.equal(207, status)
      assert.equal("application/json", headers["content-type"])
      local full = cjson.encode({ data = { entry("2", true), entry("9", false) } })
      local length = tonumber(headers["content-length"])
      assert.equal(#full, length, "announces the whole body")
      assert.equal(math.floor(length / 2), #body)
      assert.equal('{"data":[{', body:sub(1, 10))
      assert.same({ "3" }, related(), "the delink was applied")
      assert.same({ "2" }, removed())
      assert.equal(207, sim:log()[1].status)
      assert.equal("truncate", sim:log()[1].action)
    end)

    it("truncate sends size bytes, of an injected answer too, and always fewer than announced", function()
      sim:inject { action = "truncate", size = 10 }
      sim:inject { action = "truncate", status = 502, body = "<html>bad gateway</html>", content_type = "text/html",
        size = 6 }
      sim:inject { action = "truncate", size = 1000000 }
      local status, headers, body = parse(raw("/crm/v8/Products/1/Leads/2"))
      assert.equal(200, status)
      assert.equal(10, #body)
      assert.is_true(tonumber(headers["content-length"]) > 10)
      status, headers, body = parse(raw("/crm/v8/Products/1/Leads/3"))
      assert.equal(502, status)
      assert.equal("text/html", headers["content-type"])
      assert.equal("24", headers["content-length"])
      assert.equal("<html>", body)
      assert.same({ "3" }, related(), "an injected answer applies nothing")
      status, headers, body = parse(raw("/crm/v8/Products/1/Leads/3"))
      assert.equal(200, status)
      assert.equal(tonumber(headers["content-length"]) - 1, #body)
      assert.same(ALL, removed())
    end)

    it("delay answers normally after delay_ms", function()
      sim:inject { action = "delay", delay_ms = 300 }
      local t0 = socket.gettime()
      local res = del("/crm/v8/Products/1/Leads/2")
      assert.is_true(socket.gettime() - t0 >= 0.29)
      assert.equal(200, res.status)
      assert.same({ data = { entry("2", true) } }, res.json)
      assert.equal("delay", sim:log()[1].action)
      t0 = socket.gettime()
      assert.equal(200, del("/crm/v8/Products/1/Leads/3").status)
      assert.is_true(socket.gettime() - t0 < 0.25, "once")
    end)

    it("delay outlasts a client's timeout, and the delink is still applied", function()
      sim:inject { action = "delay", delay_ms = 300 }
      local c = connect(sim.port)
      c.s:settimeout(0.05)
      c:send_request("DELETE", "/crm/v8/Products/1/Leads/2", auth())
      local line, err = c.s:receive("*l")
      c:close()
      assert.is_nil(line)
      assert.equal("timeout", err)
      assert.same({}, removed(), "not yet")
      local t0 = socket.gettime()
      while #removed() == 0 and socket.gettime() - t0 < 2 do socket.sleep(0.02) end
      assert.same({ "2" }, removed())
      assert.same({ "3" }, related())
    end)

    it("delay_ms delays any fault", function()
      sim:inject { code = "INTERNAL_ERROR", delay_ms = 200 }
      local t0 = socket.gettime()
      assert_flat(del("/crm/v8/Products/1/Leads/2"), "INTERNAL_ERROR")
      assert.is_true(socket.gettime() - t0 >= 0.19)
    end)

    it("oversize answers 200 with a JSON-looking body of exactly size bytes and applies nothing", function()
      local size = 9 * 1024 * 1024
      sim:inject { action = "oversize", size = size }
      sim:inject { action = "oversize", size = 5 }
      local res = del("/crm/v8/Products/1/Leads/2")
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      assert.equal(size, tonumber(res.headers["content-length"]))
      assert.equal(size, #res.body)
      assert.equal('{"data":[],"padding":"xxx', res.body:sub(1, 25))
      assert.same({}, res.json.data)
      assert.equal('{"dat', del("/crm/v8/Products/1/Leads/2").body)
      assert.same(ALL, related())
      assert.same({}, removed())
    end)

    it("keeps every answer-shaped fault expressible: 429, 5xx, HTML 502, wrong shapes, odd data arrays", function()
      local faults = {
        { code = "TOO_MANY_REQUESTS" },
        { code = "TOO_MANY_REQUESTS", headers = { ["Retry-After"] = "3" } },
        { code = "INTERNAL_ERROR" },
        { status = 503, body = "" },
        { status = 502, body = "<html><body>502 Bad Gateway</body></html>", content_type = "text/html" },
        { status = 200, body = '{"data":{"code":"SUCCESS"}}' },
        { status = 200, body = '["SUCCESS"]' },
        { status = 200, body = cjson.encode({ data = { entry("2", true) } }) },                   -- shorter
        { status = 200, body = cjson.encode({ data = { entry("2", true), entry("3", true), entry("4", true) } }) },
        { status = 200, body = cjson.encode({ data = { entry("7", true), entry("8", true) } }) }, -- other ids
      }
      for _, f in ipairs(faults) do sim:inject(f) end
      for i, f in ipairs(faults) do
        local res = del("/crm/v8/Products/1/Leads?ids=2,3")
        assert.equal(f.status or CANONICAL[f.code][1], res.status, i)
        assert.equal(f.content_type or "application/json", res.headers["content-type"], i)
        if f.body then assert.equal(f.body, res.body, i) end
        if f.headers then assert.equal("3", res.headers["retry-after"], i) end
      end
      assert.same(ALL, related())
      assert.same({}, removed())
    end)

    it("refuses malformed action faults with a clear error", function()
      local cases = {
        { { action = "explode" }, "unknown action explode" },
        { { action = "delay" }, "action delay needs delay_ms" },
        { { action = "delay", delay_ms = -1 }, "delay_ms must be >= 0" },
        { { action = "delay", delay_ms = "soon" }, "delay_ms must be a number" },
        { { action = "oversize" }, "action oversize needs size" },
        { { action = "oversize", size = 1.5 }, "size must be an integer >= 0" },
        { { action = "oversize", size = 2 ^ 40 }, "size must be at most" },
        { { action = "oversize", size = 10, body = "x" }, "no code or body" },
        { { action = "reset", code = "INTERNAL_ERROR" }, "code makes no sense with action reset" },
        { { action = "drop_after_apply", status = 500 }, "status makes no sense with action drop_after_apply" },
        { { code = "INTERNAL_ERROR", size = 10 }, "size is for actions oversize and truncate" },
        { {}, "inject needs code, status or action" },
      }
      for _, case in ipairs(cases) do
        local ok, err = pcall(sim.inject, sim, case[1])
        assert.is_false(ok, case[2])
        assert.matches(case[2], err, 1, true)
      end
      assert.equal(200, del("/crm/v8/Products/1/Leads/2").status, "nothing was queued")
    end)
  end)

  describe("removed relations and requests per id", function()
    it("records what the server removed, whatever it answered", function()
      sim:seed("Products", "1", "Leads", { "1", "2", "3", "4" })
      sim:seed("Products", "2", "Leads", { "1" })
      del("/crm/v8/Products/1/Leads?ids=3,9,1")
      del("/crm/v8/Products/1/Leads/1")            -- already gone: INVALID_DATA
      sim:inject { code = "INTERNAL_ERROR" }
      del("/crm/v8/Products/1/Leads/2")            -- refused: nothing removed
      sim:add_token("noperm", { no_permission = true })
      del("/crm/v8/Products/1/Leads/4", "noperm")
      assert.same({ "1", "3" }, sim:removed("Products", "1", "Leads"))
      assert.same({ "2", "4" }, sim:relations("Products", "1", "Leads"))
      assert.same({}, sim:removed("Products", "2", "Leads"))
      assert.same({}, sim:removed("Products", "1", "Price_Books"))
      sim:seed("Products", "1", "Leads", { "1" })
      assert.same({ "1", "3" }, sim:removed("Products", "1", "Leads"), "seeding again forgets nothing")
      sim:reset()
      assert.same({}, sim:removed("Products", "1", "Leads"))
    end)

    it("takes numbers and validates its arguments", function()
      sim:seed("Products", 1, "Leads", { 5 })
      del("/crm/v8/Products/1/Leads/5")
      assert.same({ "5" }, sim:removed("Products", 1, "Leads"))
      assert.has_error(function() sim:removed("Products", "", "Leads") end)
    end)

    it("counts the API requests that carried each id", function()
      sim:seed("Products", "1", "Leads", { "1", "2", "3" })
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      del("/crm/v8/Products/1/Leads?ids=1,2")
      del("/crm/v8/Products/1/Leads/1")
      sim:inject { action = "reset" }
      pcall(del, "/crm/v8/Products/1/Leads?ids=2%2C3&ids=3,3")
      del("/crm/v8/Products/1/Leads")
      refresh()
      assert.same({ ["1"] = 2, ["2"] = 2, ["3"] = 1 }, sim:requests_per_id())
    end)
  end)

  describe("token endpoint", function()
    before_each(function()
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
    end)

    it("grants a working token", function()
      local res = refresh()
      assert.equal(200, res.status)
      assert.equal("application/json", res.headers["content-type"])
      local b = res.json
      assert.matches("^sim%.%x+$", b.access_token)
      assert.equal(36, #b.access_token)
      assert.same({ access_token = b.access_token, api_domain = sim.url, token_type = "Bearer", expires_in = 3600 }, b)
      sim:seed("Products", "1", "Leads", { "2" })
      assert.equal(200, del("/crm/v8/Products/1/Leads/2", b.access_token).status)
      assert.are_not.equal(b.access_token, refresh().json.access_token)
    end)

    it("takes parameters from the query string and Basic auth too", function()
      local query = "grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=rtok"
      local res = call("POST", "/oauth/v2/token?" .. query)
      assert.is_string(res.json.access_token)
      local basic = "Basic " .. (require "mime").b64("cid:csecret")
      res = token_post("grant_type=refresh_token&refresh_token=rtok", { Authorization = basic })
      assert.is_string(res.json.access_token)
    end)

    it("uses the client's expiry, scope and the configured api_domain", function()
      sim:oauth_client { client_id = "c2", client_secret = "s2", refresh_token = "r2",
        expires_in = 120, scope = "ZohoCRM.modules.Leads.ALL" }
      sim:config { api_domain = "https://www.zohoapis.eu" }
      local b = refresh("c2", "s2", "r2").json
      assert.equal(120, b.expires_in)
      assert.equal("https://www.zohoapis.eu", b.api_domain)
      assert_flat(del("/crm/v8/Products/1/Leads/2", b.access_token), "OAUTH_SCOPE_MISMATCH")
      assert.equal(400, del("/crm/v8/Leads/1/Notes/2", b.access_token).status)
    end)

    it("grants tokens that expire", function()
      sim:oauth_client { client_id = "c0", client_secret = "s0", refresh_token = "r0", expires_in = 0 }
      local b = refresh("c0", "s0", "r0").json
      assert_flat(del("/crm/v8/Products/1/Leads/2", b.access_token), "INVALID_TOKEN")
    end)

    it("expires every registered token on expire_tokens, and only those", function()
      local path = "/crm/v8/Products/1/Leads/2"
      sim:add_token("long", { expires_in = 86400 })
      sim:add_token("gone", { expires_in = -5 })
      local granted = refresh().json.access_token
      for _, tok in ipairs { "tok", "long", granted } do
        assert.equal(400, del(path, tok).status, tok) -- accepted: INVALID_DATA for the unrelated id
      end
      assert.equal(4, sim:expire_tokens()) -- tok (before_each), long, gone, granted
      for _, tok in ipairs { "tok", "long", granted, "gone" } do
        assert_flat(del(path, tok), "INVALID_TOKEN")
      end
      -- Tokens added or granted afterwards work; the expired ones stay expired.
      sim:add_token("new")
      assert.equal(400, del(path, "new").status)
      local regranted = refresh().json.access_token
      assert.equal(400, del(path, regranted).status)
      assert_flat(del(path, granted), "INVALID_TOKEN")
      local c = sim:counters()
      assert.equal(2, c.token_grants)
      assert.equal(6, sim:expire_tokens(), "counts every registered token, expired or not")
    end)

    it("answers the expires_in_sec quirk with milliseconds in expires_in", function()
      sim:oauth_client { client_id = "cq", client_secret = "sq", refresh_token = "rq", quirk_ms = true }
      local b = refresh("cq", "sq", "rq").json
      assert.equal(3600, b.expires_in_sec)
      assert.equal(3600000, b.expires_in)
      assert.equal("Bearer", b.token_type)
      assert.equal(sim.url, b.api_domain)
    end)

    it("reports errors with HTTP 200 and an error key", function()
      local cases = {
        { "grant_type=authorization_code&client_id=cid&client_secret=csecret&code=x", "unsupported_grant_type" },
        { "client_id=cid&client_secret=csecret&refresh_token=rtok", "unsupported_grant_type" },
        { "grant_type=refresh_token&client_id=other&client_secret=csecret&refresh_token=rtok", "invalid_client" },
        { "grant_type=refresh_token&client_id=cid&client_secret=wrong&refresh_token=rtok", "invalid_client" },
        { "grant_type=refresh_token&client_secret=csecret&refresh_token=rtok", "invalid_client" },
        { "grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=wrong", "invalid_code" },
        { "grant_type=refresh_token&client_id=cid&client_secret=csecret", "invalid_code" },
      }
      for _, case in ipairs(cases) do
        local res = token_post(case[1])
        assert.equal(200, res.status, case[1])
        assert.same({ error = case[2] }, res.json, case[1])
      end
      assert.equal(0, sim:counters().token_grants)
    end)

    it("is not served for other methods", function()
      local query = "grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=rtok"
      assert_flat(call("GET", "/oauth/v2/token?" .. query), "INVALID_URL_PATTERN")
    end)

    it("throttles the 11th grant in 10 minutes with HTTP 200 Access Denied", function()
      for i = 1, 10 do
        assert.is_string(refresh().json.access_token, "grant " .. i)
      end
      local res = refresh()
      assert.equal(200, res.status)
      assert.same({ error = "Access Denied", error_description = THROTTLE_DESCRIPTION, status = "failure" }, res.json)
      -- Per refresh token: another client is not affected.
      sim:oauth_client { client_id = "c2", client_secret = "s2", refresh_token = "r2" }
      assert.is_string(refresh("c2", "s2", "r2").json.access_token)
      local c = sim:counters()
      assert.equal(12, c.token_requests)
      assert.equal(11, c.token_grants)
    end)

    it("frees the throttle as the window slides", function()
      sim:config { grant_limit = 2, grant_window = 1 }
      assert.is_string(refresh().json.access_token)
      assert.is_string(refresh().json.access_token)
      assert.equal("Access Denied", refresh().json.error)
      socket.sleep(1.1)
      assert.is_string(refresh().json.access_token)
    end)

    it("keeps at most 15 active tokens per refresh token, dropping the oldest", function()
      sim:config { grant_limit = 100 }
      sim:seed("Products", "1", "Leads", {})
      local tokens = {}
      for i = 1, 16 do tokens[i] = refresh().json.access_token end
      assert_flat(del("/crm/v8/Products/1/Leads/2", tokens[1]), "INVALID_TOKEN")
      for i = 2, 16 do
        assert.equal(400, del("/crm/v8/Products/1/Leads/2", tokens[i]).status, "token " .. i)
      end
      sim:config { max_active_tokens = 2 }
      local t17 = refresh().json.access_token
      assert_flat(del("/crm/v8/Products/1/Leads/2", tokens[15]), "INVALID_TOKEN")
      assert.equal(400, del("/crm/v8/Products/1/Leads/2", tokens[16]).status)
      assert.equal(400, del("/crm/v8/Products/1/Leads/2", t17).status)
    end)
  end)

  describe("counters and log", function()
    it("counts requests, ids, grants and connections", function()
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      sim:seed("Products", "1", "Leads", { "1", "2", "3" })
      local c = connect(sim.port)
      c:request("DELETE", "/crm/v8/Products/1/Leads?ids=1,2", auth())
      c:request("DELETE", "/crm/v8/Products/1/Leads/3", auth())
      c:request("GET", "/crm/v8/Products/1/Leads?ids=4,5,6", auth())
      c:close()
      del("/crm/v8/Products/1/Leads")
      del("/crm/v9/x")
      refresh()
      refresh("cid", "bad")
      call("GET", "/elsewhere")
      assert.same({
        requests = 5,
        ids_per_request = { 2, 1, 3, 0, 0 },
        token_requests = 2,
        token_grants = 1,
        in_flight = 0,
        in_flight_peak = 1,
        connections = 5,
      }, sim:counters())
    end)

    it("starts empty", function()
      assert.same({ requests = 0, ids_per_request = {}, token_requests = 0, token_grants = 0,
        in_flight = 0, in_flight_peak = 0, connections = 0 }, sim:counters())
      assert.same({}, sim:log())
      local res = call("GET", "/__sim/counters")
      assert.truthy(res.body:find('"ids_per_request":[]', 1, true))
      assert.equal("[]", call("GET", "/__sim/log").body)
    end)

    it("logs API and token requests in order", function()
      sim:seed("Products", "1", "Leads", { "1" })
      local c = connect(sim.port)
      c:request("DELETE", "/crm/v8/Products/1/Leads?ids=1%2C2", auth())
      c:request("DELETE", "/crm/v8/Products/1/Leads/1")
      c:close()
      call("POST", "/oauth/v2/token?grant_type=password")
      local log = sim:log()
      assert.equal(3, #log)
      assert.same({ method = "DELETE", uri = "/crm/v8/Products/1/Leads?ids=1%2C2",
        authorization = "Zoho-oauthtoken tok", status = 207, connection = log[1].connection }, log[1])
      assert.same({ method = "DELETE", uri = "/crm/v8/Products/1/Leads/1",
        status = 401, connection = log[1].connection }, log[2])
      assert.equal("POST", log[3].method)
      assert.equal("/oauth/v2/token?grant_type=password", log[3].uri)
      assert.equal(200, log[3].status)
      assert.is_number(log[1].connection)
      assert.are_not.equal(log[1].connection, log[3].connection)
    end)

    it("keeps connections alive across many requests", function()
      sim:seed("Products", "1", "Leads", ids(1, 200))
      local c = connect(sim.port)
      for i = 1, 200 do
        local res = c:request("DELETE", "/crm/v8/Products/1/Leads/" .. i, auth())
        assert.equal(200, res.status)
        assert.equal("keep-alive", res.headers["connection"])
      end
      c:close()
      assert.equal(1, sim:counters().connections)
    end)
  end)

  describe("latency and concurrency", function()
    local function parallel(n, path)
      local conns = {}
      for i = 1, n do
        conns[i] = connect(sim.port)
        conns[i]:send_request("DELETE", path, auth())
      end
      local out = {}
      for i = 1, n do
        out[i] = conns[i]:read_response()
        conns[i]:close()
      end
      return out
    end

    it("delays API and token answers by latency_ms", function()
      sim:config { latency_ms = 200 }
      local t0 = socket.gettime()
      assert.equal(400, del("/crm/v8/Products/1/Leads/2").status)
      assert.is_true(socket.gettime() - t0 >= 0.19)
      t0 = socket.gettime()
      token_post("grant_type=refresh_token")
      assert.is_true(socket.gettime() - t0 >= 0.19)
      t0 = socket.gettime()
      call("GET", "/__sim/ping")
      assert.is_true(socket.gettime() - t0 < 0.15, "control calls are not delayed")
    end)

    it("serves slow requests concurrently and tracks in-flight peak", function()
      sim:config { latency_ms = 300 }
      sim:seed("Products", "1", "Leads", ids(1, 6))
      local t0 = socket.gettime()
      local res = parallel(6, "/crm/v8/Products/1/Leads?ids=1,2,3,4,5,6")
      local elapsed = socket.gettime() - t0
      assert.is_true(elapsed < 1.2, "took " .. elapsed .. " s")
      -- Concurrent delinks of the same ids: each id is removed exactly once.
      local successes = 0
      for _, r in ipairs(res) do
        for _, e in ipairs(r.json.data) do
          if e.status == "success" then successes = successes + 1 end
        end
      end
      assert.equal(6, successes)
      local c = sim:counters()
      assert.equal(6, c.in_flight_peak)
      assert.equal(0, c.in_flight)
      assert.equal(6, c.connections)
      assert.same({ 6, 6, 6, 6, 6, 6 }, c.ids_per_request)
    end)

    it("applies the grant limit to concurrent refreshes", function()
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      sim:config { latency_ms = 100 }
      local conns = {}
      for i = 1, 12 do
        conns[i] = connect(sim.port)
        local body = "grant_type=refresh_token&client_id=cid&client_secret=csecret&refresh_token=rtok"
        local form = { ["Content-Type"] = "application/x-www-form-urlencoded" }
        conns[i]:send_request("POST", "/oauth/v2/token", form, body)
      end
      local granted, denied = 0, 0
      for i = 1, 12 do
        local b = conns[i]:read_response().json
        conns[i]:close()
        if b.access_token then granted = granted + 1 elseif b.error == "Access Denied" then denied = denied + 1 end
      end
      assert.equal(10, granted)
      assert.equal(2, denied)
      local c = sim:counters()
      assert.equal(12, c.token_requests)
      assert.equal(10, c.token_grants)
    end)
  end)

  describe("control API", function()
    it("reset clears everything", function()
      sim:seed("Products", "1", "Leads", { "1" })
      sim:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      sim:config { latency_ms = 500, mixed_status = 200 }
      sim:inject { code = "INTERNAL_ERROR", count = 5 }
      sim:inject { code = "INTERNAL_ERROR", target = "token" }
      del("/crm/v8/Products/1/Leads/1")
      sim:reset()
      assert.same({}, sim:relations("Products", "1", "Leads"))
      assert.same({}, sim:log())
      assert.same({ requests = 0, ids_per_request = {}, token_requests = 0, token_grants = 0,
        in_flight = 0, in_flight_peak = 0, connections = 0 }, sim:counters())
      assert.same({ error = "invalid_client" }, refresh().json, "clients and token faults are gone")
      assert_flat(del("/crm/v8/Products/1/Leads/1"), "INVALID_TOKEN")
      sim:add_token("tok")
      local t0 = socket.gettime()
      local res = del("/crm/v8/Products/1/Leads/1")
      assert.is_true(socket.gettime() - t0 < 0.25, "latency is back to 0")
      assert.equal(400, res.status, "no injected fault left")
      assert.same({ data = { entry("1", false) } }, res.json)
      local cfg = call("GET", "/__sim/config").json
      assert.equal(207, cfg.mixed_status)
      assert.equal(400, cfg.all_failed_status)
      assert.equal(sim.url, cfg.api_domain)
    end)

    it("rejects bad control input with a clear error", function()
      local ok, err = pcall(sim.config, sim, { mixed_status = 400 })
      assert.is_false(ok)
      assert.matches("mixed_status", err)
      ok, err = pcall(sim.config, sim, { no_such_key = 1 })
      assert.is_false(ok)
      assert.matches("unknown config key no_such_key", err)
      assert.has_error(function() sim:seed("Products", "", "Leads", {}) end)
      assert.equal(404, call("GET", "/__sim/nothing").status)
      assert.equal(405, call("GET", "/__sim/reset").status)
      assert.equal(400, call("POST", "/__sim/seed", { ["Content-Type"] = "application/json" }, "{oops").status)
    end)
  end)

  describe("lifecycle", function()
    local function alive(pid)
      local f = io.open("/proc/" .. pid .. "/stat")
      if not f then return false end
      local stat = f:read("*a")
      f:close()
      return stat:match("^%d+ %b() (%a)") ~= "Z"
    end

    it("stop leaves no nginx process and removes the prefix", function()
      local s = simulator.start { workers = 3 }
      finally(function() s:stop() end)
      -- ping answers once one worker is up; the others may still be forking.
      local function worker_pids()
        local f = assert(io.open("/proc/" .. s.pid .. "/task/" .. s.pid .. "/children"))
        local pids = {}
        for pid in f:read("*a"):gmatch("%d+") do pids[#pids + 1] = pid end
        f:close()
        return pids
      end
      local workers, t0 = worker_pids(), socket.gettime()
      while #workers < 3 and socket.gettime() - t0 < 2 do
        socket.sleep(0.01)
        workers = worker_pids()
      end
      assert.equal(3, #workers)
      assert.equal(200, connect(s.port):request("GET", "/__sim/ping").status)
      local prefix = s.prefix
      s:stop()
      s:stop() -- idempotent
      assert.is_false(alive(s.pid))
      for _, pid in ipairs(workers) do assert.is_false(alive(pid), "worker " .. pid) end
      if not os.getenv("ZCRM_SIM_KEEP") then
        assert.is_nil(io.open(prefix .. "/nginx.conf"))
      end
      assert.is_nil(socket.connect("127.0.0.1", s.port))
    end)

    it("serves the API over https with tls, control calls over http", function()
      local s = simulator.start { tls = true }
      finally(function() s:stop() end)
      assert.matches("^https://127%.0%.0%.1:%d+$", s.url)
      assert.equal("https://127.0.0.1:" .. s.port, s.url)
      assert.matches("^http://127%.0%.0%.1:%d+$", s.control_url)
      assert.equal(s.prefix .. "/cert.pem", s.ca_file)
      s:add_token("tok")
      s:seed("Products", "1", "Leads", { "2" })
      local function curl(args)
        local p = io.popen("env -u LD_PRELOAD curl -s " .. args .. " 2>&1")
        local out = p:read("*a")
        p:close()
        return out
      end
      local function delete(url, ca)
        return curl("-o /dev/null -w '%{http_code}' -X DELETE -H 'Authorization: Zoho-oauthtoken tok'"
          .. (ca and " --cacert '" .. ca .. "'" or "") .. " '" .. url .. "/crm/v8/Products/1/Leads/2'")
      end
      assert.equal("000", delete(s.url), "not verified without the CA")
      assert.equal("200", delete(s.url, s.ca_file))
      assert.equal("400", delete("https://localhost:" .. s.port, s.ca_file), "a name of the certificate")
      assert.same({ "2" }, s:removed("Products", "1", "Leads"))
      -- Granted over https, the token's api_domain is the https URL.
      s:oauth_client { client_id = "cid", client_secret = "csecret", refresh_token = "rtok" }
      local grant = cjson.decode(curl("--cacert '" .. s.ca_file .. "' -d grant_type=refresh_token -d client_id=cid"
        .. " -d client_secret=csecret -d refresh_token=rtok '" .. s.url .. "/oauth/v2/token'"))
      assert.equal(s.url, grant.api_domain)
      local prefix = s.prefix
      s:stop()
      if not os.getenv("ZCRM_SIM_KEEP") then assert.is_nil(io.open(prefix .. "/cert.pem")) end
    end)

    it("runs as a script and stops at end of input", function()
      local lua = (type(jit) == "table") and "luajit" or "lua5.4"
      -- Not under a sanitizer preload, should the suite run with one.
      local p = io.popen("env -u LD_PRELOAD " .. lua .. " spec/support/simulator.lua </dev/null 2>&1")
      local out = p:read("*a")
      p:close()
      assert.matches("http://127%.0%.0%.1:%d+", out)
      assert.matches("sim%-token", out)
      assert.matches("sim%-client", out)
      assert.matches("sim%-secret", out)
      assert.matches("sim%-refresh", out)
      assert.matches("stopped", out)
    end)
  end)

  it("logged no errors in nginx's error log", function()
    local log = sim:error_log()
    assert.is_nil(log:match("%[error%]"), log)
    assert.is_nil(log:match("%[crit%]"), log)
    assert.is_nil(log:match("%[alert%]"), log)
    assert.is_nil(log:match("%[emerg%]"), log)
  end)
end)
