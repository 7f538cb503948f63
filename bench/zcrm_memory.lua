-- Where zcrm's memory goes when it delinks N ids (bench/profile.lua memory):
--   lua5.4 bench/zcrm_memory.lua URL TOKEN MODULE RECORD RELATED N CONCURRENCY
-- Prints the live Lua heap (after a full collection) at each stage, the heap's sampled
-- peak during delink and the process's peak RSS (VmHWM).
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/5.4/?.so;" .. package.cpath
local zcrm = require "zcrm"
local core = require "zcrm.core"

local function heap() return collectgarbage("count") / 1024 end
local function live() collectgarbage("collect"); collectgarbage("collect"); return heap() end
local function vmhwm()
    local f = assert(io.open("/proc/self/status"))
    local kb = tonumber(f:read("a"):match("VmHWM:%s*(%d+)"))
    f:close()
    return kb / 1024
end

local url, token, module, record, related = arg[1], arg[2], arg[3], arg[4], arg[5]
local n, concurrency = tonumber(arg[6]), tonumber(arg[7])
local function say(...) print(string.format(...)) end

say("after require zcrm:   live heap %6.1f MiB   process VmHWM %6.1f MiB", live(), vmhwm())
local ids = {}
for i = 1, n do ids[i] = string.format("3477061%012d", i) end
local base = live()
say("caller's %d ids:   live heap %6.1f MiB", n, base)
local plan = core.plan(url, "v2.1", module, record, related, ids)
say("+ core.plan (%d calls): %6.1f MiB (the plan alone: %.1f MiB)", #plan.batches, live(), live() - base)
plan = nil -- luacheck: ignore 311
live()

local client = zcrm.new { token = token, api_domain = url, concurrency = concurrency }
local peak = 0
debug.sethook(function() local h = heap(); if h > peak then peak = h end end, "", 1000)
local res = client:delink(module, record, related, ids)
debug.sethook()
say("during delink:        heap peak (sampled) %6.1f MiB", peak)
local with_res = live()
say("after delink:         live heap %6.1f MiB, of which the result %.1f MiB (%.0f bytes per id)",
    with_res, with_res - base, (with_res - base) * 1048576 / n)
say("process peak RSS (VmHWM): %.1f MiB", vmhwm())
assert(res.succeeded == n, "not every id was delinked")
