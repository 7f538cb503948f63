-- Starting and stopping private nginx servers for the specs: the Zoho CRM
-- simulator (spec/support/simulator.lua) and the zcrm application server
-- (spec/support/app.lua) are both one of these. Runs under lua5.4 and LuaJIT
-- alike, so it sticks to the common subset.
--
--   local nginx = require "spec.support.nginx"
--   local srv = nginx.start {
--     what = "my server",                 -- for error messages
--     name = "my-srv",                    -- private prefix: $TMPDIR/my-srv.XXXXXX
--     template = "/abs/path/nginx.conf.in",
--     values = { LUA_DIR = "..." },       -- extra @PLACEHOLDERS@ (or function(srv) -> table)
--     ready_path = "/ping",               -- a GET answering 200 once nginx is up
--     workers = 1, port = nil, timeout = 5,
--     class = MyClass,                    -- metatable of the returned object (inherit nginx.Server)
--     error_level = 1,                    -- error() level for "did not start", as seen from the caller
--   }
--   srv.url, srv.port, srv.prefix, srv.pid; srv:error_log(); srv:stop()
--
-- Every template gets @USER_DIRECTIVE@ (`user root;` when run as root, so the
-- workers can read the 0700 prefix), @WORKERS@, @PREFIX@ and @PORT@.
-- ZCRM_SIM_NGINX names another nginx binary; ZCRM_SIM_KEEP=1 keeps the
-- prefixes (configuration, logs) after stop.

local socket = require "socket"
local http = require "socket.http"
local ltn12 = require "ltn12"

local M = {}

---------------------------------------------------------------------------
-- Shell helpers. Sanitizer test runs set LD_PRELOAD=libasan for us; programs
-- that inherit it misbehave (ps deadlocks, mktemp aborts on a "leak"), so
-- every program is started through `env -u` and /proc is read instead of
-- spawning where possible.

M.CLEAN_ENV = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LSAN_OPTIONS "

-- A shell word.
function M.q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
local q = M.q

-- A command run without the sanitizer environment.
function M.clean(cmd)
  return "exec " .. M.CLEAN_ENV .. cmd
end
local clean = M.clean

-- os.execute returns a status number in LuaJIT and true/nil in Lua 5.2+.
function M.run(cmd)
  local a = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true
end
local run = M.run

function M.capture(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  p:close()
  return out
end
local capture = M.capture

function M.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end
local read_file = M.read_file

function M.write_file(path, text)
  local f = assert(io.open(path, "wb"))
  assert(f:write(text))
  f:close()
end
local write_file = M.write_file

-- Absolute path of spec/, found from this file's own location so that it works
-- whatever the current directory or the way it was loaded.
local function find_spec_dir()
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
  return (support:gsub("/support$", ""))
end

M.spec_dir = find_spec_dir()                       -- <repo>/spec
M.repo_dir = M.spec_dir:match("^(.*)/[^/]*$")      -- <repo>

function M.nginx_binary()
  local env = os.getenv("ZCRM_SIM_NGINX")
  if env and env ~= "" then return env end
  if read_file("/usr/sbin/nginx") then return "/usr/sbin/nginx" end
  return "nginx"
end

-- A zombie (exited, not yet reaped) counts as gone.
function M.alive(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return false end
  return stat:match("^%d+ %b() (%a)") ~= "Z"
end
local alive = M.alive

-- The nginx workers (children of the master), from /proc; {} if unknown.
function M.children(pid)
  local pids = {}
  for p in (read_file("/proc/" .. pid .. "/task/" .. pid .. "/children") or ""):gmatch("%d+") do
    pids[#pids + 1] = p
  end
  return pids
end

function M.running_as_root()
  local status = read_file("/proc/self/status")
  local uid = status and status:match("\nUid:%s*(%d+)")
  if not uid then uid = capture(clean("id -u")):match("%d+") end
  return uid == "0"
end

function M.free_port()
  local s = assert(socket.bind("127.0.0.1", 0))
  local _, port = s:getsockname()
  s:close()
  return tonumber(port)
end

-- A fresh private directory $TMPDIR/<name>.XXXXXX.
function M.mktemp(name)
  local tmp = os.getenv("TMPDIR")
  if not tmp or tmp == "" then tmp = "/tmp" end
  local dir = capture(clean("mktemp -d " .. q(tmp .. "/" .. name .. ".XXXXXX"))):gsub("%s+$", "")
  assert(dir:match("/" .. M.pattern_escape(name) .. "%.%w+$"), name .. ": mktemp failed")
  return dir
end

function M.pattern_escape(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

---------------------------------------------------------------------------
-- HTTP (LuaSocket). Returns status, body, headers; or nil, error message.

function M.request(method, url, body, opts)
  opts = opts or {}
  local chunks = {}
  local headers = {}
  for k, v in pairs(opts.headers or {}) do headers[k:lower()] = v end
  local source
  if body then
    headers["content-type"] = headers["content-type"] or "application/json"
    headers["content-length"] = tostring(#body)
    source = ltn12.source.string(body)
  end
  local timeout = opts.timeout or 10
  local ok, status, res_headers = http.request {
    url = url,
    method = method,
    headers = headers,
    source = source,
    sink = ltn12.sink.table(chunks),
    create = function()
      local s = socket.tcp()
      s:settimeout(timeout)
      return s
    end,
  }
  if not ok then return nil, status end
  return status, table.concat(chunks), res_headers
end
local request = M.request

---------------------------------------------------------------------------
-- A running server.

local Server = {}
Server.__index = Server
M.Server = Server

function Server:error_log()
  return read_file(self.prefix .. "/error.log") or ""
end

-- Lines of the error log at level error or worse ([error], [crit], [alert], [emerg]).
function Server:error_lines()
  local out = {}
  for line in self:error_log():gmatch("[^\n]+") do
    if line:match("%[error%]") or line:match("%[crit%]") or line:match("%[alert%]") or line:match("%[emerg%]") then
      out[#out + 1] = line
    end
  end
  return out
end

-- Stops nginx (QUIT, then KILL of master and workers if the graceful quit
-- hangs) and removes the prefix unless ZCRM_SIM_KEEP is set. Idempotent.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  local pid = self.pid or tonumber(read_file(self.prefix .. "/nginx.pid") or "")
  if pid and alive(pid) then
    run("kill -QUIT " .. pid .. " 2>/dev/null")
    local t0 = socket.gettime()
    while alive(pid) and socket.gettime() - t0 < (self.quit_timeout or 5) do socket.sleep(0.01) end
    if alive(pid) then
      -- Graceful quit hung: kill the workers and the master by their ids.
      run("kill -KILL " .. table.concat(M.children(pid), " ") .. " " .. pid .. " 2>/dev/null")
      while alive(pid) and socket.gettime() - t0 < (self.quit_timeout or 5) + 2 do socket.sleep(0.01) end
    end
  end
  local keep = os.getenv("ZCRM_SIM_KEEP")
  if not (keep and keep ~= "") and self.prefix:match("/" .. M.pattern_escape(self.name) .. "%.%w+$") then
    run(clean("rm -rf " .. q(self.prefix)))
  end
end

---------------------------------------------------------------------------
-- Start.

local function try_start(opts, port)
  local name = assert(opts.name, "nginx.start: name is required")
  local prefix = M.mktemp(name)
  local srv = setmetatable({
    url = "http://127.0.0.1:" .. port,
    port = port,
    prefix = prefix,
    name = name,
    quit_timeout = opts.quit_timeout,
  }, opts.class or Server)

  local template = assert(read_file(opts.template), opts.what .. ": cannot read " .. tostring(opts.template))
  local values = {
    USER_DIRECTIVE = M.running_as_root() and "user root;" or "",
    WORKERS = tostring(math.floor(opts.workers or 1)),
    PREFIX = prefix,
    PORT = tostring(port),
  }
  local extra = opts.values
  if type(extra) == "function" then extra = extra(srv) end
  for k, v in pairs(extra or {}) do values[k] = tostring(v) end
  local missing
  local conf = template:gsub("@([%u_]+)@", function(k)
    if values[k] == nil then missing = missing or k end
    return values[k]
  end)
  if missing then error(opts.what .. ": no value for @" .. missing .. "@ in " .. opts.template, 0) end
  write_file(prefix .. "/nginx.conf", conf)

  -- nginx must not inherit the sanitizer runtime either; opts.env adds variables.
  local env = ""
  for k, v in pairs(opts.env or {}) do env = env .. k .. "=" .. q(v) .. " " end
  local started = run(clean(env .. q(M.nginx_binary()) .. " -p " .. q(prefix) .. " -c " .. q(prefix .. "/nginx.conf")
    .. " -e " .. q(prefix .. "/error.log") .. " </dev/null >/dev/null 2>>" .. q(prefix .. "/startup.log")))
  return srv, started
end

function M.start(opts)
  local what = opts.what or opts.name
  opts.what = what
  local deadline_s = opts.timeout or 5
  local last_err
  for _ = 1, (opts.port and 1 or 5) do
    local srv, started = try_start(opts, opts.port or M.free_port())
    if started then
      local t0 = socket.gettime()
      while socket.gettime() - t0 < deadline_s do
        srv.pid = srv.pid or tonumber(read_file(srv.prefix .. "/nginx.pid") or "")
        if srv.pid then
          local status = request("GET", srv.url .. opts.ready_path)
          if status == 200 then return srv end
        end
        socket.sleep(0.01)
      end
    end
    local log = (read_file(srv.prefix .. "/startup.log") or "") .. srv:error_log()
    last_err = what .. " did not start on port " .. srv.port .. ":\n" .. log
    srv:stop()
    -- Another process may have taken the free port in the meantime: retry.
    if not log:find("Address already in use", 1, true) then break end
  end
  error(last_err, (opts.error_level or 1) + 1)
end

return M
