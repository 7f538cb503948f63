-- luacheck: globals wrk init request
-- wrk script for bench/run.lua: Zoho's delink call (DELETE with the auth header).
--   ZCRM_BENCH_TOKEN     the access token (from the environment, not the command line)
--   ZCRM_BENCH_BATCHES   unset: every request is the fixed URL given on wrk's command line
--                        (100 ids in ?ids=); N: N distinct batches of 100 ids (1..100,
--                        101..200, ...) on ZCRM_BENCH_PATH, the ids bench/run.lua seeded,
--                        as a real delink of many ids sends (bench/run.lua makes N large
--                        enough that none is sent twice in the run).
wrk.method = "DELETE"
wrk.headers["Authorization"] = "Zoho-oauthtoken " .. (os.getenv("ZCRM_BENCH_TOKEN") or "")

local batches = tonumber(os.getenv("ZCRM_BENCH_BATCHES") or "")
if batches then
    local prepared, k = {}, 0
    -- Built in init, once wrk has set the Host header (wrk.format copies the headers).
    init = function()
        local path = assert(os.getenv("ZCRM_BENCH_PATH"), "ZCRM_BENCH_PATH is not set")
        for b = 0, batches - 1 do
            local ids = {}
            for i = 1, 100 do ids[i] = string.format("3477061%012d", b * 100 + i) end
            prepared[b + 1] = wrk.format(nil, path .. "?ids=" .. table.concat(ids, ","))
        end
    end
    request = function()
        k = k % batches + 1
        return prepared[k]
    end
end
