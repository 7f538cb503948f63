-- make demo: zcrm's main job end to end.
--
-- Without Zoho credentials in the environment it starts the local Zoho CRM simulator,
-- seeds a product with 250 price-book relations, delinks them through zcrm (three calls
-- of at most 100 ids), prints the results and the simulator's proof that they are gone.
--
-- With credentials (ZCRM_ACCESS_TOKEN, or ZCRM_CLIENT_ID + ZCRM_CLIENT_SECRET +
-- ZCRM_REFRESH_TOKEN with ZCRM_DC) it delinks from real Zoho what ZCRM_DEMO_MODULE,
-- ZCRM_DEMO_RECORD, ZCRM_DEMO_RELATED and ZCRM_DEMO_IDS (comma-separated) name.
package.path = "./lua/?.lua;./lua/?/init.lua;./?.lua;" .. package.path
local version = _VERSION:match("%d+%.%d+")
package.cpath = "./build/" .. (jit and "5.1" or version) .. "/?.so;" .. package.cpath

local zcrm = require "zcrm"

local getenv = os.getenv
local printf = function(...) io.write(string.format(...), "\n") end

local function summarize(res, err)
    if not res then
        printf("nothing sent: %s", tostring(err))
        return
    end
    for i = 1, math.min(#res, 3) do
        printf("  %s  %-7s %-12s %s", res[i].id, res[i].status, res[i].code, res[i].message)
    end
    if #res > 3 then printf("  ... %d more", #res - 3) end
    printf("succeeded: %d, failed: %d%s", res.succeeded, res.failed, err and ("; first failure: " .. tostring(err)) or "")
end

local function against_zoho()
    local target = { getenv("ZCRM_DEMO_MODULE"), getenv("ZCRM_DEMO_RECORD"), getenv("ZCRM_DEMO_RELATED"),
                     getenv("ZCRM_DEMO_IDS") }
    if not (target[1] and target[2] and target[3] and target[4]) then
        io.stderr:write("Zoho credentials found: set ZCRM_DEMO_MODULE, ZCRM_DEMO_RECORD, ZCRM_DEMO_RELATED and\n",
                        "ZCRM_DEMO_IDS (comma-separated) to say what to delink, or unset the credentials\n",
                        "to run against the local simulator.\n")
        os.exit(2)
    end
    local opts = { token = getenv("ZCRM_ACCESS_TOKEN"), dc = getenv("ZCRM_DC") }
    if getenv("ZCRM_API_DOMAIN") then opts.api_domain, opts.dc = getenv("ZCRM_API_DOMAIN"), nil end
    if getenv("ZCRM_REFRESH_TOKEN") then
        opts.refresh = zcrm.oauth_refresh { client_id = getenv("ZCRM_CLIENT_ID"),
            client_secret = getenv("ZCRM_CLIENT_SECRET"), refresh_token = getenv("ZCRM_REFRESH_TOKEN"),
            dc = getenv("ZCRM_DC") }
    end
    local client = zcrm.new(opts)
    local ids = {}
    for id in target[4]:gmatch("[^,%s]+") do ids[#ids + 1] = id end
    printf("delinking %d %s from %s %s at %s", #ids, target[3], target[1], target[2], client.api_domain)
    local res, err = client:delink(target[1], target[2], target[3], ids)
    summarize(res, err)
    return res and res.failed == 0
end

local function against_simulator()
    local simulator = require "spec.support.simulator"
    local PRODUCT = "3477061000007606020"
    local sim = simulator.start()
    local ok, result = pcall(function()
        local ids = {}
        for i = 1, 250 do ids[i] = string.format("3477061%012d", 7596000 + i) end
        sim:seed("Products", PRODUCT, "Price_Books", ids)
        sim:oauth_client { client_id = "demo-client", client_secret = "demo-secret", refresh_token = "demo-refresh" }
        printf("Zoho CRM simulator at %s (nginx + lua); no Zoho credentials given, so using it.", sim.url)
        printf("seeded: Products/%s has %d Price_Books relations",
               PRODUCT, #sim:relations("Products", PRODUCT, "Price_Books"))

        local client = zcrm.new {
            api_domain = sim.url,
            refresh = zcrm.oauth_refresh { client_id = "demo-client", client_secret = "demo-secret",
                                           refresh_token = "demo-refresh", accounts_url = sim.url },
        }
        printf("\nclient:delink(\"Products\", %q, \"Price_Books\", <250 ids>)", PRODUCT)
        local res, err = client:delink("Products", PRODUCT, "Price_Books", ids)
        summarize(res, err)

        local counters, sizes = sim:counters(), {}
        for i, n in ipairs(counters.ids_per_request) do sizes[i] = string.format("%d", n) end
        printf("\nsimulator saw %d DELETE calls carrying %s ids, and %d OAuth token grant",
               counters.requests, table.concat(sizes, " + "), counters.token_grants)
        local left = sim:relations("Products", PRODUCT, "Price_Books")
        printf("simulator: Products/%s now has %d Price_Books relations", PRODUCT, #left)

        printf("\nagain, for two ids that are no longer related (Zoho answers per id):")
        summarize(client:delink("Products", PRODUCT, "Price_Books", { ids[1], ids[2] }))
        return res ~= nil and res.succeeded == 250 and #left == 0
    end)
    sim:stop()
    if not ok then error(result, 0) end
    return result
end

local has_credentials = (getenv("ZCRM_ACCESS_TOKEN") or "") ~= "" or (getenv("ZCRM_REFRESH_TOKEN") or "") ~= ""
local ok
if has_credentials then ok = against_zoho() else ok = against_simulator() end
os.exit(ok and 0 or 1)
