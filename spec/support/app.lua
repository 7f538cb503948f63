-- Launcher and client for the zcrm application nginx (spec/nginx/): an nginx with
-- zcrm loaded from this working tree (lua/ and build/5.1/zcrm/core.so), one client
-- per worker sharing its token through a shared dict, talking to the simulator.
-- Runs under lua5.4 and LuaJIT alike (the nginx side is always LuaJIT).
--
--   local app = require("spec.support.app").start {
--     sim = sim,                   -- a started simulator (required)
--     workers = 1,                 -- nginx worker processes
--     refresh = "oauth",           -- "oauth" | "fail_first" | "hang_first"
--     lock_timeout = 2,            -- zcrm.new's lock_timeout (seconds)
--     fail_delay = 0.5,            -- fail_first: the first refresh raises after this long
--     hang_seconds = 6,            -- hang_first: the first refresh sleeps this long, returns nothing
--     client_in = "lazy",          -- or "init_worker": where each worker creates its client
--     static_token = nil,          -- token of /delink-blocking (register it in the simulator)
--     threads = 16,                -- thread_pool zcrm threads=
--     log_level = "info",          -- error_log level
--     oauth = app.OAUTH,           -- the OAuth client (register it: sim:oauth_client(app.OAUTH))
--   }
--   app.url, app:stop(), app:error_log(), app:error_lines()
--   app:delink("content" | "access" | "blocking", module, record, related, ids) -> status, json
--   app:timer_delink(module, record, related, ids) -> json (polls /timer-result)
--   app:parallel(paths, max) -> job; job:wait(timeout) -> { {path=, status=, json=, time=}, ... }
--   app:pings(n, interval) -> { ms..., starts=, ends=, errors= } (open-loop when interval > 0)

local socket = require "socket"
local cjson = require "cjson"
local nginx = require "spec.support.nginx"

local q = nginx.q

local M = {}

M.OAUTH = { client_id = "app-client", client_secret = "app-secret", refresh_token = "app-refresh" }

M.CORE = nginx.repo_dir .. "/build/5.1/zcrm/core.so"

local App = setmetatable({}, { __index = nginx.Server })
App.__index = App

---------------------------------------------------------------------------

-- The LuaJIT-ABI core must be built: nginx's Lua is LuaJIT whatever runs busted.
function M.check_core()
  if not nginx.read_file(M.CORE) then
    return nil, M.CORE .. " is missing: nginx's Lua is LuaJIT, so the app needs the Lua 5.1/LuaJIT build."
      .. " Run `make LUA=luajit` first."
  end
  local newer = nginx.capture(nginx.clean("find " .. q(nginx.repo_dir .. "/csrc") .. " -newer " .. q(M.CORE)
    .. " -type f 2>/dev/null"))
  if newer:match("%S") then
    return nil, M.CORE .. " is older than " .. newer:gsub("%s+$", ""):gsub("\n", ", ")
      .. ": run `make LUA=luajit` first."
  end
  return true
end

-- A Lua table constructor for flat tables of strings, numbers and booleans.
local function lua_literal(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = t[k]
    local s
    if type(v) == "string" then
      s = string.format("%q", v):gsub("\\\n", "\\n")
    elseif type(v) == "number" then
      s = string.format("%.17g", v)
    elseif type(v) == "boolean" then
      s = tostring(v)
    else
      error("app: config value " .. k .. " must be a string, number or boolean")
    end
    parts[#parts + 1] = k .. " = " .. s
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

function M.start(opts)
  opts = opts or {}
  assert(opts.sim and opts.sim.url, "app.start: sim (a started simulator) is required")
  local ok, why = M.check_core()
  if not ok then error(why, 2) end
  local oauth = opts.oauth or M.OAUTH
  local config = {
    sim_url = opts.sim.url,
    client_id = oauth.client_id,
    client_secret = oauth.client_secret,
    refresh_token = oauth.refresh_token,
    refresh = opts.refresh or "oauth",
    fail_delay = opts.fail_delay,
    hang_seconds = opts.hang_seconds,
    lock_timeout = opts.lock_timeout,
    shared_key = opts.shared_key,
    thread_pool = opts.thread_pool,
    timeout = opts.timeout,
    client_in = opts.client_in or "lazy",
    warm = opts.warm,
    max_threads = opts.max_threads,
    static_token = opts.static_token,
  }
  local dir = nginx.spec_dir .. "/nginx"
  local app = nginx.start {
    what = "zcrm app server",
    name = "zcrm-app",
    template = dir .. "/app.conf.in",
    values = {
      APP_DIR = dir,
      REPO_DIR = nginx.repo_dir,
      THREADS = tostring(opts.threads or 16),
      LOG_LEVEL = opts.log_level or "info",
      APP_CONFIG = lua_literal(config),
    },
    ready_path = "/ping",
    workers = opts.workers,
    port = opts.port,
    timeout = opts.timeout_start,
    quit_timeout = opts.quit_timeout,
    class = App,
    error_level = 2,
  }
  app.sim = opts.sim
  app.workers = opts.workers or 1
  return app
end

---------------------------------------------------------------------------
-- Requests.

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

local LOCATIONS = { content = "/delink", access = "/access-delink", timer = "/timer-delink",
                    blocking = "/delink-blocking", cosocket = "/delink-cosocket" }

-- The path of a delink request: kind is "content", "access", "timer", "blocking" or "cosocket".
function M.delink_path(kind, module, record, related, ids)
  if type(ids) ~= "table" then ids = { ids } end
  local loc = assert(LOCATIONS[kind], "app: unknown delink kind " .. tostring(kind))
  return loc .. "?module=" .. urlencode(module) .. "&record=" .. urlencode(record) .. "&related="
    .. urlencode(related) .. "&ids=" .. urlencode(table.concat(ids, ","))
end

-- GET path: status, body, decoded JSON (or nil).
function App:get(path, timeout)
  local status, body = nginx.request("GET", self.url .. path, nil, { timeout = timeout or 30 })
  if not status then return nil, body end
  local ok, json = pcall(cjson.decode, body)
  return status, body, ok and json or nil
end

function App:delink(kind, module, record, related, ids)
  local status, body, json = self:get(M.delink_path(kind, module, record, related, ids))
  return status, json or body
end

function App:state()
  local status, body, json = self:get("/state")
  assert(status == 200 and json, "app: /state -> " .. tostring(status) .. " " .. tostring(body))
  return json
end

-- Delinks in an ngx.timer.at callback and polls until the timer stored its result.
function App:timer_delink(module, record, related, ids, timeout)
  local status, body, json = self:get(M.delink_path("timer", module, record, related, ids))
  assert(status == 200 and json and json.key, "app: /timer-delink -> " .. tostring(status) .. " " .. tostring(body))
  local t0 = socket.gettime()
  while socket.gettime() - t0 < (timeout or 30) do
    local s, b, j = self:get("/timer-result?key=" .. json.key)
    if s == 200 then return j or b end
    assert(s == 202, "app: /timer-result -> " .. tostring(s) .. " " .. tostring(b))
    socket.sleep(0.02)
  end
  error("app: the timer's delink did not finish within " .. (timeout or 30) .. " s", 2)
end

---------------------------------------------------------------------------
-- Concurrent requests from a background curl (--parallel), so that they are in
-- flight while this process does something else.

local Job = {}
Job.__index = Job

local job_seq = 0

-- Starts GETs of every path, at most `max` at a time. Returns a job at once.
function App:parallel(paths, max)
  job_seq = job_seq + 1
  local dir = self.prefix .. "/parallel-" .. job_seq
  assert(nginx.run(nginx.clean("mkdir -p " .. q(dir .. "/out"))))
  local cfg = {}
  for i, path in ipairs(paths) do
    cfg[#cfg + 1] = 'url = "' .. self.url .. path .. '"'
    cfg[#cfg + 1] = 'output = "' .. dir .. "/out/" .. i .. '"'
  end
  nginx.write_file(dir .. "/curl.cfg", table.concat(cfg, "\n") .. "\n")
  local curl = "curl --silent --show-error --parallel --parallel-immediate --parallel-max " .. (max or #paths)
    .. " --max-time 120 --config " .. q(dir .. "/curl.cfg")
    .. " --write-out " .. q("%{filename_effective} %{http_code} %{time_total}\\n")
  local script = curl .. " >" .. q(dir .. "/written") .. " 2>" .. q(dir .. "/stderr") .. " & echo $! >"
    .. q(dir .. "/pid") .. "; wait $!; echo $? >" .. q(dir .. "/rc")
  local t0 = socket.gettime()
  assert(nginx.run(nginx.CLEAN_ENV .. "sh -c " .. q(script) .. " </dev/null >/dev/null 2>&1 &"))
  return setmetatable({ dir = dir, paths = paths, t0 = t0 }, Job)
end

-- Waits for the curl to end (killing it after timeout seconds). Returns one
-- entry per path, in order: { path=, status=, body=, json=, time= }, and the
-- job's wall time in seconds.
function Job:wait(timeout)
  local deadline = self.t0 + (timeout or 60)
  local rc = nginx.read_file(self.dir .. "/rc")
  while not rc and socket.gettime() < deadline do
    socket.sleep(0.01)
    rc = nginx.read_file(self.dir .. "/rc")
  end
  if not rc then
    local pid = tonumber(nginx.read_file(self.dir .. "/pid") or "")
    if pid then nginx.run("kill -KILL " .. pid .. " 2>/dev/null") end
    error("app: the parallel curl did not finish within " .. (timeout or 60) .. " s", 2)
  end
  self.wall = socket.gettime() - self.t0
  self.rc = tonumber(rc)
  self.stderr = nginx.read_file(self.dir .. "/stderr") or ""
  if self.rc == 127 or self.rc == 2 then
    error("app: curl failed to run (exit status " .. self.rc .. "; is the curl package installed?): " .. self.stderr, 2)
  end
  local meta = {}
  for file, code, time in (nginx.read_file(self.dir .. "/written") or ""):gmatch("(%S+) (%d+) (%S+)\n") do
    meta[file] = { status = tonumber(code), time = tonumber(time) }
  end
  local out = {}
  for i, path in ipairs(self.paths) do
    local file = self.dir .. "/out/" .. i
    local body = nginx.read_file(file)
    local ok, json = pcall(cjson.decode, body or "")
    local m = meta[file] or {}
    out[i] = { path = path, status = m.status, time = m.time, body = body, json = ok and json or nil }
  end
  return out, self.wall
end

---------------------------------------------------------------------------
-- Latency of the unrelated location: n GET /ping, each on a new connection.
--
-- With interval > 0 the pings are open-loop: ping i is sent at t0 + (i-1)*interval
-- whether or not the earlier ones have been answered (non-blocking sockets and
-- select), so a worker whose event loop is blocked for 500 ms delays every ping sent
-- meanwhile, not just the one in progress (no "coordinated omission"). Each latency
-- runs from the moment that ping's connect began to its complete answer.
-- With interval 0 (or nil) they are sent one after the other.
--
-- Returns the latencies in ms, in sending order, with fields starts, ends
-- (socket.gettime() of each ping) and errors (a list of messages).

local PING = "GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"

local function ping_ok(resp)
  return resp and resp:match("^HTTP/1%.1 200 ") and resp:match("\r\n\r\npong$")
end

function App:pings(n, interval, timeout)
  local out = { starts = {}, ends = {}, errors = {} }
  timeout = timeout or 30
  if not interval or interval <= 0 then
    for i = 1, n do
      local t0 = socket.gettime()
      local s = socket.tcp()
      s:settimeout(timeout)
      local ok, err = s:connect("127.0.0.1", self.port)
      local resp
      if ok then
        ok, err = s:send(PING)
        if ok then resp, err = s:receive("*a") end
      end
      s:close()
      local t1 = socket.gettime()
      if not ping_ok(resp) then out.errors[#out.errors + 1] = "ping " .. i .. ": " .. tostring(err or resp) end
      out[i], out.starts[i], out.ends[i] = (t1 - t0) * 1000, t0, t1
    end
    return out
  end

  local t0 = socket.gettime()
  local pending = {}   -- socket -> { i=, buf={}, sent= }
  local writers, readers = {}, {}
  local function remove(list, s)
    for k = #list, 1, -1 do if list[k] == s then table.remove(list, k) end end
  end
  local function finish(s, p, resp, err)
    local t1 = socket.gettime()
    remove(writers, s)
    remove(readers, s)
    pending[s] = nil
    s:close()
    if not ping_ok(resp) then out.errors[#out.errors + 1] = "ping " .. p.i .. ": " .. tostring(err or resp) end
    out[p.i], out.ends[p.i] = (t1 - out.starts[p.i]) * 1000, t1
  end
  local function send(s, p)
    local ok, err = s:send(PING)
    if not ok then return finish(s, p, nil, err) end
    readers[#readers + 1] = s
  end
  local next_i = 1
  local deadline = t0 + (n - 1) * interval + timeout
  while (next_i <= n or next(pending)) and socket.gettime() < deadline do
    -- Send every ping that is due.
    while next_i <= n and socket.gettime() >= t0 + (next_i - 1) * interval do
      local s = socket.tcp()
      s:settimeout(0)
      local p = { i = next_i, buf = {} }
      out.starts[next_i] = socket.gettime()
      next_i = next_i + 1
      pending[s] = p
      local ok, err = s:connect("127.0.0.1", self.port)
      if ok then
        send(s, p)
      elseif err == "timeout" or err == "Operation already in progress" then
        writers[#writers + 1] = s
      else
        finish(s, p, nil, err)
      end
    end
    local wait = 0.05
    if next_i <= n then wait = math.max(0, t0 + (next_i - 1) * interval - socket.gettime()) end
    local r, w = socket.select(readers, writers, wait)
    for _, s in ipairs(w or {}) do
      local p = pending[s]
      if p then
        remove(writers, s)
        send(s, p)
      end
    end
    for _, s in ipairs(r or {}) do
      local p = pending[s]
      if p then
        local data, err, partial = s:receive("*a")
        if data then
          p.buf[#p.buf + 1] = data
          finish(s, p, table.concat(p.buf))
        elseif err == "timeout" then
          p.buf[#p.buf + 1] = partial
        else
          p.buf[#p.buf + 1] = partial
          finish(s, p, table.concat(p.buf), err)
        end
      end
    end
  end
  for s, p in pairs(pending) do finish(s, p, nil, "no answer within " .. timeout .. " s") end
  return out
end

-- Nearest-rank percentile of a list of numbers (p in 0..100).
function M.percentile(list, p)
  local sorted = {}
  for i, v in ipairs(list) do sorted[i] = v end
  table.sort(sorted)
  if #sorted == 0 then return nil end
  local rank = math.max(1, math.ceil(p / 100 * #sorted))
  return sorted[rank]
end

return M
