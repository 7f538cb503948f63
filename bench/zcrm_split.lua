-- Where a zcrm delink's time goes, natively (bench/profile.lua split):
--   lua5.4 bench/zcrm_split.lua URL TOKEN MODULE RECORD RELATED N CONCURRENCY
-- Wraps zcrm's internals from outside (core.plan, the session's start/wait, response.read,
-- cjson.decode) with wall and CPU timers, then does bench/zcrm_delink.lua's job.
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/5.4/?.so;" .. package.cpath
local socket = require "socket"
local core = require "zcrm.core"
local response = require "zcrm.response"
local cjson = require "cjson.safe"
local clock, now = os.clock, socket.gettime

local T, order = {}, {}
local function wrap(tbl, name, label)
    local f = tbl[name]
    T[label] = { cpu = 0, wall = 0, n = 0 }
    order[#order + 1] = label
    tbl[name] = function(...)
        local c0, w0 = clock(), now()
        local r = table.pack(f(...))
        local t = T[label]
        t.cpu, t.wall, t.n = t.cpu + clock() - c0, t.wall + now() - w0, t.n + 1
        return table.unpack(r, 1, r.n)
    end
end
wrap(core, "plan", "core.plan (C: validation, batches, URLs)")
local probe = core.session { slots = 1 }
local methods = getmetatable(probe).__index
probe:close()
wrap(methods, "start", "session:start (C + libcurl)")
wrap(methods, "wait", "session:wait (libcurl exchange)")
wrap(response, "read", "response.read (Lua, incl. decode)")
wrap(cjson, "decode", "  of which cjson.decode")

local zcrm = require "zcrm"
local url, token, module, record, related = arg[1], arg[2], arg[3], arg[4], arg[5]
local n, concurrency = tonumber(arg[6]), tonumber(arg[7])
local ids = {}
for i = 1, n do ids[i] = string.format("3477061%012d", i) end
local c0, w0 = clock(), now()
local client = zcrm.new { token = token, api_domain = url, concurrency = concurrency }
local res = client:delink(module, record, related, ids)
local cpu, wall = clock() - c0, now() - w0
assert(res.succeeded == n, "not every id was delinked")
print(string.format("client:delink of %d ids at c=%d: wall %.3f s, CPU %.3f s (%.3f ms CPU per call)",
    n, concurrency, wall, cpu, 1000 * cpu / T[order[3]].n))
local accounted = 0
for i, label in ipairs(order) do
    local t = T[label]
    if i ~= 5 then accounted = accounted + t.cpu end
    print(string.format("  %-40s %5d calls  wall %.3f s  CPU %.3f s (%2.0f%%)", label, t.n, t.wall, t.cpu, 100 * t.cpu / cpu))
end
print(string.format("  %-40s             CPU %.3f s (%2.0f%%)", "the rest (client loop, result, GC)",
    cpu - accounted, 100 * (cpu - accounted) / cpu))
