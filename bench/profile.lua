-- Measurements beside make bench, against the simulator (2 workers, latency 0 by default):
--   lua5.4 bench/profile.lua rss         peak RSS of zcrm delinking 100,000 ids (c=1, c=10),
--                                        from /usr/bin/time -v
--   lua5.4 bench/profile.lua memory      where that memory goes (bench/zcrm_memory.lua)
--   lua5.4 bench/profile.lua split       where the time of a delink goes, natively, for 10,000
--                                        and 100,000 ids at c=1 and c=10 (bench/zcrm_split.lua)
--   lua5.4 bench/profile.lua callgrind   valgrind --tool=callgrind of zcrm delinking 10,000 ids
--                                        at c=1, with /usr/bin/lua5.4 and again with
--                                        bench/lua_syms.c (same liblua, function names kept)
-- BENCH_LATENCY=50 sets the simulator's added latency (ms). Output files stay in /tmp/zcrm-profile/.
local ROOT = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
package.path = ROOT .. "/?.lua;" .. package.path
local simulator = require "spec.support.simulator"

local MODULE, RECORD, RELATED, TOKEN = "Products", "3477061000007606020", "Price_Books", "bench-token"
local OUT = "/tmp/zcrm-profile"
local mode = arg[1] or "rss"

local function sh(cmd)
    print("$ " .. cmd)
    io.stdout:flush()
    return os.execute(cmd)
end

os.execute("mkdir -p " .. OUT)
local sim = simulator.start { workers = 2 }
local function seeded(n)
    sim:reset()
    sim:add_token(TOKEN, { expires_in = 3600 })
    sim:config { latency_ms = tonumber(os.getenv("BENCH_LATENCY") or "0") }
    local ids = {}
    for i = 1, n do ids[i] = string.format("3477061%012d", i) end
    sim:seed(MODULE, RECORD, RELATED, ids)
end
local function args(n, c)
    return table.concat({ sim.url, TOKEN, MODULE, RECORD, RELATED, n, c }, " ")
end
local function check(n)
    local left, calls = #sim:relations(MODULE, RECORD, RELATED), sim:counters().requests
    print(("check: %d relations left, %d calls (expected 0, %d)"):format(left, calls, math.ceil(n / 100)))
end

local ok, why = pcall(function()
    if mode == "rss" then
        for _, c in ipairs { 1, 10 } do
            seeded(100000)
            sh(("/usr/bin/time -v lua5.4 %s/bench/zcrm_delink.lua %s 2>&1 | grep -E '^[0-9]|Maximum resident|Elapsed'")
                :format(ROOT, args(100000, c)))
            check(100000)
        end
    elseif mode == "memory" then
        seeded(100000)
        sh(("lua5.4 %s/bench/zcrm_memory.lua %s"):format(ROOT, args(100000, 1)))
        check(100000)
    elseif mode == "split" then
        for _, n in ipairs { 10000, 100000 } do
            for _, c in ipairs { 1, 10 } do
                seeded(n)
                sh(("lua5.4 %s/bench/zcrm_split.lua %s"):format(ROOT, args(n, c)))
                check(n)
            end
        end
    elseif mode == "callgrind" then
        local interpreters = { { "lua5.4", OUT .. "/callgrind.lua5.4.out" } }
        if sh(("cc -O2 -g -I/usr/include/lua5.4 -o %s/lua_syms %s/bench/lua_syms.c -Wl,-E "
            .. "/usr/lib/x86_64-linux-gnu/liblua5.4.a -lm -ldl"):format(OUT, ROOT)) then
            interpreters[2] = { OUT .. "/lua_syms", OUT .. "/callgrind.lua_syms.out" }
        end
        for _, it in ipairs(interpreters) do
            seeded(10000)
            sh(("valgrind --tool=callgrind --callgrind-out-file=%s %s %s/bench/zcrm_delink.lua %s 2>&1 | tail -1")
                :format(it[2], it[1], ROOT, args(10000, 1)))
            check(10000)
        end
        local prof = interpreters[#interpreters][2]
        print("\nby object (self cost):")
        sh(("callgrind_annotate --threshold=100 %s | awk '/^ *[0-9,]+ \\(/ && / \\[\\// {n=$1; gsub(\",\",\"\",n);"
            .. " o=$NF; gsub(/[][]/,\"\",o); s[o]+=n; t+=n} END {for (k in s) printf \"%%6.1f%%%%  %%s\\n\","
            .. " 100*s[k]/t, k}' | sort -rn | head -8"):format(prof))
        print("\ntop functions (self):")
        sh(("callgrind_annotate %s | sed -n '/file:function/,$p' | sed -n '3,22p'"):format(prof))
        print("\ninclusive (selected):")
        sh(("callgrind_annotate --inclusive=yes %s | grep -E 'PROGRAM TOTALS|l_session_wait \\[|l_plan \\[|"
            .. "zcrm_http_start \\[|0x0000000000003c80|ll_require \\[|str_format|curl_maprintf|curl_url_get|"
            .. "luaC_step|_dl_relocate_object'"):format(prof))
    else
        error("usage: lua5.4 bench/profile.lua rss|memory|split|callgrind")
    end
end)
sim:stop()
if not ok then
    io.stderr:write(tostring(why), "\n")
    os.exit(1)
end
