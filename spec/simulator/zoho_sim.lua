-- Test imitation of Zoho CRM's "Delink Related Records" API and of Zoho
-- Accounts' token endpoint, run inside nginx (content_by_lua). Behaviour
-- follows /work/shared/zoho-api.md; where the real API is uncertain there is a
-- config switch so tests can cover each variant.
--
-- All state lives in the shared dict `zoho_sim` so that every nginx worker
-- sees one server. Shared-dict calls are atomic one by one; compound updates
-- (token grants, seeding) take a short dict-based lock; counters use incr.
-- Bookkeeping (log, per-request id counts, seen connections) is written with
-- safe_set/safe_add so that a full dict drops bookkeeping, never evicts state.

local cjson = require "cjson"

local M = {}
local dict = ngx.shared.zoho_sim

local LOG_CAP = 20000 -- request log keeps the newest entries
local IPR_CAP = 100000 -- ids_per_request keeps the newest entries

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local VERSIONS = set { "v2", "v2.1", "v3", "v4", "v5", "v6", "v7", "v8" }

local MODULES = set {
  "Leads", "Contacts", "Accounts", "Deals", "Potentials", "Campaigns", "Products",
  "Price_Books", "Vendors", "Quotes", "Sales_Orders", "Purchase_Orders", "Invoices",
  "Cases", "Solutions", "Tasks", "Events", "Calls", "Notes", "Appointments", "Services",
}

-- Relations the docs list; seeding adds more (the docs' list is a sample).
local DOCUMENTED = {
  Campaigns = set { "Leads", "Contacts" },
  Products = set { "Leads", "Accounts", "Contacts", "Potentials", "Deals", "Price_Books" },
  Appointments = set { "Services" },
  Leads = set { "Notes" },
}

-- Canonical whole-request errors: code -> { HTTP status, message }.
local ERRORS = {
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

local DEFAULT_CONFIG = {
  mixed_status = 207,
  all_failed_status = 400,
  latency_ms = 0,
  api_domain = false, -- false: the simulator's own base URL
  grant_limit = 10,
  grant_window = 600,
  max_active_tokens = 15,
}

-- Allowed values per config key (nil: any number >= 0).
local CONFIG_CHOICES = {
  mixed_status = set { 200, 207 },
  all_failed_status = set { 200, 207, 400 },
}

---------------------------------------------------------------------------
-- JSON helpers. Debian's lua-cjson 2.1.0 has no empty_array, and encodes
-- every empty table as {}: arrays that may be empty go through arr().

local EMPTY_ARRAY = "@@zoho_sim_empty_array@@" -- no pattern magic characters

local function arr(t)
  if next(t) == nil then return EMPTY_ARRAY end
  return t
end

local function encode(v)
  local text = cjson.encode(v)
  -- Most bodies have no empty array: skip the scan (a seed index is megabytes).
  if not text:find(EMPTY_ARRAY, 1, true) then return text end
  return (text:gsub('"' .. EMPTY_ARRAY .. '"', "[]"))
end

local function decode(s)
  if s == nil then return nil end
  local ok, v = pcall(cjson.decode, s)
  if ok then return v end
  return nil
end

local function is_digits(s)
  return type(s) == "string" and s:match("^%d+$") ~= nil
end

-- The URL this request came in on: http, or https on the TLS listener.
local function base_url()
  return ngx.var.scheme .. "://127.0.0.1:" .. ngx.var.server_port
end

-- Runs fn under a cross-worker lock. The key expires so that a worker that
-- dies inside cannot wedge the simulator; holders never yield, so waits are
-- short.
local function with_lock(name, fn, ...)
  local key = "lock|" .. name
  local deadline = ngx.now() + 5
  while not dict:add(key, true, 5) do
    if ngx.now() > deadline then error("zoho_sim: lock " .. name .. " timed out") end
    ngx.sleep(0.001)
  end
  local ok, a, b = pcall(fn, ...)
  dict:delete(key)
  if not ok then error(a, 0) end
  return a, b
end

-- Decoded once per change of the stored config, not per request: the
-- simulator must not be what a benchmark measures. api_domain stays false when
-- unset: api_domain(cfg) resolves it for the listener asked.
local config_cache = {}

local function config()
  local raw = dict:get("cfg") or ""
  if config_cache.raw == raw then return config_cache.cfg end
  local cfg = decode(raw) or {}
  for k, v in pairs(DEFAULT_CONFIG) do
    if cfg[k] == nil then cfg[k] = v end
  end
  if cfg.api_domain == cjson.null then cfg.api_domain = false end
  config_cache.raw, config_cache.cfg = raw, cfg
  return cfg
end

local function api_domain(cfg)
  return cfg.api_domain or base_url()
end

local function random_hex(bytes)
  -- /dev/urandom rather than math.random: workers would share one seed.
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(bytes)
  f:close()
  return (raw:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

---------------------------------------------------------------------------
-- Responses. Handlers return a response table; serve() sends and logs it.

local function json_response(status, body, headers)
  return { status = status, body = encode(body), content_type = "application/json", headers = headers }
end

local function flat_error(code, details, message)
  local e = ERRORS[code]
  return json_response(e[1], {
    code = code,
    details = details or {},
    message = message or e[2],
    status = "error",
  })
end

-- res.close: close the connection without answering (nginx's 444).
-- res.truncate: announce the whole body's length, send that many bytes of it,
-- then close.
local function send(res)
  if res.close then return ngx.exit(444) end
  ngx.status = res.status
  ngx.header["Content-Type"] = res.content_type
  for k, v in pairs(res.headers or {}) do ngx.header[k] = v end
  local body = res.body or ""
  -- An explicit length keeps responses unchunked for simple test clients.
  ngx.header["Content-Length"] = #body
  if res.truncate then
    ngx.print(body:sub(1, res.truncate))
    ngx.flush(true)
    return ngx.exit(444)
  end
  ngx.print(body)
end

---------------------------------------------------------------------------
-- Tokens and scope.

local function scope_allows(scope, module)
  local want = ("zohocrm.modules." .. module):lower()
  for s in tostring(scope):gmatch("[^,]+") do
    s = s:match("^%s*(.-)%s*$"):lower()
    if s == "zohocrm.modules.all" then return true end
    local mod, op = s:match("^(.*)%.(%a+)$")
    if mod == want and (op == "all" or op == "write" or op == "delete") then return true end
  end
  return false
end

-- Worker-local memo tables for values derived from request or dict strings,
-- emptied when they grow past a bound (clients reuse a few headers and tokens).
local function memo(fn)
  local cache, n = {}, 0
  return function(s)
    local v = cache[s]
    if v == nil then
      if n >= 1000 then cache, n = {}, 0 end
      v = fn(s)
      cache[s], n = v, n + 1
    end
    return v
  end
end

-- Authorization header -> token (false if malformed).
local header_token = memo(function(auth)
  return auth:match("^[Zz][Oo][Hh][Oo]%-[Oo][Aa][Uu][Tt][Hh][Tt][Oo][Kk][Ee][Nn]%s+(%S+)%s*$") or false
end)

-- A token record as stored (JSON) -> the decoded record, plus `allows`, its
-- scope's verdict per module. Keyed by the stored text, so a changed record
-- (expire_tokens) is decoded again.
local token_record = memo(function(raw)
  local t = decode(raw)
  if type(t) ~= "table" then return false end
  t.allows = {}
  return t
end)

-- Returns nil if the request's token is acceptable, else an error response.
local function check_token(module)
  local auth = ngx.var.http_authorization
  local token = auth and header_token(auth)
  local raw = token and dict:get("tok|" .. token)
  local t = raw and token_record(raw)
  if not t or ngx.now() >= t.expires_at then return flat_error("INVALID_TOKEN") end
  local allowed = t.allows[module]
  if allowed == nil then
    allowed = scope_allows(t.scope, module)
    if MODULES[module] then t.allows[module] = allowed end -- bounded: URLs name any module
  end
  if not allowed then return flat_error("OAUTH_SCOPE_MISMATCH") end
  if t.authorization_failed then return flat_error("AUTHORIZATION_FAILED") end
  if t.no_permission then return flat_error("NO_PERMISSION") end
  return nil
end

---------------------------------------------------------------------------
-- Relations. Ten relations share a dict key: "r<list number>|<id but its last
-- digit>" holds a number whose 5-bit field number <last digit> is the id's
-- relation (an id not ending in a digit, which can be seeded but never
-- delinked, has a key of its own, "R<list number>|<id>", field 0). Delinks in a
-- dict of 500k relations were mostly cache misses walking its tree of 500k
-- nodes; now it has 50k. A list is numbered at its first seed.
--
-- A field is RELATED while related. A delink decrements only a field it read
-- as RELATED, and removed the relation iff the decrement gave RELATED - 1, so
-- concurrent delinks of one id report exactly one SUCCESS. A worker decrements
-- a field at most once per reading of RELATED, so a field never goes below
-- RELATED - (number of workers, a few) and never borrows from its neighbour.
-- Seeding raises a field back to RELATED, never above.
--
-- A delink request records the ids it removed in one "rm|" entry (one
-- shared-dict write per request, not per id), which removed() reads: what the
-- server really did, whatever answer the client got (or did not get).

local RELATED = 31
local FIELD_WEIGHT = {} -- last digit -> 32 ^ digit
do
  local w = 1
  for d = 0, 9 do FIELD_WEIGHT[d], w = w, w * 32 end
end

local function rel_list_key(module, record, related)
  return module .. "|" .. record .. "|" .. related
end

-- List lk's part of its relation keys, "<list number>|"; nil if the list was
-- never seeded (create: number it; callers hold the list's seed lock).
local function list_tag(lk, create)
  local n = dict:get("lid|" .. lk)
  if not n and create then
    n = dict:incr("lid|n", 1, 0)
    assert(dict:set("lid|" .. lk, n))
  end
  return n and n .. "|"
end

-- The key of id's relation in the list tagged tag, and the weight of its field.
local function rel_slot(tag, id)
  local w = FIELD_WEIGHT[id:byte(-1) - 48]
  if w then return "r" .. tag .. id:sub(1, -2), w end
  return "R" .. tag .. id, 1
end

-- The field of weight w in a relation key's value v (nil: no such key).
local function rel_field(v, w)
  return v and math.floor(v / w) % 32
end

local function related_list_valid(module, related)
  return (DOCUMENTED[module] and DOCUMENTED[module][related]) or dict:get("rl|" .. module .. "|" .. related) ~= nil
end

local function seed(module, record, related, ids)
  local lk = rel_list_key(module, record, related)
  dict:set("rl|" .. module .. "|" .. related, true)
  with_lock("relidx|" .. lk, function()
    -- The index lists every id ever seeded for the list; relations() filters it.
    local index = decode(dict:get("relidx|" .. lk)) or {}
    local known, tag = set(index), list_tag(lk, true)
    for _, id in ipairs(ids) do
      if not known[id] then
        known[id] = true
        index[#index + 1] = id
      end
      local key, w = rel_slot(tag, id)
      local f = rel_field(dict:get(key), w) or 0
      if f ~= RELATED then dict:incr(key, (RELATED - f) * w, 0) end
    end
    assert(dict:set("relidx|" .. lk, encode(index)))
  end)
end

-- The seeded ids of a list for which keep(id) holds, sorted: numeric
-- order for digit strings (shorter first), then plain string order.
local function seeded_ids(lk, keep)
  local ids = {}
  for _, id in ipairs(decode(dict:get("relidx|" .. lk)) or {}) do
    if keep(id) then ids[#ids + 1] = id end
  end
  table.sort(ids, function(a, b)
    if #a ~= #b then return #a < #b end
    return a < b
  end)
  return ids
end

local function relations(module, record, related)
  local lk = rel_list_key(module, record, related)
  local tag = list_tag(lk)
  if not tag then return {} end
  return seeded_ids(lk, function(id)
    local key, w = rel_slot(tag, id)
    return rel_field(dict:get(key), w) == RELATED
  end)
end

-- Only seeded ids can be removed, so the seed index covers every removal.
local function removed(module, record, related)
  local lk = rel_list_key(module, record, related)
  local prefix, gone = "rm|" .. lk .. "|", {}
  for _, key in ipairs(dict:get_keys(0)) do
    if key:sub(1, #prefix) == prefix then
      for id in (dict:get(key) or ""):gmatch("[^,]+") do gone[id] = true end
    end
  end
  return seeded_ids(lk, function(id) return gone[id] end)
end

-- Records the ids one request removed (safe_set: never evicts a relation).
local function record_removed(lk, ids)
  if #ids == 0 then return end
  local n = dict:incr("rm|n", 1, 0)
  dict:safe_set("rm|" .. lk .. "|" .. n, table.concat(ids, ","))
end

---------------------------------------------------------------------------
-- Delink API. This is the path a benchmark measures: an API request is parsed
-- once (for the counters and the handler), and the loops avoid gmatch, which
-- LuaJIT does not compile.

-- s split at every sep (one character): "" -> { "" }, "a," -> { "a", "" }.
local function split(s, sep)
  local out, pos = {}, 1
  while true do
    local at = s:find(sep, pos, true)
    if not at then
      out[#out + 1] = s:sub(pos)
      return out
    end
    out[#out + 1] = s:sub(pos, at - 1)
    pos = at + 1
  end
end

-- The raw `ids` query value: nil when absent or empty. Repeated `ids`
-- parameters are joined with "," as the SDKs' ParameterMap does.
local function ids_param()
  -- The usual query, ids= alone, with nothing to unescape ("%", "+"): plain
  -- finds over 2 KB of ids, no patterns (slow) nor get_uri_args (a table).
  local args = ngx.var.args
  if args and args:sub(1, 4) == "ids=" and not (args:find("&", 5, true) or args:find("%", 5, true)
      or args:find("+", 5, true)) then
    return #args > 4 and args:sub(5) or nil
  end
  local v = ngx.req.get_uri_args().ids
  if type(v) == "table" then
    local parts = {}
    for _, x in ipairs(v) do
      if type(x) == "string" then parts[#parts + 1] = x end
    end
    v = table.concat(parts, ",")
  end
  if type(v) ~= "string" or v == "" then return nil end
  return v
end

-- An API request: segs, the path's segments after its leading "/"; ids, the
-- related ids (the path's last segment, or ?ids= split at ","), nil unless
-- the path has 6 segments or 5 and an ids parameter (then query_ids, its text).
local function parse_api(uri)
  local req = { segs = split(uri:sub(2), "/") }
  local n = #req.segs
  if n == 6 then
    req.ids = { req.segs[6] }
  elseif n == 5 then
    req.query_ids = ids_param()
    req.ids = req.query_ids and split(req.query_ids, ",")
  end
  return req
end

-- True when s is non-empty digit strings joined by ",": one test for ?ids=,
-- as a byte loop, which LuaJIT compiles (a pattern is many times slower).
local function digit_list(s)
  local prev = 44 -- as if after a ","
  for i = 1, #s do
    local b = s:byte(i)
    if b == 44 then
      if prev == 44 then return false end
    elseif b < 48 or b > 57 then
      return false
    end
    prev = b
  end
  return prev ~= 44
end

-- A data entry is its code's text around the id. Built as text, not encoded:
-- ids are digits and the rest constant, so nothing needs escaping.
local REMOVED_ENTRY = { '{"code":"SUCCESS","details":{"id":"', '"},"message":"relation removed","status":"success"}' }
local NOT_RELATED_ENTRY = { '{"code":"INVALID_DATA","details":{"id":"',
  '"},"message":"the related id given seems to be invalid","status":"error"}' }

local function delink(cfg, req)
  if ngx.req.get_method() ~= "DELETE" then return flat_error("INVALID_REQUEST_METHOD") end

  local segs = req.segs
  if (#segs ~= 5 and #segs ~= 6) or not VERSIONS[segs[2]] then
    return flat_error("INVALID_URL_PATTERN")
  end
  for _, seg in ipairs(segs) do
    if seg == "" then return flat_error("INVALID_URL_PATTERN") end
  end
  local module, record, related = segs[3], segs[4], segs[5]

  local err = check_token(module)
  if err then return err end

  if not MODULES[module] then return flat_error("INVALID_MODULE") end
  if not is_digits(record) then return flat_error("UNABLE_TO_PARSE_DATA_TYPE") end
  if not related_list_valid(module, related) then
    return flat_error("INVALID_DATA", { param_name = "related_list" },
      "The relation name given seems to be invalid")
  end

  local ids = req.ids
  if not ids then return flat_error("REQUIRED_PARAM_MISSING", { param_name = "ids" }) end
  if #ids > 100 then
    return flat_error("INVALID_DATA", { limit = 100 },
      "the number of ids given exceeds the limit of 100")
  end
  local valid
  if req.query_ids then valid = digit_list(req.query_ids) else valid = is_digits(ids[1]) end
  if not valid then return flat_error("UNABLE_TO_PARSE_DATA_TYPE") end

  local lk, parts, gone = rel_list_key(module, record, related), {}, {}
  local tag = list_tag(lk) -- nil: never seeded, nothing to remove
  local last_key, value
  for i = 1, #ids do
    local id = ids[i]
    local entry = NOT_RELATED_ENTRY
    if tag then
      local key, w = rel_slot(tag, id)
      -- Consecutive ids share keys: a key is read once, then known by what
      -- its decrements return (its whole value, as fresh as a read).
      if key ~= last_key then last_key, value = key, dict:get(key) end
      if rel_field(value, w) == RELATED then
        value = dict:incr(key, -w)
        if rel_field(value, w) == RELATED - 1 then
          gone[#gone + 1] = id
          entry = REMOVED_ENTRY
        end
      end
    end
    -- Pieces, not a string per entry: less garbage.
    parts[4 * i - 3], parts[4 * i - 2], parts[4 * i - 1], parts[4 * i] = ",", entry[1], id, entry[2]
  end
  parts[1], parts[#parts + 1] = '{"data":[', "]}" -- the first "," opens the array
  record_removed(lk, gone)
  local status = 200
  if #gone == 0 then
    status = cfg.all_failed_status
  elseif #gone < #ids then
    status = cfg.mixed_status
  end
  return { status = status, body = table.concat(parts), content_type = "application/json" }
end

---------------------------------------------------------------------------
-- Token endpoint (Zoho Accounts). Errors are HTTP 200 with an `error` key.

local function first(v)
  if type(v) == "table" then v = v[1] end
  if type(v) ~= "string" then return nil end
  return v
end

local function token_params()
  local p = {}
  for k, v in pairs(ngx.req.get_uri_args()) do p[k] = first(v) end
  ngx.req.read_body()
  local post = ngx.req.get_post_args()
  for k, v in pairs(post or {}) do p[k] = first(v) end
  -- Zoho also accepts the client credentials as HTTP Basic auth.
  local basic = (ngx.var.http_authorization or ""):match("^[Bb]asic%s+(%S+)")
  local creds = basic and ngx.decode_base64(basic)
  if creds then
    local id, secret = creds:match("^([^:]*):(.*)$")
    p.client_id = p.client_id or id
    p.client_secret = p.client_secret or secret
  end
  return p
end

local function grant(cfg, client, refresh_token)
  local gkey = "grants|" .. client.client_id .. "|" .. refresh_token
  return with_lock(gkey, function()
    local now = ngx.now()
    local st = decode(dict:get(gkey)) or {}
    local times, tokens = {}, {}
    for _, t in ipairs(st.times or {}) do
      if t > now - cfg.grant_window then times[#times + 1] = t end
    end
    if #times >= cfg.grant_limit then return nil end
    times[#times + 1] = now

    -- Only tokens still registered and unexpired count as active.
    for _, tok in ipairs(st.tokens or {}) do
      local t = decode(dict:get("tok|" .. tok))
      if t and now < t.expires_at then tokens[#tokens + 1] = tok end
    end
    local token = "sim." .. random_hex(16)
    assert(dict:set("tok|" .. token, encode({ scope = client.scope, expires_at = now + client.expires_in })))
    tokens[#tokens + 1] = token
    while #tokens > cfg.max_active_tokens do
      dict:delete("tok|" .. table.remove(tokens, 1)) -- the oldest dies
    end
    assert(dict:set(gkey, encode({ times = times, tokens = tokens })))
    return token
  end)
end

local function token_endpoint(cfg)
  if ngx.req.get_method() ~= "POST" then return flat_error("INVALID_URL_PATTERN") end
  local p = token_params()
  if p.grant_type ~= "refresh_token" then
    return json_response(200, { error = "unsupported_grant_type" })
  end
  local client = p.client_id and decode(dict:get("client|" .. p.client_id))
  if not client or client.client_secret ~= p.client_secret then
    return json_response(200, { error = "invalid_client" })
  end
  if p.refresh_token ~= client.refresh_token then
    return json_response(200, { error = "invalid_code" })
  end
  local token = grant(cfg, client, p.refresh_token)
  if not token then
    return json_response(200, {
      error = "Access Denied",
      error_description = "You have made too many requests continuously. Please try again after some time.",
      status = "failure",
    })
  end
  dict:incr("c|token_grants", 1, 0)
  local body = {
    access_token = token, api_domain = api_domain(cfg), token_type = "Bearer", expires_in = client.expires_in,
  }
  if client.quirk_ms then
    -- Older Zoho Accounts answer: seconds in expires_in_sec, ms in expires_in.
    body.expires_in_sec = client.expires_in
    body.expires_in = client.expires_in * 1000
  end
  return json_response(200, body)
end

---------------------------------------------------------------------------
-- Faults injected by tests, FIFO per target. Each queued fault is pushed
-- `count` times so that lpop (atomic) hands one use to one request.
--
-- A fault first sleeps delay_ms (if given). Its answer is then: code -> that
-- canonical error; status/body -> that raw answer; action "oversize" -> a 200
-- JSON-looking body of `size` bytes; otherwise the real handler's answer (the
-- delink is applied). The action decides how the answer is delivered:
--   reset             close the connection, nothing applied, nothing sent
--   drop_after_apply  apply the real request, then close without answering
--   truncate          the answer's status and full Content-Length, but only
--                     `size` bytes of its body (default half), then close
--   delay             answer normally after delay_ms (client timeouts)
--   oversize          see above; nothing applied

local ACTIONS = set { "reset", "drop_after_apply", "truncate", "delay", "oversize" }

local MAX_OVERSIZE = 256 * 1024 * 1024

-- Valid JSON when size allows: {"data":[],"padding":"xxx..."}; else its first bytes.
local function oversize_body(size)
  local head, tail = '{"data":[],"padding":"', '"}'
  if size < #head + #tail then return (head .. tail):sub(1, size) end
  return head .. string.rep("x", size - #head - #tail) .. tail
end

local function injected_response(f, handler, cfg, req)
  if f.delay_ms then ngx.sleep(f.delay_ms / 1000) end
  local action = f.action
  if action == "reset" then return { status = 444, close = true } end
  if action == "drop_after_apply" then
    handler(cfg, req)
    return { status = 444, close = true }
  end
  local res
  if f.code then
    res = flat_error(f.code, f.details, f.message)
    res.status = f.status or res.status
    res.headers = f.headers
  elseif action == "oversize" then
    res = {
      status = f.status or 200,
      body = oversize_body(f.size),
      content_type = f.content_type or "application/json",
      headers = f.headers,
    }
  elseif f.status then
    res = {
      status = f.status,
      body = f.body or "",
      content_type = f.content_type or "application/json",
      headers = f.headers,
    }
  else
    res = handler(cfg, req)
    for k, v in pairs(f.headers or {}) do
      res.headers = res.headers or {}
      res.headers[k] = v
    end
  end
  if action == "truncate" then
    -- Always short of the announced length, unless the body is empty.
    res.truncate = math.max(0, math.min(f.size or math.floor(#res.body / 2), #res.body - 1))
  end
  return res
end

---------------------------------------------------------------------------
-- Accounting shared by API and token requests.

local function count_connection()
  if dict:safe_add("conn|" .. ngx.var.connection, true) then dict:incr("c|connections", 1, 0) end
end

-- in_flight moves by one, so every level up to the peak is reached; the
-- first request to reach a level (add succeeds once) raises the peak by one.
local function enter()
  local level = dict:incr("c|in_flight", 1, 0)
  if dict:add("lvl|" .. level, true) then dict:incr("c|in_flight_peak", 1, 0) end
end

local function leave()
  dict:incr("c|in_flight", -1, 0)
end

-- A log entry is stored as text, not JSON (cheaper per request): its fields
-- joined by "\n", which no method, request line or header value can hold.
-- authorization: "=" .. the header, or "" without one. GET log decodes them.
local LOG_ENTRY = "^([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n([^\n]*)\n(.*)$"

-- action: the injected fault's action, if any (absent from the entry otherwise).
local function log_request(seq, status, action)
  local auth = ngx.var.http_authorization
  dict:safe_set("log|" .. (seq % LOG_CAP), table.concat({
    status, ngx.var.connection, ngx.req.get_method(), action or "", auth and "=" .. auth or "", ngx.var.request_uri,
  }, "\n"))
end

local function log_entry(text)
  local status, connection, method, action, auth, uri = text:match(LOG_ENTRY)
  return {
    method = method,
    uri = uri,
    authorization = auth == "" and cjson.null or auth:sub(2),
    status = tonumber(status),
    connection = tonumber(connection),
    action = action ~= "" and action or nil,
  }
end

local function respond(fault, handler, cfg, req)
  if fault then return injected_response(fault, handler, cfg, req) end
  return handler(cfg, req)
end

-- kind: "api", "token" or nil (other paths: logged, not counted). An API
-- request is parsed here, once: handler(cfg, req) gets it (nil otherwise).
local function serve(kind, handler)
  -- The log slot is taken on arrival so the log is in arrival order.
  local seq = dict:incr("log|n", 1, 0)
  local cfg = config()
  local fault, req
  if kind then
    count_connection()
    if kind == "api" then
      req = parse_api(ngx.var.uri)
      -- ipr|n, the length of ids_per_request, is the API request counter too.
      local k = dict:incr("ipr|n", 1, 0)
      dict:safe_set("ipr|" .. (k % IPR_CAP), req.ids and #req.ids or 0)
    else
      dict:incr("c|token_requests", 1, 0)
    end
    fault = decode(dict:lpop("inj|" .. kind))
    enter()
    if cfg.latency_ms > 0 then ngx.sleep(cfg.latency_ms / 1000) end
  end

  local ok, res = pcall(respond, fault, handler, cfg, req)
  if kind then leave() end
  local action = fault and fault.action
  if not ok then
    log_request(seq, 500, action)
    error(res, 0) -- a simulator bug: let nginx log it and answer 500
  end
  -- A closed connection is logged as 444, nginx's code for it.
  log_request(seq, res.status, action)
  send(res)
end

---------------------------------------------------------------------------
-- Control API (/__sim/...).

local function ok_response(extra)
  local body = extra or {}
  body.ok = true
  return json_response(200, body)
end

local function bad(status, msg)
  return json_response(status, { ok = false, error = msg })
end

local function body_json()
  ngx.req.read_body()
  local raw = ngx.req.get_body_data()
  if not raw or raw == "" then return {} end
  local v = decode(raw)
  if type(v) ~= "table" then return nil, "request body is not a JSON object" end
  return v
end

local function need_string(v, name)
  if type(v) == "number" then v = string.format("%.0f", v) end
  if type(v) ~= "string" or v == "" then error({ msg = name .. " must be a non-empty string" }) end
  return v
end

local function opt_number(v, name, default)
  if v == nil or v == cjson.null then return default end
  if type(v) ~= "number" then error({ msg = name .. " must be a number" }) end
  return v
end

local function read_sequence(counter, prefix, cap)
  local n = dict:get(counter) or 0
  local out = {}
  for k = math.max(1, n - cap + 1), n do
    local v = dict:get(prefix .. (k % cap))
    if v ~= nil then out[#out + 1] = v end -- nil: that request is still running
  end
  return out
end

local control = {}

control["GET ping"] = function() return ok_response() end

control["POST reset"] = function()
  dict:flush_all()
  dict:flush_expired(0) -- free the memory now, not on LRU pressure
  return ok_response()
end

control["POST seed"] = function(b)
  local module = need_string(b.module, "module")
  local record = need_string(b.record, "record")
  local related = need_string(b.related, "related")
  if type(b.ids) ~= "table" then error({ msg = "ids must be an array" }) end
  local ids = {}
  for i, id in ipairs(b.ids) do ids[i] = need_string(id, "ids[" .. i .. "]") end
  seed(module, record, related, ids)
  return ok_response()
end

-- GET ...?module=&record=&related= -> {ids = read(module, record, related)}
local function list_endpoint(read)
  return function()
    local a = ngx.req.get_uri_args()
    local ids = read(need_string(first(a.module), "module"), need_string(first(a.record), "record"),
      need_string(first(a.related), "related"))
    return json_response(200, { ids = arr(ids) })
  end
end

control["GET relations"] = list_endpoint(relations)
control["GET removed"] = list_endpoint(removed)

control["POST tokens"] = function(b)
  local token = need_string(b.token, "token")
  local t = {
    scope = b.scope ~= nil and need_string(b.scope, "scope") or "ZohoCRM.modules.ALL",
    expires_at = ngx.now() + opt_number(b.expires_in, "expires_in", 3600),
    no_permission = b.no_permission == true,
    authorization_failed = b.authorization_failed == true,
  }
  assert(dict:set("tok|" .. token, encode(t)))
  return ok_response()
end

-- Every registered access token (added or granted) expires now: the next API
-- call with it gets 401 INVALID_TOKEN. Tokens added or granted later are not
-- affected. Answers how many tokens were expired.
control["POST expire_tokens"] = function()
  local now, n = ngx.now(), 0
  for _, key in ipairs(dict:get_keys(0)) do
    if key:sub(1, 4) == "tok|" then
      local t = decode(dict:get(key))
      if t and t.expires_at > now - 1 then
        t.expires_at = now - 1
        assert(dict:set(key, encode(t)))
      end
      n = n + 1
    end
  end
  return ok_response({ expired = n })
end

control["GET config"] = function()
  local cfg = {}
  for k, v in pairs(config()) do cfg[k] = v end
  cfg.api_domain = api_domain(cfg)
  return json_response(200, cfg)
end

control["POST config"] = function(b)
  local cfg = decode(dict:get("cfg")) or {}
  for k, v in pairs(b) do
    if DEFAULT_CONFIG[k] == nil then error({ msg = "unknown config key " .. k }) end
    if k == "api_domain" then
      if v ~= cjson.null and v ~= false and type(v) ~= "string" then
        error({ msg = "api_domain must be a string or null" })
      end
      cfg[k] = (type(v) == "string") and v or false
    else
      if type(v) ~= "number" or v < 0 then error({ msg = k .. " must be a number >= 0" }) end
      if CONFIG_CHOICES[k] and not CONFIG_CHOICES[k][v] then
        error({ msg = "unsupported value for " .. k .. ": " .. tostring(v) })
      end
      cfg[k] = v
    end
  end
  assert(dict:set("cfg", encode(cfg)))
  return ok_response()
end

control["POST inject"] = function(b)
  local target = b.target or "api"
  local action = b.action
  if target ~= "api" and target ~= "token" then error({ msg = "target must be api or token" }) end
  if b.code ~= nil and not ERRORS[b.code] then error({ msg = "unknown error code " .. tostring(b.code) }) end
  if action ~= nil and not ACTIONS[action] then error({ msg = "unknown action " .. tostring(action) }) end
  if b.code == nil and b.status == nil and action == nil then error({ msg = "inject needs code, status or action" }) end
  if b.status ~= nil and type(b.status) ~= "number" then error({ msg = "status must be a number" }) end
  if b.headers ~= nil and type(b.headers) ~= "table" then error({ msg = "headers must be an object" }) end
  for _, k in ipairs { "body", "content_type", "message" } do
    if b[k] ~= nil and type(b[k]) ~= "string" then error({ msg = k .. " must be a string" }) end
  end
  local delay_ms = opt_number(b.delay_ms, "delay_ms", nil)
  local size = opt_number(b.size, "size", nil)
  if delay_ms and delay_ms < 0 then error({ msg = "delay_ms must be >= 0" }) end
  if size and (size < 0 or size ~= math.floor(size)) then error({ msg = "size must be an integer >= 0" }) end
  if action == "reset" or action == "drop_after_apply" then
    for _, k in ipairs { "code", "status", "body", "content_type", "headers", "message", "details", "size" } do
      if b[k] ~= nil then error({ msg = k .. " makes no sense with action " .. action .. " (nothing is answered)" }) end
    end
  elseif action == "delay" then
    if not delay_ms then error({ msg = "action delay needs delay_ms" }) end
  elseif action == "oversize" then
    if not size then error({ msg = "action oversize needs size" }) end
    if size > MAX_OVERSIZE then error({ msg = "size must be at most " .. MAX_OVERSIZE }) end
    if b.code ~= nil or b.body ~= nil then error({ msg = "action oversize makes its own body: no code or body" }) end
  end
  if size and action ~= "oversize" and action ~= "truncate" then
    error({ msg = "size is for actions oversize and truncate" })
  end
  local count = opt_number(b.count, "count", 1)
  local fault = encode({
    code = b.code, status = b.status, body = b.body, content_type = b.content_type,
    headers = b.headers, details = b.details, message = b.message,
    action = action, delay_ms = delay_ms, size = size,
  })
  for _ = 1, count do assert(dict:rpush("inj|" .. target, fault)) end
  return ok_response()
end

control["GET counters"] = function()
  local function c(name) return dict:get("c|" .. name) or 0 end
  return json_response(200, {
    requests = dict:get("ipr|n") or 0,
    ids_per_request = arr(read_sequence("ipr|n", "ipr|", IPR_CAP)),
    token_requests = c("token_requests"),
    token_grants = c("token_grants"),
    in_flight = c("in_flight"),
    in_flight_peak = c("in_flight_peak"),
    connections = c("connections"),
  })
end

control["GET log"] = function()
  local entries = read_sequence("log|n", "log|", LOG_CAP)
  for i, text in ipairs(entries) do entries[i] = cjson.encode(log_entry(text)) end
  return { status = 200, body = "[" .. table.concat(entries, ",") .. "]", content_type = "application/json" }
end

control["POST oauth_clients"] = function(b)
  local client = {
    client_id = need_string(b.client_id, "client_id"),
    client_secret = need_string(b.client_secret, "client_secret"),
    refresh_token = need_string(b.refresh_token, "refresh_token"),
    scope = b.scope ~= nil and need_string(b.scope, "scope") or "ZohoCRM.modules.ALL",
    expires_in = opt_number(b.expires_in, "expires_in", 3600),
    quirk_ms = b.quirk_ms == true,
  }
  assert(dict:set("client|" .. client.client_id, encode(client)))
  return ok_response()
end

-- A big control call (seeding 500k ids) leaves as much garbage, and LuaJIT's
-- string table sized for it: a cache miss for every string an API request
-- makes, and a long sweep in every GC cycle. Each full collection halves the
-- table: collect until that frees little, now rather than during the requests.
local function collect_big_garbage()
  if collectgarbage("count") < 16 * 1024 then return end
  local before
  repeat
    before = collectgarbage("count")
    collectgarbage()
  until collectgarbage("count") > before - 64
end

local function control_handler(name)
  local method = ngx.req.get_method()
  local fn = control[method .. " " .. name]
  if not fn then
    if control["GET " .. name] or control["POST " .. name] then
      return bad(405, "method " .. method .. " not allowed on /__sim/" .. name)
    end
    return bad(404, "unknown control endpoint /__sim/" .. name)
  end
  local b = {}
  if method == "POST" then
    local err
    b, err = body_json()
    if not b then return bad(400, err) end
  end
  -- Validation errors are raised as {msg=...}; anything else is a bug.
  local ok, res = pcall(fn, b)
  collect_big_garbage()
  if ok then return res end
  if type(res) == "table" and res.msg then return bad(400, res.msg) end
  error(res, 0)
end

---------------------------------------------------------------------------

function M.handle()
  local uri = ngx.var.uri
  local name = uri:match("^/__sim/([%w_]+)$")
  if name then return send(control_handler(name)) end
  if uri:sub(1, 5) == "/crm/" then return serve("api", delink) end
  if uri == "/oauth/v2/token" then return serve("token", token_endpoint) end
  return serve(nil, function() return flat_error("INVALID_URL_PATTERN") end)
end

return M
