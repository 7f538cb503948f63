-- One zcrm run for bench/run.lua, in its own lua5.4 process (so that its peak RSS is its own):
--   lua5.4 bench/zcrm_delink.lua URL TOKEN MODULE RECORD RELATED N CONCURRENCY
-- Delinks ids 1..N (bench/run.lua seeded them) with one client:delink call, checks that
-- the result accounts for every id, and prints "succeeded failed seconds_in_process".
-- Exit status 0 only when all N succeeded.
local root = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.path = root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path
package.cpath = root .. "/build/5.4/?.so;" .. package.cpath
local socket = require "socket"
local zcrm = require "zcrm"

local url, token, module, record, related = arg[1], arg[2], arg[3], arg[4], arg[5]
local n, concurrency = tonumber(arg[6]), tonumber(arg[7])

local ids = {}
for i = 1, n do ids[i] = string.format("3477061%012d", i) end

local t0 = socket.gettime()
local client = zcrm.new { token = token, api_domain = url, concurrency = concurrency }
local res, err = client:delink(module, record, related, ids)
local inside = socket.gettime() - t0
client:close()
if not res then
    io.stderr:write("zcrm: nothing sent: ", tostring(err), "\n")
    os.exit(1)
end
print(res.succeeded, res.failed, string.format("%.4f", inside))
if #res ~= n or res.succeeded + res.failed ~= n then
    io.stderr:write("zcrm: the result does not account for every id\n")
    os.exit(1)
end
if err then io.stderr:write("zcrm: first failure: ", tostring(err), "\n") end
os.exit(res.succeeded == n and 0 or 1)
