-- Launcher and control client for the Zoho CRM simulator (spec/simulator/).
-- Runs under lua5.4 and LuaJIT alike, so it sticks to the common subset.
--
--   local simulator = require "spec.support.simulator"
--   local sim = simulator.start{ workers = 1 }
--   sim:seed("Products", "1", "Leads", { "11", "12" })
--   ... requests against sim.url ...
--   sim:stop()
--
-- As a script: lua5.4 spec/support/simulator.lua [--port N]

local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"
local cjson = require "cjson"

local simulator = {}

local Sim = {}
Sim.__index = Sim

local CONTROL_TIMEOUT = 10 -- seconds, per control call

---------------------------------------------------------------------------
-- Shell helpers. Sanitizer test runs set LD_PRELOAD=libasan for us; programs
-- that inherit it misbehave (ps deadlocks, mktemp aborts on a "leak"), so
-- every program is started through `env -u` and /proc is read instead of
-- spawning where possible.

local CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LSAN_OPTIONS "

local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function clean(cmd)
  return "exec " .. CLEAN_ENV .. cmd
end

-- os.execute returns a status number in LuaJIT and true/nil in Lua 5.2+.
local function run(cmd)
  local a = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true
end

local function capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end

-- Absolute path of spec/simulator, found from this file's own location so
-- that it works whatever the current directory or the way it was loaded.
local function simulator_dir()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  if src:sub(1, 1) ~= "/" then
    local cwd = os.getenv("PWD")
    if not (cwd and read_file(cwd .. "/" .. src)) then
      cwd = capture(clean("pwd")):gsub("%s+$", "")
    end
    src = cwd .. "/" .. src
  end
  src = src:gsub("/%./", "/")
  local support = src:match("^(.*)/[^/]*$")
  return (support:gsub("/support$", "") .. "/simulator")
end

local function nginx_binary()
  local env = os.getenv("ZCRM_SIM_NGINX")
  if env and env ~= "" then return env end
  if read_file("/usr/sbin/nginx") then return "/usr/sbin/nginx" end
  return "nginx"
end

-- A zombie (exited, not yet reaped) counts as gone.
local function alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- The nginx workers (children of the master), from /proc; {} if unknown.
local function children(pid)
  local pids = {}
  for p in (read_file("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""):gmatch("%d+") do
    pids[#pids + 1] = p
  end
  return pids
end

local function running_as_root()
  local status = read_file("/proc/self/status")
  local uid = status and status:match("\nUid:%s*(%d+)")
  if not uid then uid = capture(clean("id -u")):match("%d+") end
  return uid == "0"
end

local function free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

---------------------------------------------------------------------------
-- HTTP.

-- Returns status, body; or nil, error message.
local function request(method, url, body)
  local chunks = {}
  local headers = {}
  local source
  if body then
    headers["content-type"] = "application/json"
    headers["content-length"] = tostring(#body)
    source = ltn12.source.string(body)
  end
  local ok, status = http.request {
    url = url,
    method = method,
    headers = headers,
    source = source,
    sink = ltn12.sink.table(chunks),
    create = function()
      local s = socket.tcp()
      s:settimeout(CONTROL_TIMEOUT)
      return s
    end,
  }
  if not ok then return nil, status end
  return status, table.concat(chunks)
end

-- cjson encodes an empty Lua table as {}; the simulator takes that for an
-- empty array too, so nothing special is needed here.
function Sim:_call(method, path, payload)
  local body = payload and cjson.encode(payload)
  local status, text = request(method, self.url .. "/__sim/" .. path, body)
  local where = "zoho simulator: " .. method .. " /__sim/" .. path
  if not status then error(where .. " failed: " .. tostring(text), 3) end
  local ok, data = pcall(cjson.decode, text)
  if status ~= 200 or not ok then
    error(where .. " -> HTTP " .. tostring(status) .. ": " .. tostring(text), 3)
  end
  return data
end

---------------------------------------------------------------------------
-- Start and stop.

local function try_start(opts, port)
  local tmp = os.getenv("TMPDIR")
  if not tmp or tmp == "" then tmp = "/tmp" end
  local prefix = capture(clean("mktemp -d " .. q(tmp .. "/zoho-sim.XXXXXX"))):gsub("%s+$", "")
  assert(prefix:match("/zoho%-sim%.%w+$"), "zoho simulator: mktemp failed")

  local dir = simulator_dir()
  local template = assert(read_file(dir .. "/nginx.conf.in"), "zoho simulator: cannot read " .. dir .. "/nginx.conf.in")
  local values = {
    -- Workers started by root drop to nobody, who cannot read the 0700 prefix.
    USER_DIRECTIVE = running_as_root() and "user root;" or "",
    WORKERS = tostring(math.floor(opts.workers or 1)),
    PREFIX = prefix,
    PORT = tostring(port),
    LUA_DIR = dir,
  }
  local conf = template:gsub("@([%u_]+)@", function(k) return values[k] end)
  write_file(prefix .. "/nginx.conf", conf)

  -- nginx must not inherit the sanitizer runtime either.
  local started = run(clean(q(nginx_binary()) .. " -p " .. q(prefix) .. " -c " .. q(prefix .. "/nginx.conf")
    .. " -e " .. q(prefix .. "/error.log") .. " </dev/null >/dev/null 2>>" .. q(prefix .. "/startup.log")))
  local sim = setmetatable({
    url = "http://127.0.0.1:" .. port,
    port = port,
    prefix = prefix,
  }, Sim)
  return sim, started
end

function simulator.start(opts)
  opts = opts or {}
  local deadline_s = opts.timeout or 5
  local last_err
  for _ = 1, (opts.port and 1 or 5) do
    local sim, started = try_start(opts, opts.port or free_port())
    if started then
      local t0 = socket.gettime()
      while socket.gettime() - t0 < deadline_s do
        sim.pid = sim.pid or tonumber(read_file(sim.prefix .. "/nginx.pid") or "")
        if sim.pid then
          local status = request("GET", sim.url .. "/__sim/ping")
          if status == 200 then return sim end
        end
        socket.sleep(0.01)
      end
    end
    local log = (read_file(sim.prefix .. "/startup.log") or "") .. sim:error_log()
    last_err = "zoho simulator did not start on port " .. sim.port .. ":\n" .. log
    sim:stop()
    -- Another process may have taken the free port in the meantime: retry.
    if not log:find("Address already in use", 1, true) then break end
  end
  error(last_err, 2)
end

function Sim:error_log()
  return read_file(self.prefix .. "/error.log") or ""
end

function Sim:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self.pid or tonumber(read_file(self.prefix .. "/nginx.pid") or "")
  if pid and alive(pid) then
    run("kill -QUIT " .. pid .. " 2>/dev/null")
    local t0 = socket.gettime()
    while alive(pid) and socket.gettime() - t0 < 5 do socket.sleep(0.01) end
    if alive(pid) then
      -- Graceful quit hung: kill the workers and the master by their ids.
      run("kill -KILL " .. table.concat(children(pid), " ") .. " " .. pid .. " 2>/dev/null")
      while alive(pid) and socket.gettime() - t0 < 7 do socket.sleep(0.01) end
    end
  end
  local keep = os.getenv("ZCRM_SIM_KEEP")
  if not (keep and keep ~= "") and self.prefix:match("/zoho%-sim%.%w+$") then
    run(clean("rm -rf " .. q(self.prefix)))
  end
end

---------------------------------------------------------------------------
-- Control API.

local function id_string(v)
  if type(v) == "number" then return string.format("%.0f", v) end
  return tostring(v)
end

function Sim:reset()
  self:_call("POST", "reset")
end

function Sim:seed(module, record_id, related_list, ids)
  local list = {}
  for i, id in ipairs(ids or {}) do list[i] = id_string(id) end
  self:_call("POST", "seed", { module = module, record = id_string(record_id), related = related_list, ids = list })
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function Sim:relations(module, record_id, related_list)
  local data = self:_call("GET", "relations?module=" .. urlencode(module) .. "&record="
    .. urlencode(id_string(record_id)) .. "&related=" .. urlencode(related_list))
  return data.ids
end

function Sim:add_token(token, opts)
  opts = opts or {}
  self:_call("POST", "tokens", {
    token = token,
    expires_in = opts.expires_in,
    scope = opts.scope,
    no_permission = opts.no_permission,
    authorization_failed = opts.authorization_failed,
  })
end

function Sim:config(tbl)
  self:_call("POST", "config", tbl)
end

function Sim:inject(tbl)
  self:_call("POST", "inject", tbl)
end

function Sim:counters()
  return self:_call("GET", "counters")
end

-- JSON null (no Authorization header) becomes nil.
function Sim:log()
  local entries = self:_call("GET", "log")
  for _, e in ipairs(entries) do
    for k, v in pairs(e) do
      if v == cjson.null then e[k] = nil end
    end
  end
  return entries
end

function Sim:oauth_client(tbl)
  self:_call("POST", "oauth_clients", tbl)
end

---------------------------------------------------------------------------
-- Script mode: a simulator for humans to poke at with curl.

local function main(argv)
  local port
  for i = 1, #argv do
    if argv[i] == "--port" then port = tonumber(argv[i + 1]) end
  end
  local sim = simulator.start { port = port }
  sim:add_token("sim-token", { expires_in = 3600 })
  sim:oauth_client { client_id = "sim-client", client_secret = "sim-secret", refresh_token = "sim-refresh" }
  print("Zoho CRM simulator at " .. sim.url .. " (prefix " .. sim.prefix .. ")")
  print("  access token:  sim-token  (Authorization: Zoho-oauthtoken sim-token)")
  print("  OAuth client:  client_id=sim-client client_secret=sim-secret refresh_token=sim-refresh")
  print("  token URL:     " .. sim.url .. "/oauth/v2/token")
  print("Ctrl-C or end of input (Ctrl-D) stops it.")
  io.stdout:flush()
  -- Wait in short selects, not one blocking read: the interpreter turns
  -- Ctrl-C into an error only when Lua code runs, and a blocking read is
  -- restarted after the signal. Stop nginx whichever way the wait ends.
  local stdin = { getfd = function() return 0 end, dirty = function() return false end }
  pcall(function()
    while true do
      local readable = socket.select({ stdin }, nil, 0.25)
      if readable and readable[1] and io.read("*l") == nil then break end
    end
  end)
  sim:stop()
  print("stopped")
end

local first_vararg = ...
if arg and arg[0] and arg[0]:match("simulator%.lua$")
  and not (type(first_vararg) == "string" and first_vararg:match("simulator$")) then
  main(arg)
end

return simulator
