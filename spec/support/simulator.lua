-- Launcher and control client for the Zoho CRM simulator (spec/simulator/).
-- Runs under lua5.4 and LuaJIT alike, so it sticks to the common subset.
--
--   local simulator = require "spec.support.simulator"
--   local sim = simulator.start{ workers = 1 }
--   sim:seed("Products", "1", "Leads", { "11", "12" })
--   ... requests against sim.url ...
--   sim:stop()
--
-- simulator.start{ tls = true } serves the API over HTTPS (sim.url is
-- https://127.0.0.1:PORT) with a self-signed certificate made at start for
-- localhost and 127.0.0.1 (sim.ca_file, a PEM that is its own CA);
-- tls = { hosts = { "crm.example.com" } } makes it for other names instead.
-- The control calls then go to a plain-http listener, sim.control_url.
--
-- As a script: lua5.4 spec/support/simulator.lua [--port N] [--tls]

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
  local status, text = nginx.request(method, self.control_url .. "/__sim/" .. path, body,
    { timeout = CONTROL_TIMEOUT })
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
-- sim.pid, sim:error_log(), sim:stop(); sim.control_url; with tls, sim.ca_file.

local q = nginx.q

-- A self-signed certificate (its own CA) and its key in dir, for hosts: names
-- become DNS entries of subjectAltName, IPv4 addresses IP entries.
local function make_certificate(dir, hosts)
  local san = {}
  for i, h in ipairs(hosts) do
    san[i] = (h:match("^%d+%.%d+%.%d+%.%d+$") and "IP:" or "DNS:") .. h
  end
  local cert, key = dir .. "/cert.pem", dir .. "/key.pem"
  local cmd = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj " .. q("/CN=" .. hosts[1])
    .. " -addext " .. q("subjectAltName=" .. table.concat(san, ","))
    .. " -keyout " .. q(key) .. " -out " .. q(cert)
  local log = dir .. "/openssl.log"
  if not nginx.run(nginx.clean(cmd .. " >" .. q(log) .. " 2>&1")) then
    error("zoho simulator: openssl could not make a certificate: " .. (nginx.read_file(log) or ""), 0)
  end
  return cert, key
end

-- opts: workers, port, timeout; tls = true | { hosts = { name or IPv4, ... } }.
function simulator.start(opts)
  opts = opts or {}
  local dir = nginx.spec_dir .. "/simulator"
  local tls = opts.tls
  if tls and type(tls) ~= "table" then tls = {} end
  local sim = nginx.start {
    what = "zoho simulator",
    name = "zoho-sim",
    template = dir .. "/nginx.conf.in",
    values = function(srv)
      local values = { LUA_DIR = dir, TLS = "" }
      if tls then
        -- Each start attempt has its own prefix and its own second port.
        srv.tls_port = nginx.free_port()
        local cert, key = make_certificate(srv.prefix, tls.hosts or { "localhost", "127.0.0.1" })
        srv.ca_file = cert
        values.TLS = "listen 127.0.0.1:" .. srv.tls_port .. " ssl; ssl_certificate " .. cert
          .. "; ssl_certificate_key " .. key .. ";"
      end
      return values
    end,
    ready_path = "/__sim/ping",
    workers = opts.workers,
    port = opts.port,
    timeout = opts.timeout,
    class = Sim,
    error_level = 2,
  }
  sim.control_url = sim.url
  if tls then
    sim.port = sim.tls_port
    sim.url = "https://127.0.0.1:" .. sim.port
  end
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

-- The ids whose relation this simulator removed (a delink answered SUCCESS,
-- or applied and then dropped or truncated), sorted like relations(): compare
-- with the ids a client reported as success.
function Sim:removed(module, record_id, related_list)
  local data = self:_call("GET", "removed?module=" .. urlencode(module) .. "&record="
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

-- Faults for the next requests of a target (FIFO), see spec/simulator/zoho_sim.lua:
--   { code = "INTERNAL_ERROR" } or { status = 502, body = "<html>", content_type = "text/html" },
--   headers = { ["Retry-After"] = "2" }, count = 1, target = "api" | "token",
--   delay_ms = N (sleep first), action = "reset" | "drop_after_apply" | "truncate"
--   (size: body bytes sent) | "delay" (needs delay_ms) | "oversize" (needs size).
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

local function urldecode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

-- The related ids a delink URI carries (path form or ids=, repeated ids joined),
-- each once; {} for anything else. Also simulator.uri_ids, for specs reading the log.
local function uri_ids(uri)
  local path, query = uri:match("^([^?]*)%??(.*)$")
  local segs = {}
  for seg in (path:sub(2) .. "/"):gmatch("([^/]*)/") do segs[#segs + 1] = seg end
  local list = {}
  if segs[1] == "crm" and #segs == 6 then
    list[1] = urldecode(segs[6])
  elseif segs[1] == "crm" and #segs == 5 then
    for param in query:gmatch("[^&]+") do
      local v = param:match("^ids=(.*)$")
      if v then
        for id in (urldecode(v) .. ","):gmatch("([^,]*),") do
          if id ~= "" then list[#list + 1] = id end
        end
      end
    end
  end
  local seen, out = {}, {}
  for _, id in ipairs(list) do
    if not seen[id] then
      seen[id] = true
      out[#out + 1] = id
    end
  end
  return out
end

simulator.uri_ids = uri_ids

-- id -> how many API requests carried it (from the log, so faulted and refused
-- requests count too; a request still running is not logged yet).
function Sim:requests_per_id()
  local counts = {}
  for _, e in ipairs(self:log()) do
    if e.uri:sub(1, 5) == "/crm/" then
      for _, id in ipairs(uri_ids(e.uri)) do counts[id] = (counts[id] or 0) + 1 end
    end
  end
  return counts
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
  local port, tls
  for i = 1, #argv do
    if argv[i] == "--port" then port = tonumber(argv[i + 1]) end
    if argv[i] == "--tls" then tls = true end
  end
  local sim = simulator.start { port = port, tls = tls }
  sim:add_token("sim-token", { expires_in = 3600 })
  sim:oauth_client { client_id = "sim-client", client_secret = "sim-secret", refresh_token = "sim-refresh" }
  print("Zoho CRM simulator at " .. sim.url .. " (prefix " .. sim.prefix .. ")")
  if tls then print("  CA file:       " .. sim.ca_file .. "  (control calls: " .. sim.control_url .. ")") end
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
