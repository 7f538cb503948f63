-- make nginx-latency: why zcrm runs its HTTP exchanges in nginx's thread pool.
--
-- Starts the Zoho CRM simulator (every answer delayed by 500 ms) and a one-worker
-- application nginx with zcrm (spec/nginx/), then, while 20 delinks are in flight in
-- that worker, sends 200 GET /ping to the same worker (one every 4 ms, open-loop, so a
-- blocked event loop delays every ping sent meanwhile) and prints their latency:
--
--   * thread pool, first burst: zcrm as it runs in nginx (ngx.run_worker_thread), right
--     after start, when nginx's lua module still creates the pool threads' Lua VMs;
--   * thread pool, warm: the same again;
--   * blocking C session: the same DELETEs through require("zcrm.core").session{}
--     called directly on the event loop (/delink-blocking): what the thread pool avoids;
--   * cosocket prototype: the same DELETEs over ngx.socket.tcp (/delink-cosocket), the
--     other non-blocking design.
--
-- Then the cost of each non-blocking design: 4,000 one-id delinks from 20 light threads
-- in the worker (/bench-loop), the simulator answering at once: wall time, calls/s and
-- the worker's CPU time (all its threads) per 1,000 calls.
--
-- Runs under luajit or lua5.4 from anywhere; needs build/5.1/zcrm/core.so (make LUA=luajit).
--   lua5.4 bench/nginx_latency.lua [--delinks 20] [--pings 200] [--interval-ms 4] [--latency-ms 500]
--                                  [--threads 16]

local function here()
  local src = debug.getinfo(1, "S").source:gsub("^@", "")
  if src:sub(1, 1) ~= "/" then src = (os.getenv("PWD") or ".") .. "/" .. src end
  return src:match("^(.*)/[^/]*$")
end
local ROOT = here():gsub("/bench$", ""):gsub("/%./", "/")
package.path = ROOT .. "/?.lua;" .. package.path

local socket = require "socket"
local simulator = require "spec.support.simulator"
local appmod = require "spec.support.app"

local opts = { delinks = 20, pings = 200, ["interval-ms"] = 4, ["latency-ms"] = 500, threads = 16 }
do
  local i = 1
  while arg and arg[i] do
    local k = arg[i]:match("^%-%-(.+)$")
    if not (k and opts[k] and tonumber(arg[i + 1])) then
      io.stderr:write("usage: nginx_latency.lua [--delinks N] [--pings N] [--interval-ms N] [--latency-ms N]"
        .. " [--threads N]\n")
      os.exit(2)
    end
    opts[k] = tonumber(arg[i + 1])
    i = i + 2
  end
end

local ok_core, why = appmod.check_core()
if not ok_core then
  io.stderr:write(why, "\n")
  os.exit(1)
end

local RECORD, RELATED, TOKEN = "3477061000007606020", "Price_Books", "bench-static-token"

local sim, app
local function cleanup()
  if app then app:stop() end
  if sim then sim:stop() end
end

-- One measurement: opts.delinks delinks in flight through `kind`, opts.pings pings meanwhile.
local function measure(kind, first_id)
  sim:reset()
  sim:oauth_client(appmod.OAUTH)
  sim:add_token(TOKEN, { expires_in = 3600 })
  -- Warm-up at full speed: a token for the zcrm client (an unseeded id: INVALID_DATA).
  local status, warm = app:delink(kind, "Products", RECORD, RELATED, { "1" })
  assert(status == 200 and type(warm) == "table" and warm.err == "INVALID_DATA",
    "warm-up delink failed: " .. tostring(status) .. " " .. (type(warm) == "table" and tostring(warm.message) or tostring(warm)))

  local ids, paths = {}, {}
  for i = 1, opts.delinks do
    ids[i] = string.format("3477061%012d", first_id + i)
    paths[i] = appmod.delink_path(kind, "Products", RECORD, RELATED, { ids[i] })
  end
  sim:seed("Products", RECORD, RELATED, ids)
  sim:config { latency_ms = opts["latency-ms"] }

  local job = app:parallel(paths, opts.delinks)
  local t0 = socket.gettime()
  while sim:counters().in_flight < 1 do
    assert(socket.gettime() - t0 < 10, "no delink reached the simulator")
    socket.sleep(0.002)
  end
  local pings = app:pings(opts.pings, opts["interval-ms"] / 1000, 60)
  local results, wall = job:wait(opts.delinks * opts["latency-ms"] / 1000 + 60)
  local ok = 0
  for _, r in ipairs(results) do
    if r.status == 200 and r.json and r.json.succeeded == 1 then ok = ok + 1 end
  end
  local c = sim:counters()
  return {
    p50 = appmod.percentile(pings, 50), p90 = appmod.percentile(pings, 90),
    p99 = appmod.percentile(pings, 99), max = appmod.percentile(pings, 100),
    slow = (function()
      local n = 0
      for _, v in ipairs(pings) do if v >= 100 then n = n + 1 end end
      return n
    end)(),
    errors = #pings.errors, wall = wall, ok = ok, peak = c.in_flight_peak,
  }
end

local ok, err = pcall(function()
  sim = simulator.start { workers = 2 }
  app = appmod.start { sim = sim, workers = 1, threads = opts.threads, static_token = TOKEN, log_level = "warn" }

  local rows = {
    { "thread pool, first burst", measure("content", 0) },
    { "thread pool, warm", measure("content", 1000) },
    { "blocking C session", measure("blocking", 2000) },
    { "cosocket prototype", measure("cosocket", 3000) },
  }

  -- Throughput and CPU of the two non-blocking designs.
  local loops = {}
  for _, kind in ipairs { "pool", "cosocket" } do
    local n, c = 4000, 20
    sim:reset()
    sim:oauth_client(appmod.OAUTH)
    sim:add_token(TOKEN, { expires_in = 3600 })
    local ids = {}
    for i = 1, n do ids[i] = string.format("3477061%012d", i) end
    sim:seed("Products", RECORD, RELATED, ids)
    local status, _, r = app:get(string.format("/bench-loop?kind=%s&n=%d&c=%d&record=%s", kind, n, c, RECORD), 300)
    assert(status == 200 and r and r.ok == n, "bench-loop " .. kind .. " failed: " .. tostring(status))
    loops[#loops + 1] = r
  end

  local errors = app:error_lines()
  print(string.format("zcrm in one nginx worker (thread_pool zcrm threads=%d): %d GET /ping, one every %g ms"
    .. " (open-loop),", opts.threads, opts.pings, opts["interval-ms"]))
  print(string.format("while %d delinks are in flight, each answered by the simulator after %d ms.",
    opts.delinks, opts["latency-ms"]))
  print("")
  print(string.format("%-26s %9s %9s %9s %9s %8s   %9s %7s %5s", "", "ping p50", "p90", "p99", "max", ">=100ms",
    "delinks", "ok", "peak"))
  for _, row in ipairs(rows) do
    local r = row[2]
    print(string.format("%-26s %7.2fms %7.2fms %7.2fms %7.2fms %8d   %8.2fs %3d/%-3d %5d", row[1], r.p50, r.p90,
      r.p99, r.max, r.slow, r.wall, r.ok, opts.delinks, r.peak))
    if r.errors > 0 then print(string.format("%-26s %d pings failed", "", r.errors)) end
  end
  print("")
  print("delinks: wall time of all of them; peak: most delinks the simulator saw at once.")
  print("")
  print(string.format("%d one-id delinks from 20 light threads in the worker, simulator answering at once:",
    loops[1].n))
  print(string.format("%-26s %9s %10s %22s", "", "wall", "calls/s", "worker CPU / 1000 calls"))
  for _, r in ipairs(loops) do
    print(string.format("%-26s %8.2fs %10.0f %20.0f ms", r.kind == "pool" and "zcrm, thread pool" or
      "cosocket prototype", r.wall, r.n / r.wall, r.cpu / r.n * 1000 * 1000))
  end
  if #errors > 0 then
    print("nginx error log:")
    for _, line in ipairs(errors) do print("  " .. line) end
  end
end)
cleanup()
if not ok then
  io.stderr:write("nginx-latency: ", tostring(err), "\n")
  os.exit(1)
end
