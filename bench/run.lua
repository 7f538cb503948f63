-- make bench: zcrm against the alternatives, on this machine, against the Zoho CRM simulator.
-- A benchmark, not a test: it prints a table and never passes or fails on the numbers
-- (it exits non-zero only when it cannot run at all, e.g. the simulator does not start).
--
--   lua5.4 bench/run.lua          (make bench installs tools/debian-packages-bench.txt first)
--
-- For each id count (10,000 and 100,000 ids, seeded into the simulator before every run,
-- since delinking removes them) and each server latency (0 and 50 ms added per call), it
-- runs, each in its own process under /usr/bin/time (wall time around the process, peak
-- RSS from GNU time's %M):
--   zcrm c=1, zcrm c=10     lua5.4 bench/zcrm_delink.lua: one client:delink with all ids
--   python requests         /usr/bin/python3 bench/requests_loop.py: one Session, a DELETE
--                           per batch of 100 in a loop
--   curl loop               sh bench/curl_loop.sh: one curl process per batch of 100
-- and, as the limit, wrk on the delink endpoint at concurrency 1 and 10 (latency 0), plus
-- the ideal time ceil(calls / concurrency) x latency for the latency runs.
-- Every run is checked: the tool's own count of "success" entries, the simulator's request
-- count, and no relation left for the record, so a broken alternative cannot look fast.
--
-- Environment knobs (defaults are what make bench runs):
--   BENCH_IDS=10000,100000  BENCH_LATENCIES=0,50  BENCH_REPEAT=3 (runs per tool when the
--   latency is 0, per zcrm run with latency, and wrk runs per limit; the median is shown)
--   BENCH_WRK_SECONDS=3  BENCH_PIN=1 (simulator on CPU 0, clients on CPU 1; 0: shared)

local ROOT = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
if ROOT:sub(1, 1) ~= "/" then ROOT = (os.getenv("PWD") or ".") .. "/" .. ROOT end
ROOT = ROOT:gsub("/%./", "/"):gsub("/%.$", "")
package.path = ROOT .. "/?.lua;" .. package.path

local simulator = require "spec.support.simulator"
local socket = require "socket"

local MODULE, RECORD, RELATED = "Products", "3477061000007606020", "Price_Books"
local TOKEN = "bench-token"

local function list_env(name, default)
    local out = {}
    for v in (os.getenv(name) or default):gmatch("[^,%s]+") do out[#out + 1] = assert(tonumber(v), name) end
    return out
end
local ID_COUNTS = list_env("BENCH_IDS", "10000,100000")
local LATENCIES = list_env("BENCH_LATENCIES", "0,50")
local REPEAT = tonumber(os.getenv("BENCH_REPEAT") or "3")
local WRK_SECONDS = tonumber(os.getenv("BENCH_WRK_SECONDS") or "3")
-- A distinct-ids run lasts 1 s and needs a fresh batch for every call: more batches
-- than the simulator answers in a second (the check below says so if not).
local DISTINCT_BATCHES, DISTINCT_SECONDS = 12000, 1

---------------------------------------------------------------------------
-- Shell helpers.

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("a")
    f:close()
    return s
end

local function capture(cmd)
    local p = assert(io.popen(cmd, "r"))
    local s = p:read("a")
    p:close()
    return s
end

local TMP = capture("mktemp -d /tmp/zcrm-bench.XXXXXX"):gsub("%s+$", "")
assert(TMP:match("^/tmp/zcrm%-bench%.%w+$"), "mktemp failed")

local function need(program)
    if capture("command -v " .. q(program) .. " 2>/dev/null") == "" then
        error("bench: " .. program .. " is missing (make bench installs tools/debian-packages-bench.txt)", 0)
    end
end
for _, p in ipairs { "/usr/bin/time", "/usr/bin/python3", "curl", "wrk", "nproc", "taskset" } do need(p) end
if os.execute("/usr/bin/python3 -c 'import requests' 2>/dev/null") ~= true then
    error("bench: /usr/bin/python3 cannot import requests (Debian package python3-requests)", 0)
end

-- Runs cmd in its own process under GNU time; wall time is taken around the process.
-- Returns { wall, rss_mib, cpu (user+sys, descendants included), status, out, err }.
local function run_child(cmd)
    local out, errf, tf = TMP .. "/out", TMP .. "/err", TMP .. "/time"
    local full = "/usr/bin/time -o " .. q(tf) .. " -f '%M %U %S %x' " .. cmd .. " >" .. q(out) .. " 2>" .. q(errf)
    local t0 = socket.gettime()
    os.execute(full)
    local wall = socket.gettime() - t0
    local last = ""
    for line in read(tf):gmatch("[^\n]+") do last = line end
    local rss, user, sys, status = last:match("^(%d+) ([%d.]+) ([%d.]+) (%-?%d+)$")
    return {
        wall = wall,
        rss = rss and tonumber(rss) / 1024,
        cpu = user and tonumber(user) + tonumber(sys),
        status = tonumber(status or -1),
        out = read(out),
        err = read(errf),
    }
end

---------------------------------------------------------------------------
-- The simulator.

-- Client and server on separate cores (BENCH_PIN=0: shared), as a client and Zoho are on
-- separate machines: the simulator (started from this process, whose CPU it inherits) on
-- CPU 0, every client (zcrm, the alternatives, wrk) on CPU 1. Shared, a client's own CPU
-- time would be taken from the server's, and the cheapest client (wrk) would look best
-- for that alone.
local NPROC = capture("nproc"):gsub("%s+$", "") -- before pinning: nproc counts the usable cores
local PIN = os.getenv("BENCH_PIN") ~= "0" and tonumber(NPROC) >= 2
local CLIENT_CPU = ""
if PIN then
    local pid = read("/proc/self/stat"):match("^(%d+)")
    assert(pid and os.execute("taskset -pc 0 " .. pid .. " >/dev/null"), "bench: taskset -pc 0 failed")
    CLIENT_CPU = "taskset -c 1 "
end

local sim = simulator.start { workers = 2 }
local main -- defined below; run under xpcall so that the simulator always stops
local API_PATH = "/crm/v2.1/" .. MODULE .. "/" .. RECORD .. "/" .. RELATED

local function id_list(n)
    local ids = {}
    for i = 1, n do ids[i] = string.format("3477061%012d", i) end
    return ids
end

local ID_CACHE = {}
local function prepare(n, latency_ms, extra)
    sim:reset()
    sim:add_token(TOKEN, { expires_in = 3600 })
    local cfg = { latency_ms = latency_ms }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    sim:config(cfg)
    if n > 0 then
        ID_CACHE[n] = ID_CACHE[n] or id_list(n)
        sim:seed(MODULE, RECORD, RELATED, ID_CACHE[n])
    end
end

---------------------------------------------------------------------------
-- The tools.

local ARGS = table.concat({ q(sim.url), q(TOKEN), MODULE, RECORD, RELATED }, " ")

local TOOLS = {
    { key = "zcrm1", name = "zcrm", conc = 1,
      cmd = function(n) return "lua5.4 " .. q(ROOT .. "/bench/zcrm_delink.lua") .. " " .. ARGS .. " " .. n .. " 1" end },
    { key = "zcrm10", name = "zcrm", conc = 10,
      cmd = function(n) return "lua5.4 " .. q(ROOT .. "/bench/zcrm_delink.lua") .. " " .. ARGS .. " " .. n .. " 10" end },
    { key = "requests", name = "python requests loop", conc = 1,
      cmd = function(n) return "/usr/bin/python3 " .. q(ROOT .. "/bench/requests_loop.py") .. " " .. ARGS .. " " .. n end },
    { key = "curl", name = "curl loop (1 process/call)", conc = 1,
      cmd = function(n) return "sh " .. q(ROOT .. "/bench/curl_loop.sh") .. " " .. ARGS .. " " .. n end },
}

-- How many ids the tool says succeeded, from its stdout.
local function succeeded_of(tool, out)
    if tool.key == "curl" then
        local k = 0
        for _ in out:gmatch('"status":"success"') do k = k + 1 end
        return k
    end
    return tonumber(out:match("^(%d+)"))
end

local function inside_of(tool, out)
    if tool.key == "curl" then return nil end
    return tonumber(out:match("^%d+%s+%d+%s+([%d.]+)"))
end

local function calls_of(n) return math.ceil(n / 100) end

-- One verified run of a tool on n freshly seeded ids.
local function run_tool(tool, n, latency_ms)
    prepare(n, latency_ms)
    local r = run_child(CLIENT_CPU .. tool.cmd(n))
    local counters = sim:counters()
    local left = #sim:relations(MODULE, RECORD, RELATED)
    local ok_ids = succeeded_of(tool, r.out)
    r.inside = inside_of(tool, r.out)
    r.connections = counters.connections
    r.peak_in_flight = counters.in_flight_peak
    local problems = {}
    if r.status ~= 0 then problems[#problems + 1] = "exit status " .. tostring(r.status) end
    if ok_ids ~= n then problems[#problems + 1] = ("%s of %d ids reported delinked"):format(tostring(ok_ids), n) end
    if counters.requests ~= calls_of(n) then
        problems[#problems + 1] = ("server saw %d calls, expected %d"):format(counters.requests, calls_of(n))
    end
    if left ~= 0 then problems[#problems + 1] = left .. " relations left on the server" end
    r.connections = math.floor(r.connections)
    r.check = #problems == 0 and "ok" or ("BROKEN: " .. table.concat(problems, "; "))
    if #problems > 0 and r.err ~= "" then r.check = r.check .. " [stderr: " .. r.err:sub(1, 200):gsub("\n", " ") .. "]" end
    return r
end

local function median_run(tool, n, latency_ms, repeats)
    local runs = {}
    for i = 1, repeats do runs[i] = run_tool(tool, n, latency_ms) end
    local broken
    for _, r in ipairs(runs) do if r.check ~= "ok" then broken = r end end
    if broken then return broken, #runs end
    table.sort(runs, function(a, b) return a.wall < b.wall end)
    local m = runs[(#runs + 1) // 2]
    for _, r in ipairs(runs) do m.rss = math.max(m.rss or 0, r.rss or 0) end -- worst peak RSS
    m.walls = {}
    for i, r in ipairs(runs) do m.walls[i] = r.wall end
    return m, #runs
end

-- wrk for `seconds` at `conc` connections (one thread, as zcrm is one thread).
-- distinct = nil: the fixed URL (ids 1..100); distinct = B: B distinct batches, seeded.
local function run_wrk(conc, distinct, seconds)
    local ids = id_list(100)
    local url = sim.url .. API_PATH .. "?ids=" .. table.concat(ids, ",")
    -- All-failed calls answered 200 (a switch of the simulator), so wrk's "Non-2xx" count
    -- flags only real errors (a rejected token, a bad URL), not the repeats of the fixed URL.
    prepare(distinct and distinct * 100 or 100, 0, { all_failed_status = 200 })
    local env = "ZCRM_BENCH_TOKEN=" .. q(TOKEN)
    if distinct then env = env .. " ZCRM_BENCH_BATCHES=" .. distinct .. " ZCRM_BENCH_PATH=" .. q(API_PATH) end
    local cmd = (CLIENT_CPU .. "env %s wrk -t1 -c%d -d%ds -s %s %s")
        :format(env, conc, seconds, q(ROOT .. "/bench/wrk_delete.lua"), q(url))
    local out = capture(cmd .. " 2>&1")
    -- wrk stops with requests still queued at the server: let them finish before counting
    -- (and before the next reset, which they would otherwise pollute).
    local counters = sim:counters()
    for _ = 1, 50 do
        socket.sleep(0.1)
        local now = sim:counters()
        if now.requests == counters.requests and now.in_flight == 0 then break end
        counters = now
    end
    local rps = tonumber(out:match("Requests/sec:%s*([%d.]+)"))
    local done = tonumber(out:match("(%d+) requests in"))
    local problems = {}
    if not rps or not done then problems[#problems + 1] = "no wrk summary: " .. out:sub(1, 200) end
    local non2xx = out:match("Non%-2xx or 3xx responses:%s*(%d+)")
    if non2xx then problems[#problems + 1] = non2xx .. " non-2xx responses" end
    local sockerr = out:match("Socket errors:[^\n]*")
    if sockerr then problems[#problems + 1] = sockerr end
    if done and (counters.requests < done or counters.requests > done + conc) then
        problems[#problems + 1] = ("server saw %d calls, wrk %d"):format(counters.requests, done)
    end
    if distinct and done and done > distinct then
        problems[#problems + 1] = ("%d calls over %d batches: some were repeats"):format(done, distinct)
    end
    return { rps = rps, requests = done, connections = math.floor(counters.connections),
             check = #problems == 0 and "ok" or ("BROKEN: " .. table.concat(problems, "; ")),
             cmd = "wrk -t1 -c" .. conc .. " -d" .. seconds .. "s -s bench/wrk_delete.lua"
                   .. (distinct and (" (ZCRM_BENCH_BATCHES=" .. distinct .. ")") or "") .. " URL?ids=<100 ids>" }
end

local function median_wrk(conc, distinct, seconds, repeats)
    local runs = {}
    for i = 1, repeats do
        runs[i] = run_wrk(conc, distinct, seconds)
        if runs[i].check ~= "ok" then return runs[i] end
    end
    table.sort(runs, function(a, b) return a.rps < b.rps end)
    local m = runs[(#runs + 1) // 2]
    m.all = {}
    for i, r in ipairs(runs) do m.all[i] = string.format("%.0f", r.rps) end
    return m
end

---------------------------------------------------------------------------
-- Output.

local function commas(x)
    local s = string.format("%.0f", x)
    local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
    return (out:gsub("^,", ""))
end

local function fmt(x, f) return x and string.format(f, x) or "-" end

local ROW = "%-28s %4s %8s %8s %9s %7s %7s %7s %6s %9s %9s %8s  %s"
local function header()
    print(ROW:format("tool", "conc", "wall s", "calls/s", "ids/s", "in-proc", "CPU s", "RSS MiB", "conns",
        "÷zcrm c1", "÷zcrm c10", "vs limit", "check"))
end

local function say(...)
    print(string.format(...))
    io.stdout:flush()
end

function main()
local started = socket.gettime()
say("zcrm benchmark: Zoho CRM Delink Related Records against the local simulator")
say("machine: %s cores (nproc), %s", NPROC, capture("uname -srm"):gsub("%s+$", ""))
say("command: lua5.4 bench/run.lua   (make bench; root %s)", ROOT)
say("server: simulator on nginx + lua module, 2 workers, %s; token %s", sim.url, TOKEN)
say("cores: %s", PIN and "simulator on CPU 0, each client (zcrm, the alternatives, wrk) on CPU 1 (taskset)"
    or "shared by the simulator and the clients (BENCH_PIN=0 or one core)")
say("ids seeded before every run (record %s %s/%s); a run delinks ids 1..N in calls of 100", RECORD, MODULE, RELATED)
say("per run: wall = time around the child process; RSS = its peak (GNU time %%M, largest process);")
say("  CPU = user+sys of the process and its children; in-proc = time measured inside the process")
say("  (without interpreter start-up and imports); conns = TCP connections the server saw")
say("  ÷zcrm c1 / ÷zcrm c10 = this run's wall time divided by zcrm's (same ids and latency)")
say("  vs limit (zcrm rows) = zcrm calls/s as %% of wrk's, distinct ids, same concurrency (latency 0),")
say("  or zcrm time ÷ ideal time (latency > 0), from zcrm's in-proc time: wrk's calls/s and the")
say("  ideal time leave out start-up too (from the whole process: the targets' second figure)")
say("latency 0 runs: median of %d (RSS: the largest of them); latency runs: median of %d for", REPEAT, REPEAT)
say("  zcrm (seconds each), one run for the alternatives (minutes each);")
say("limit: wrk -t1 at the same concurrency as zcrm, median of %d runs, once for all id counts:", REPEAT)
say("  fixed URL = %d s of the same 100 ids every call (as specified; only the first call", WRK_SECONDS)
say("  delinks, the rest are answered INVALID_DATA, a cheaper path of the server), distinct ids =")
say("  %d s over %d distinct seeded batches, none sent twice: every call a real delink, as", DISTINCT_SECONDS, DISTINCT_BATCHES)
say("  zcrm's are")
say("")
say("commands (N ids; URL and token are the simulator's):")
for _, t in ipairs(TOOLS) do
    say("  %-28s %s", t.name .. (t.name == "zcrm" and (" c=" .. t.conc) or ""),
        t.cmd("N"):gsub(ROOT .. "/", ""):gsub("'", ""))
end
say("  %-28s curl -s -X DELETE -H 'Authorization: Zoho-oauthtoken TOKEN' URL?ids=<100 ids>, per call", "  (each call)")
say("")

-- The limit first: it does not depend on the id count.
local limits = {}
if #LATENCIES > 0 then
    for _, conc in ipairs { 1, 10 } do
        limits[conc] = { fixed = median_wrk(conc, nil, WRK_SECONDS, REPEAT),
                         distinct = median_wrk(conc, DISTINCT_BATCHES, DISTINCT_SECONDS, REPEAT) }
    end
    say("limit (wrk calls/s, each run): c=1 fixed %s, distinct %s; c=10 fixed %s, distinct %s",
        table.concat(limits[1].fixed.all or {}, "/"), table.concat(limits[1].distinct.all or {}, "/"),
        table.concat(limits[10].fixed.all or {}, "/"), table.concat(limits[10].distinct.all or {}, "/"))
end

local results = {} -- results[n][latency][key]
for _, latency in ipairs(LATENCIES) do
    for _, n in ipairs(ID_COUNTS) do
        local calls = calls_of(n)
        results[n] = results[n] or {}
        local res = {}
        results[n][latency] = res
        for _, tool in ipairs(TOOLS) do
            res[tool.key] = median_run(tool, n, latency, (latency == 0 or tool.name == "zcrm") and REPEAT or 1)
        end

        say("")
        say("== %s ids = %s calls, server latency %d ms (median of %d%s) ==", commas(n), commas(calls), latency,
            REPEAT, latency > 0 and " for zcrm" or "")
        header()
        local z1, z10 = res.zcrm1, res.zcrm10
        for _, tool in ipairs(TOOLS) do
            local r = res[tool.key]
            local vs_limit = "-"
            if tool.name == "zcrm" then
                if latency == 0 then
                    local l = limits[tool.conc] and limits[tool.conc].distinct
                    if l and l.rps then vs_limit = string.format("%.0f%%", 100 * calls / r.inside / l.rps) end
                else
                    local ideal = math.ceil(calls / tool.conc) * latency / 1000
                    vs_limit = string.format("%.2fx", r.inside / ideal)
                end
            end
            say(ROW, tool.name, tostring(tool.conc), fmt(r.wall, "%.3f"), commas(calls / r.wall), commas(n / r.wall),
                fmt(r.inside, "%.3f"), fmt(r.cpu, "%.2f"), fmt(r.rss, "%.1f"), tostring(r.connections),
                string.format("%.2fx", r.wall / z1.wall), string.format("%.2fx", r.wall / z10.wall), vs_limit, r.check)
        end
        if latency == 0 then
            for _, conc in ipairs { 1, 10 } do
                local l = limits[conc]
                for _, kind in ipairs { "fixed", "distinct" } do
                    local w = l[kind]
                    local z = conc == 1 and z1 or z10
                    local pct = w.rps and string.format("zcrm c=%d: %.0f%%", conc, 100 * calls / z.inside / w.rps) or "-"
                    say(ROW, kind == "fixed" and "limit: wrk, fixed URL" or "limit: wrk, distinct ids", tostring(conc), "-",
                        w.rps and commas(w.rps) or "-", w.rps and commas(100 * w.rps) or "-", "-", "-", "-",
                        tostring(w.connections), "-", "-", pct, w.check)
                end
            end
        else
            for _, conc in ipairs { 1, 10 } do
                local ideal = math.ceil(calls / conc) * latency / 1000
                local z = conc == 1 and z1 or z10
                say(ROW, "ideal: ceil(calls/c) x " .. latency .. " ms", tostring(conc), string.format("%.3f", ideal),
                    commas(calls / ideal), commas(n / ideal), "-", "-", "-", "-", "-", "-",
                    string.format("zcrm %.2fx", z.inside / ideal), "")
            end
        end
    end
end

---------------------------------------------------------------------------
-- The targets (informative: the bench does not fail on them).

say("")
say("targets (informative; against the limits, zcrm's in-proc figure, then its whole-process one):")
local function target(label, value, goal, met)
    say("  %-62s %-16s goal %-10s %s", label, value, goal, met and "met" or "MISSED")
end
for _, n in ipairs(ID_COUNTS) do
    local r0 = results[n] and results[n][0]
    if r0 then
        local z1, z10 = r0.zcrm1, r0.zcrm10
        local k = r0.requests.wall / z1.wall
        target(commas(n) .. " ids, 0 ms: zcrm c=1 ids/s ÷ python requests ids/s", ("%.2fx"):format(k), ">= 5x", k >= 5)
        k = r0.curl.wall / z1.wall
        target(commas(n) .. " ids, 0 ms: zcrm c=1 ids/s ÷ curl loop ids/s", ("%.2fx"):format(k), ">= 10x", k >= 10)
        for _, kind in ipairs { "distinct", "fixed" } do
            local l = limits[10][kind]
            if l.rps then
                k = calls_of(n) / z10.inside / l.rps
                target(("%s ids, 0 ms: zcrm c=10 calls/s ÷ wrk c=10, %s"):format(commas(n),
                        kind == "distinct" and "distinct ids" or "fixed URL"),
                    ("%.0f%% (%.0f%%)"):format(100 * k, 100 * calls_of(n) / z10.wall / l.rps), ">= 60%", k >= 0.6)
            end
        end
    end
    for _, latency in ipairs(LATENCIES) do
        local r = results[n] and results[n][latency]
        if latency > 0 and r then
            local ideal = math.ceil(calls_of(n) / 10) * latency / 1000
            local k = r.zcrm10.inside / ideal
            target(("%s ids, %d ms: zcrm c=10 time ÷ ideal time"):format(commas(n), latency),
                ("%.3fx (%.3fx)"):format(k, r.zcrm10.wall / ideal), "<= 1.15x", k <= 1.15)
        end
    end
    local worst
    for _, latency in ipairs(LATENCIES) do
        local r = results[n] and results[n][latency]
        if r then worst = math.max(worst or 0, r.zcrm1.rss or 0, r.zcrm10.rss or 0) end
    end
    if worst and n >= 100000 then
        target(commas(n) .. " ids: zcrm peak RSS (largest of its runs)", ("%.1f MiB"):format(worst), "< 64 MiB", worst < 64)
    end
end
say("")
say("bench took %.0f s", socket.gettime() - started)
end

local ok, why = xpcall(main, debug.traceback)
sim:stop()
os.execute("rm -rf " .. q(TMP))
if not ok then
    io.stderr:write("bench: ", tostring(why), "\n")
    os.exit(1)
end
