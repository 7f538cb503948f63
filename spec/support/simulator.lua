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
local cjson = require "cjson"

-- The nginx process handling shared with spec/support/app.lua. Found next to
-- this file when the repository root is not on package.path (script mode run
-- from another directory).
local function load_nginx()
  local ok, mod = pcall(require, "spec.support.nginx")
  if ok then return mod end
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  local dir = src:match("^(.*)/[^/]*$") or "."
  mod = dofile(dir .. "/nginx.lua")
  package.loaded["spec.support.nginx"] = mod
  return mod
end
local nginx = load_nginx()

local simulator = {}

local Sim = setmetatable({}, { __index = nginx.Server })
Sim.__index = Sim

local CONTROL_TIMEOUT = 10 -- seconds, per control call

---------------------------------------------------------------------------
-- HTTP.

-- cjson encodes an empty Lua table as {}; the simulator takes that for an
-- empty array too, so nothing special is needed here.
function Sim:_call(method, path, payload)
  local body = payload and cjson.encode(payload)
  local status, text = nginx.request(method, self.url .. "/__sim/" .. path, body, { timeout = CONTROL_TIMEOUT })
  local where = "zoho simulator: " .. method .. " /__sim/" .. path
  if not status then error(where .. " failed: " .. tostring(text), 3) end
  local ok, data = pcall(cjson.decode, text)
  if status ~= 200 or not ok then
    error(where .. " -> HTTP " .. tostring(status) .. ": " .. tostring(text), 3)
  end
  return data
end

---------------------------------------------------------------------------
-- Start and stop (spec/support/nginx.lua): sim.url, sim.port, sim.prefix,
-- sim.pid, sim:error_log(), sim:stop().

function simulator.start(opts)
  opts = opts or {}
  local dir = nginx.spec_dir .. "/simulator"
  local sim = nginx.start {
    what = "zoho simulator",
    name = "zoho-sim",
    template = dir .. "/nginx.conf.in",
    values = { LUA_DIR = dir },
    ready_path = "/__sim/ping",
    workers = opts.workers,
    port = opts.port,
    timeout = opts.timeout,
    class = Sim,
    error_level = 2,
  }
  return sim -- not a tail call: error_level counts this frame
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

-- Every access token registered so far (add_token or granted) expires now: the
-- next API call with it gets 401 INVALID_TOKEN. Returns how many there were.
function Sim:expire_tokens()
  return self:_call("POST", "expire_tokens").expired
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
