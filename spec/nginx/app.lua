-- The test application inside nginx (spec/nginx/app.conf.in): one zcrm client per
-- worker, sharing its access token through the shared dict zcrm_tokens, delinking
-- from content_by_lua, access_by_lua and ngx.timer.at; plus a blocking baseline
-- that calls the C core's session directly on the event loop.
--
-- Configured from init_by_lua with the table spec/support/app.lua writes into the
-- configuration:
--   sim_url, client_id, client_secret, refresh_token: the simulator and its OAuth client
--   refresh = "oauth" | "fail_first" | "hang_first"
--   fail_delay: seconds the first refresh waits before raising (fail_first)
--   hang_seconds: seconds the first refresh sleeps before returning nothing (hang_first)
--   lock_timeout, shared_key, thread_pool, timeout: passed to zcrm.new when set
--   client_in = "lazy" (first request of the worker) | "init_worker"
--   warm, max_threads: passed to zcrm.init_worker
--   static_token: the token /delink-blocking sends

local cjson = require "cjson"
local zcrm = require "zcrm"

local M = {}

local cfg          -- from init()
local client       -- this worker's zcrm client
local blocking     -- this worker's blocking C session (/delink-blocking)
local state = ngx.shared.app_state

---------------------------------------------------------------------------
-- JSON. Debian's lua-cjson has no empty_array: an empty results list is
-- marked and patched to [].

local EMPTY = "@@app_empty_array@@"

local function encode(v)
  return (cjson.encode(v):gsub('"' .. EMPTY .. '"', "[]"))
end

local function now()
  ngx.update_time()
  return ngx.now()
end

local function send_json(status, body)
  ngx.status = status
  ngx.header["Content-Type"] = "application/json"
  ngx.print(type(body) == "string" and body or encode(body))
end

---------------------------------------------------------------------------
-- The client.

-- The refresh callback: zcrm.oauth_refresh against the simulator, wrapped for
-- the "holder dies" modes so that the first call across the whole server (the
-- shared dict decides) raises or hangs, and every later call does the real grant.
local function make_refresh()
  local real = zcrm.oauth_refresh {
    client_id = cfg.client_id,
    client_secret = cfg.client_secret,
    refresh_token = cfg.refresh_token,
    accounts_url = cfg.sim_url,
  }
  if cfg.refresh == "oauth" then return real end
  return function()
    state:incr("refresh_calls", 1, 0)
    if state:add("first_refresh", now()) then
      state:set("first_refresh_worker", ngx.worker.pid())
      if cfg.refresh == "fail_first" then
        ngx.sleep(cfg.fail_delay or 0.5)
        state:set("first_refresh_done", now())
        error("app: the first refresh fails on purpose (fail_first)")
      elseif cfg.refresh == "hang_first" then
        ngx.sleep(cfg.hang_seconds or 10)
        state:set("first_refresh_done", now())
        return -- nothing
      end
    end
    state:incr("real_refresh_calls", 1, 0)
    return real()
  end
end

local function new_client()
  local opts = {
    refresh = make_refresh(),
    api_domain = cfg.sim_url,
    shared_dict = "zcrm_tokens",
  }
  for _, k in ipairs { "lock_timeout", "shared_key", "thread_pool", "timeout" } do
    if cfg[k] ~= nil then opts[k] = cfg[k] end
  end
  return zcrm.new(opts)
end

local function get_client()
  client = client or new_client()
  return client
end

function M.init(c)
  cfg = c
  if cfg.refresh ~= "oauth" and cfg.refresh ~= "fail_first" and cfg.refresh ~= "hang_first" then
    error("app: unknown refresh mode " .. tostring(cfg.refresh))
  end
end

function M.init_worker()
  zcrm.init_worker { warm = cfg.warm, max_threads = cfg.max_threads }
  if cfg.client_in == "init_worker" then client = new_client() end
end

---------------------------------------------------------------------------
-- Delinking. Every delink location answers
--   { succeeded=, failed=, results=[{id,status,code}], err=<code>|null, message=,
--     t_start=, t_end=, pid=, phase= }
-- with HTTP 200 whatever zcrm returned (500 only if zcrm raised).

local function split_ids(s)
  local ids = {}
  for id in (s or ""):gmatch("[^,]+") do ids[#ids + 1] = id end
  return ids
end

local function args()
  local a = ngx.req.get_uri_args()
  return a.module, a.record, a.related, split_ids(a.ids)
end

local function summary(phase, t_start, ok, res, err)
  local out = { phase = phase, t_start = t_start, t_end = now(), pid = ngx.worker.pid(),
                succeeded = 0, failed = 0, results = EMPTY, err = cjson.null, message = cjson.null }
  if not ok then
    -- zcrm raised: a bug in the library or in this app.
    out.err, out.message, out.raised = "RAISED", tostring(res), true
    return out
  end
  if res then
    out.succeeded, out.failed = res.succeeded, res.failed
    local results = {}
    for i, e in ipairs(res) do results[i] = { id = e.id, status = e.status, code = e.code } end
    if #results > 0 then out.results = results end
  end
  if err then
    out.err = err.code or tostring(err)
    out.message = tostring(err)
  end
  return out
end

local function run_delink(phase, module, record, related, ids)
  local t_start = now()
  local ok, res, err = pcall(function()
    local c = get_client()
    return c:delink(module, record, related, ids)
  end)
  return summary(phase, t_start, ok, res, err)
end

local function respond(out)
  send_json(out.raised and 500 or 200, out)
end

function M.content_delink()
  local module, record, related, ids = args()
  respond(run_delink("content", module, record, related, ids))
end

function M.access_delink()
  local module, record, related, ids = args()
  ngx.ctx.delink = run_delink("access", module, record, related, ids)
  ngx.req.set_header("X-Delinked-In", "access")
end

function M.print_access_result()
  local out = ngx.ctx.delink
  if not out then return send_json(500, { err = "NO_ACCESS_RESULT" }) end
  out.seen_in_content = ngx.req.get_headers()["X-Delinked-In"] == "access"
  respond(out)
end

-- Starts the delink in a timer; answers { key = } at once. /timer-result?key=
-- answers 202 until the timer has stored its result.
function M.timer_delink()
  local module, record, related, ids = args()
  local key = tostring(state:incr("timer_seq", 1, 0))
  local ok, terr = ngx.timer.at(0, function(premature)
    if premature then return end
    local out = run_delink("timer", module, record, related, ids)
    state:set("timer|" .. key, encode(out))
  end)
  if not ok then return send_json(500, { err = "TIMER", message = tostring(terr) }) end
  send_json(200, { key = key })
end

function M.timer_result()
  local key = ngx.req.get_uri_args().key
  local v = key and state:get("timer|" .. key)
  if not v then return send_json(202, { pending = true }) end
  send_json(200, v)
end

-- Two baselines for the design choice, sending the same DELETE without the thread pool:
--  * blocking: the C core's plain session, which blocks this worker's event loop for
--    the whole exchange;
--  * cosocket: a minimal HTTP/1.1 client on ngx.socket.tcp (plain http, Content-Length
--    bodies, keep-alive pool): what a cosocket transport would do. A prototype for
--    measurement only (no TLS, no chunked bodies, no redirect or size checks).

local function cosocket_delete(url, token)
  local host, port, path = url:match("^http://([^:/]+):(%d+)(/.*)$")
  local sock = ngx.socket.tcp()
  sock:settimeout(60000)
  local ok, err = sock:connect(host, tonumber(port))
  if not ok then return nil, "TRANSPORT_ERROR", err end
  local sent, serr = sock:send("DELETE " .. path .. " HTTP/1.1\r\nHost: " .. host .. ":" .. port ..
    "\r\nAuthorization: Zoho-oauthtoken " .. token .. "\r\n\r\n")
  if not sent then return nil, "TRANSPORT_ERROR", serr end
  local line, lerr = sock:receive("*l")
  if not line then return nil, "TRANSPORT_ERROR", lerr end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  local length = 0
  while true do
    local h = sock:receive("*l")
    if not h then return nil, "TRANSPORT_ERROR", "headers cut" end
    if h == "" then break end
    local n = h:lower():match("^content%-length:%s*(%d+)")
    if n then length = tonumber(n) end
  end
  local body, berr = sock:receive(length)
  if not body then return nil, "TRANSPORT_ERROR", berr end
  sock:setkeepalive(60000, 100)
  return status, body
end

local function direct_delete(kind, url, token)
  if kind == "cosocket" then return cosocket_delete(url, token) end
  blocking = blocking or require("zcrm.core").session { timeout = 60 }
  return blocking:request("DELETE", url, token)
end

local function raw_delink(kind)
  local module, record, related, ids = args()
  local t_start = now()
  if not cfg.static_token then return send_json(500, { err = "NO_STATIC_TOKEN" }) end
  local url = cfg.sim_url .. "/crm/v2.1/" .. module .. "/" .. record .. "/" .. related
  if #ids == 1 then url = url .. "/" .. ids[1] else url = url .. "?ids=" .. table.concat(ids, ",") end
  local status, body, why = direct_delete(kind, url, cfg.static_token)
  local out = { phase = kind, t_start = t_start, t_end = now(), pid = ngx.worker.pid(),
                succeeded = 0, failed = 0, results = EMPTY, err = cjson.null, message = cjson.null }
  if not status then
    out.err, out.message, out.failed = body, why, #ids
    return send_json(200, out)
  end
  local ok, doc = pcall(cjson.decode, body)
  local results = {}
  for i, e in ipairs(ok and type(doc) == "table" and type(doc.data) == "table" and doc.data or {}) do
    local id = type(e.details) == "table" and e.details.id or ids[i]
    results[i] = { id = id, status = e.status, code = e.code }
    if e.status == "success" then
      out.succeeded = out.succeeded + 1
    else
      out.failed = out.failed + 1
      if out.err == cjson.null then out.err = e.code end
    end
  end
  if #results > 0 then
    out.results = results
  else
    out.failed = #ids
    out.err = ok and type(doc) == "table" and doc.code or "BAD_RESPONSE"
  end
  out.http_status = status
  send_json(200, out)
end

function M.blocking_delink() raw_delink("blocking") end
function M.cosocket_delink() raw_delink("cosocket") end

-- CPU seconds this worker process has used (all its threads, the pool's included).
local function cpu_seconds()
  local f = io.open("/proc/self/stat")
  local stat = f:read("*a")
  f:close()
  local fields = {}
  for v in stat:match("%) (.*)$"):gmatch("%S+") do fields[#fields + 1] = v end
  return (tonumber(fields[12]) + tonumber(fields[13])) / 100 -- utime + stime, in clock ticks
end

-- GET /bench-loop?kind=pool|cosocket&n=&c=: n one-id DELETEs from c light threads in this
-- worker, through zcrm (thread pool) or the cosocket prototype; wall and CPU time.
function M.bench_loop()
  local a = ngx.req.get_uri_args()
  local kind, n, c = a.kind, tonumber(a.n), tonumber(a.c)
  local url = cfg.sim_url .. "/crm/v2.1/Products/" .. a.record .. "/Price_Books/"
  local zc = get_client()
  local t0, cpu0 = now(), cpu_seconds()
  local threads = {}
  for t = 1, c do
    threads[t] = ngx.thread.spawn(function()
      local ok = 0
      for i = t, n, c do
        local id = string.format("3477061%012d", i)
        if kind == "pool" then
          local res = zc:delink("Products", a.record, "Price_Books", id)
          if res and res.succeeded == 1 then ok = ok + 1 end
        else
          local status, body = cosocket_delete(url .. id, cfg.static_token)
          if status == 200 and body:find('"SUCCESS"', 1, true) then ok = ok + 1 end
        end
      end
      return ok
    end)
  end
  local ok = 0
  for t = 1, c do
    local _, k = ngx.thread.wait(threads[t])
    ok = ok + (k or 0)
  end
  send_json(200, { kind = kind, n = n, ok = ok, wall = now() - t0, cpu = cpu_seconds() - cpu0 })
end

-- The app's bookkeeping, for the specs.
function M.state()
  local out = { pid = ngx.worker.pid() }
  for _, k in ipairs { "refresh_calls", "real_refresh_calls", "first_refresh", "first_refresh_done",
                       "first_refresh_worker" } do
    out[k] = state:get(k)
  end
  send_json(200, out)
end

return M
