-- The zcrm command (bin/zcrm, lua/zcrm/cli.lua), run as a process against the simulator:
-- ids from arguments, a file, stdin and a CSV column; dry run; every output format; exit
-- codes; credentials from the environment and a config file; a run killed with calls in
-- flight and resumed from its journal; Ctrl-C; the progress line under a pseudo-terminal.
--
--   make test SPECS=spec/10-cli_spec.lua            (and LUA=luajit)
--
-- The command runs under the interpreter running busted, with the C core busted loaded
-- (build/5.4 or build/5.1), so that both ABIs are covered.
local simulator = require "spec.support.simulator"
local nginx = require "spec.support.nginx"
local h = require "spec.support.helpers"
local cjson = require "cjson"
local socket = require "socket"
local zcrm = require "zcrm"

local PRODUCT = h.PRODUCT
local TOKEN = "1000.cli-spec-token-0123456789abcdef" -- long enough that a masked form shows its end
local ROOT = nginx.repo_dir
local q = nginx.q
local LUA = rawget(_G, "jit") and "luajit" or "lua5.4"

-- The core busted loaded, as an absolute LUA_CPATH entry.
local function core_cpath()
    local path = assert(package.searchpath("zcrm.core", package.cpath), "zcrm.core not found on package.cpath")
    if path:sub(1, 1) ~= "/" then path = ROOT .. "/" .. path:gsub("^%./", "") end
    return (path:gsub("zcrm/core%.so$", "?.so"))
end

-- Children start without the caller's Zoho credentials, Lua settings or the sanitizer
-- preload (which only the zcrm process itself gets back, when `make sanitize` set it).
local SCRUB = "env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS -u LSAN_OPTIONS -u LUA_INIT -u LUA_INIT_5_4"
    .. " -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u ZCRM_ACCESS_TOKEN -u ZCRM_CLIENT_ID -u ZCRM_CLIENT_SECRET"
    .. " -u ZCRM_REFRESH_TOKEN -u ZCRM_DC -u ZCRM_ACCOUNTS_URL -u ZCRM_API_DOMAIN -u ZCRM_VERSION -u ZCRM_CONCURRENCY "

local function sanitizer_env()
    local s = ""
    for _, k in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" } do
        local v = os.getenv(k)
        if v and v ~= "" then s = s .. k .. "=" .. q(v) .. " " end
    end
    return s
end

local function ids_to_text(ids) return table.concat(ids, "\n") .. "\n" end

local function lines(text)
    local t = {}
    for line in text:gmatch("[^\n]+") do t[#t + 1] = line end
    return t
end

local function decode_lines(text)
    local t = {}
    for i, line in ipairs(lines(text)) do t[i] = cjson.decode(line) end
    return t
end

-- The lines of a journal that decode (a line cut short by a kill does not).
local function journal_lines(text)
    local t = {}
    for _, line in ipairs(lines(text)) do
        local ok, rec = pcall(cjson.decode, line)
        if ok then t[#t + 1] = rec end
    end
    return t
end

local function count(t, pred)
    local n = 0
    for _, v in ipairs(t) do if pred(v) then n = n + 1 end end
    return n
end

local function wait_until(what, fn, timeout)
    local deadline = socket.gettime() + (timeout or 10)
    while not fn() do
        if socket.gettime() > deadline then error("timed out waiting for " .. what, 2) end
        socket.sleep(0.005)
    end
end

-- The ids of a logged delink request: ?ids=a,b,c or the /{id} form.
local function logged_ids(entry)
    local list = entry.uri:match("[?&]ids=([^&]*)")
    local ids = {}
    if list then
        for id in list:gmatch("[^,]+") do ids[#ids + 1] = id end
    else
        ids[1] = entry.uri:match("/Price_Books/(%d+)$")
    end
    return ids
end

describe("zcrm command", function()
    local sim, dir, serial = nil, nil, 0

    setup(function()
        sim = simulator.start()
        dir = nginx.mktemp("zcrm-cli")
    end)
    teardown(function()
        if sim then sim:stop() end
        if dir then nginx.run(nginx.clean("rm -rf " .. q(dir))) end
    end)
    before_each(function()
        sim:reset()
        sim:add_token(TOKEN, { expires_in = 3600 })
    end)

    local function file(name, text, mode)
        local path = dir .. "/" .. name
        nginx.write_file(path, text)
        if mode then assert(nginx.run("chmod " .. mode .. " " .. q(path))) end
        return path
    end

    -- The shell command running zcrm with args (a list of words) and env (a table).
    local function command(args, env, extra)
        local words = {}
        for i, a in ipairs(args) do words[i] = q(a) end
        local vars = ""
        for k, v in pairs(env or {}) do vars = vars .. k .. "=" .. q(v) .. " " end
        return "cd " .. q(ROOT) .. " && env LUA_PATH=" .. q(ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;;")
            .. " LUA_CPATH=" .. q(core_cpath() .. ";;") .. " " .. sanitizer_env() .. vars
            .. (extra or (LUA .. " bin/zcrm")) .. " " .. table.concat(words, " ")
    end

    local function paths()
        serial = serial + 1
        local p = dir .. "/run" .. serial
        return { out = p .. ".out", err = p .. ".err", rc = p .. ".rc", pid = p .. ".pid", stdin = p .. ".in" }
    end

    -- Runs zcrm to its end: {status, out, err}. o.stdin: text for its standard input.
    local function zcrm_run(args, env, o)
        o = o or {}
        local p = paths()
        nginx.write_file(p.stdin, o.stdin or "")
        nginx.run(SCRUB .. "sh -c " .. q(command(args, env, o.launcher) .. " <" .. q(p.stdin) .. " >" .. q(p.out)
            .. " 2>" .. q(p.err) .. "; echo $? >" .. q(p.rc)))
        return { status = tonumber(nginx.read_file(p.rc)), out = nginx.read_file(p.out) or "",
                 err = nginx.read_file(p.err) or "" }
    end

    -- Starts zcrm in the background: its paths, with p.pid (the zcrm process) once known.
    local function zcrm_start(args, env)
        local p = paths()
        nginx.run(SCRUB .. "sh -c " .. q("{ " .. command(args, env) .. " </dev/null >" .. q(p.out) .. " 2>" .. q(p.err)
            .. " & echo $! >" .. q(p.pid) .. "; wait $!; echo $? >" .. q(p.rc) .. "; }") .. " >/dev/null 2>&1 &")
        wait_until("the pid file", function() return (nginx.read_file(p.pid) or ""):match("%d+") end)
        p.pid_number = tonumber(nginx.read_file(p.pid):match("%d+"))
        return p
    end

    local function finished(p)
        wait_until("zcrm to exit", function() return (nginx.read_file(p.rc) or ""):match("%d+") end, 20)
        return { status = tonumber(nginx.read_file(p.rc)), out = nginx.read_file(p.out) or "",
                 err = nginx.read_file(p.err) or "" }
    end

    local function env_token(more)
        local e = { ZCRM_ACCESS_TOKEN = TOKEN, ZCRM_API_DOMAIN = sim.url }
        for k, v in pairs(more or {}) do e[k] = v end
        return e
    end

    local function delink_args(...)
        local args = { "delink", "Products", PRODUCT, "Price_Books" }
        for _, a in ipairs { ... } do args[#args + 1] = a end
        return args
    end

    local function left()
        return sim:relations("Products", PRODUCT, "Price_Books")
    end

    -- The journal's records, decoded (a run may be writing its last line: only whole ones).
    local function journal(path)
        return journal_lines(nginx.read_file(path) or "")
    end

    describe("usage", function()
        it("prints its help and version", function()
            local r = zcrm_run({ "--help" })
            assert.equal(0, r.status)
            assert.matches("zcrm delink MODULE RECORD_ID RELATED_LIST %[IDS%.%.%.%]", r.out)
            assert.matches("%-%-ids%-file FILE", r.out)
            assert.equal("", r.err)
            r = zcrm_run(delink_args("--help"))
            assert.equal(0, r.status)
            assert.matches("Exit status: 0 all delinked, 1 some ids failed", r.out)
            r = zcrm_run({ "--version" })
            assert.equal(0, r.status)
            assert.matches("^zcrm " .. zcrm._VERSION:gsub("%.", "%%.") .. " %(", r.out)
        end)

        for _, case in ipairs {
            { {}, "no command" },
            { { "unlink" }, "unknown command \"unlink\"" },
            { { "delink", "Products", PRODUCT }, "needs MODULE RECORD_ID RELATED_LIST" },
            { delink_args(), "no ids: give them as arguments or with %-%-ids%-file FILE" },
            { delink_args("1", "--bogus"), "unknown option %-%-bogus" },
            { delink_args("1", "--output", "xml"), "%-%-output must be tsv, jsonl or json" },
            { delink_args("1", "--concurrency", "26"), "concurrency must be an integer from 1 to 25" },
            { delink_args("1", "--concurrency"), "%-%-concurrency needs a value" },
            { delink_args("1", "--column", "Id"), "%-%-column needs %-%-ids%-file" },
            { delink_args("1", "--ids-file", "x"), "not both" },
            { delink_args("1", "--dc", "mars"), "unknown data centre \"mars\"" },
            { delink_args("1", "--api-domain", "http://example.com"), "https" },
            { delink_args("1", "--access-token", "1000.abc"), "credentials are not taken from the command line" },
            { delink_args("1", "--client-secret=abc"), "other users see it in ps" },
        } do
            it("exits 2 and sends nothing: " .. table.concat(case[1], " "), function()
                local r = zcrm_run(case[1], env_token())
                assert.equal(2, r.status, r.err)
                assert.matches(case[2], r.err)
                assert.equal("", r.out)
                assert.equal(0, sim:counters().requests)
            end)
        end

        it("exits 2 with a clear message when no credentials are set", function()
            sim:seed("Products", PRODUCT, "Price_Books", { "11" })
            local r = zcrm_run(delink_args("11"), { ZCRM_API_DOMAIN = sim.url })
            assert.equal(2, r.status)
            assert.matches("no credentials: set ZCRM_ACCESS_TOKEN, or ZCRM_CLIENT_ID, ZCRM_CLIENT_SECRET", r.err)
            local counters = sim:counters()
            assert.equal(0, counters.requests)
            assert.equal(0, counters.token_requests)
            r = zcrm_run(delink_args("11"), { ZCRM_API_DOMAIN = sim.url, ZCRM_CLIENT_ID = "c", ZCRM_REFRESH_TOKEN = "r" })
            assert.equal(2, r.status)
            assert.matches("ZCRM_CLIENT_SECRET is missing", r.err)
            assert.same({ "11" }, left())
        end)

        it("runs from its #! line under lua5.4", function()
            local core54 = ROOT .. "/build/5.4/zcrm/core.so"
            if not nginx.read_file(core54) then return pending("no " .. core54 .. ": run make first") end
            local p = paths()
            nginx.run(SCRUB .. "sh -c " .. q("cd " .. q(ROOT) .. " && LUA_PATH='./lua/?.lua;./lua/?/init.lua;;'"
                .. " LUA_CPATH='./build/5.4/?.so;;' bin/zcrm --version >" .. q(p.out) .. " 2>&1"))
            assert.matches("^zcrm " .. zcrm._VERSION:gsub("%.", "%%.") .. " %(Lua 5%.4%)", nginx.read_file(p.out))
        end)
    end)

    describe("ids and output", function()
        it("takes ids as arguments and prints one tsv line per id", function()
            sim:seed("Products", PRODUCT, "Price_Books", { "11", "12", "13" })
            local r = zcrm_run(delink_args("11", "12", "11"), env_token())
            assert.equal(0, r.status, r.err)
            assert.same({ "11\tsuccess\tSUCCESS\trelation removed", "12\tsuccess\tSUCCESS\trelation removed" }, lines(r.out))
            assert.matches("zcrm: 2 ids: 2 delinked in [%d.]+ s; 1 duplicate id given again, sent once\n", r.err)
            assert.same({ "13" }, left())
            assert.same({ 2 }, sim:counters().ids_per_request)
            assert.equal("Zoho-oauthtoken " .. TOKEN, sim:log()[1].authorization)
        end)

        it("reads --ids-file (blank lines, spaces, CRLF) and prints jsonl", function()
            local ids = h.ids(250)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local text = "\n" .. ids[1] .. "\r\n  " .. ids[2] .. "  \n\n" .. table.concat(ids, "\n", 3) .. "\n"
            local r = zcrm_run(delink_args("--ids-file", file("ids.txt", text), "--output", "jsonl"), env_token())
            assert.equal(0, r.status, r.err)
            local records = decode_lines(r.out)
            assert.equal(250, #records)
            for i, rec in ipairs(records) do
                assert.same({ id = ids[i], status = "success", code = "SUCCESS", message = "relation removed" }, rec)
            end
            assert.same({}, left())
            local per_call = sim:counters().ids_per_request
            table.sort(per_call)
            assert.same({ 50, 100, 100 }, per_call)
        end)

        it("reads standard input with --ids-file - and prints one json document", function()
            local ids = h.ids(5)
            sim:seed("Products", PRODUCT, "Price_Books", { ids[1], ids[2], ids[3], ids[4] })
            local r = zcrm_run(delink_args("--ids-file", "-", "--output", "json"), env_token(),
                               { stdin = ids_to_text(ids) })
            assert.equal(1, r.status, r.err)
            local doc = cjson.decode(r.out)
            assert.equal(5, #doc)
            assert.same({ id = ids[5], status = "error", code = "INVALID_DATA",
                          message = "the related id given seems to be invalid" }, doc[5])
            assert.equal("success", doc[1].status)
            assert.matches("zcrm: 5 ids: 4 delinked, 1 failed %(INVALID_DATA 1%)", r.err)
            assert.same({}, left())
        end)

        it("takes the ids of a CSV column (BOM, CRLF, quoted fields with commas and line breaks)", function()
            local ids = h.ids(4)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local csv = "\239\187\191Name,\"Price Book Id\",Note\r\n"
                .. "\"Gold, 2024\"," .. ids[1] .. ",x\r\n"
                .. "Silver,\"" .. ids[2] .. "\",\"two\nlines\"\r\n"
                .. "\r\n"
                .. "\"Say \"\"hi\"\"\"," .. ids[3] .. ",\n"
                .. "Last," .. ids[4] .. ",end"
            local r = zcrm_run(delink_args("--ids-file", file("books.csv", csv), "--column", "Price Book Id"), env_token())
            assert.equal(0, r.status, r.err)
            local got = {}
            for i, line in ipairs(lines(r.out)) do got[i] = line:match("^(%d+)\tsuccess\t") end
            assert.same(ids, got)
            assert.same({}, left())
        end)

        it("reports CSV problems with their line numbers and sends nothing", function()
            local csv = "Id,Name\n11,a\n\"12\",\"b\"\n,c\n13\n1x4,d\n"
            local r = zcrm_run(delink_args("--ids-file", file("bad.csv", csv), "--column", "Id"), env_token())
            assert.equal(2, r.status)
            assert.matches("bad%.csv:4: column \"Id\" is empty", r.err)
            assert.matches("bad%.csv:6: \"1x4\" is not a record id", r.err)
            assert.matches("nothing was sent", r.err)
            r = zcrm_run(delink_args("--ids-file", file("bad.csv", csv), "--column", "Record Id"), env_token())
            assert.equal(2, r.status)
            assert.matches("bad%.csv:1: no column \"Record Id\" in the header row %(columns: \"Id\", \"Name\"%)", r.err)
            assert.equal(0, sim:counters().requests)
        end)

        it("reports bad ids with file and line number before anything is sent", function()
            local ids = h.ids(1300)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            ids[1207] = "12a4"
            ids[5] = "-3"
            local r = zcrm_run(delink_args("--ids-file", file("ids.txt", ids_to_text(ids))), env_token())
            assert.equal(2, r.status)
            assert.same({ 'zcrm: ' .. dir .. '/ids.txt:5: "-3" is not a record id (1 to 19 digits)',
                          'zcrm: ' .. dir .. '/ids.txt:1207: "12a4" is not a record id (1 to 19 digits)',
                          "zcrm: nothing was sent" }, lines(r.err))
            assert.equal("", r.out)
            r = zcrm_run(delink_args("--ids-file", "-"), env_token(), { stdin = "11\n\n1 2\n" })
            assert.equal(2, r.status)
            assert.matches('stdin:3: "1 2" is not a record id', r.err)
            r = zcrm_run(delink_args("11", "12", "x"), env_token())
            assert.equal(2, r.status)
            assert.matches('argument 7: "x" is not a record id', r.err)
            r = zcrm_run({ "delink", "Products", "12x", "Price_Books", "11" }, env_token())
            assert.equal(2, r.status)
            assert.matches('record id "12x" is not a record id', r.err)
            assert.equal(0, sim:counters().requests)
            assert.equal(1300, #left())
        end)

        it("exits 1 when some ids fail, with a summary on stderr that --quiet drops", function()
            sim:seed("Products", PRODUCT, "Price_Books", { "11" })
            local r = zcrm_run(delink_args("11", "12", "13"), env_token())
            assert.equal(1, r.status)
            assert.same({ "11\tsuccess\tSUCCESS\trelation removed",
                          "12\terror\tINVALID_DATA\tthe related id given seems to be invalid",
                          "13\terror\tINVALID_DATA\tthe related id given seems to be invalid" }, lines(r.out))
            assert.matches("zcrm: 3 ids: 1 delinked, 2 failed %(INVALID_DATA 2%)", r.err)
            r = zcrm_run(delink_args("12", "--quiet"), env_token())
            assert.equal(1, r.status)
            assert.equal("", r.err)
            assert.equal("12\terror\tINVALID_DATA\tthe related id given seems to be invalid\n", r.out)
        end)

        it("stops after a chunk refused as a whole: the rest is NOT_SENT, no more calls", function()
            local ids = h.ids(500)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local r = zcrm_run(delink_args("--ids-file", file("ids.txt", ids_to_text(ids)), "--concurrency", "1",
                                           "--output", "jsonl"), env_token { ZCRM_ACCESS_TOKEN = "1000.revoked" })
            assert.equal(1, r.status)
            local records = decode_lines(r.out)
            assert.equal(500, #records)
            assert.equal(100, count(records, function(x) return x.code == "INVALID_TOKEN" end))
            assert.equal(400, count(records, function(x) return x.code == "NOT_SENT" end))
            assert.matches("every call of the last chunk was refused %(INVALID_TOKEN: invalid oauth token%)", r.err)
            assert.equal(1, sim:counters().requests)
            assert.equal(500, #left())
        end)
    end)

    describe("credentials", function()
        it("does the OAuth grant from the environment once", function()
            local ids = h.ids(300)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            sim:oauth_client { client_id = "cli-client", client_secret = "cli-secret-0123456789",
                               refresh_token = "cli-refresh-0123456789" }
            local r = zcrm_run(delink_args("--ids-file", file("ids.txt", ids_to_text(ids))), {
                ZCRM_CLIENT_ID = "cli-client", ZCRM_CLIENT_SECRET = "cli-secret-0123456789",
                ZCRM_REFRESH_TOKEN = "cli-refresh-0123456789", ZCRM_ACCOUNTS_URL = sim.url, ZCRM_API_DOMAIN = sim.url,
            })
            assert.equal(0, r.status, r.err)
            assert.equal(300, #lines(r.out))
            local counters = sim:counters()
            assert.equal(1, counters.token_grants)
            assert.equal(3, counters.requests)
            assert.same({}, left())
        end)

        it("refuses a config file holding secrets that group or others can read", function()
            sim:seed("Products", PRODUCT, "Price_Books", { "11", "12" })
            local text = "# zcrm\naccess_token = " .. TOKEN .. "\napi_domain = \"" .. sim.url .. "\"\n"
            for _, mode in ipairs { "644", "640", "604" } do
                local path = file("zcrm-" .. mode .. ".conf", text, mode)
                local r = zcrm_run(delink_args("11", "--config", path), {})
                assert.equal(2, r.status)
                assert.matches("config " .. nginx.pattern_escape(path) .. " holds secrets and is readable by group or "
                               .. "others %(mode " .. mode .. "%): refused", r.err)
                assert.matches("chmod 600", r.err)
            end
            assert.equal(0, sim:counters().requests)
            local r = zcrm_run(delink_args("11", "--config", file("zcrm-600.conf", text, "600")), {})
            assert.equal(0, r.status, r.err)
            assert.same({ "12" }, left())
            -- Settings without secrets may be readable; the token then comes from the environment.
            r = zcrm_run(delink_args("12", "--config", file("public.conf", "ZCRM_API_DOMAIN=" .. sim.url .. "\n", "644")),
                         { ZCRM_ACCESS_TOKEN = TOKEN, ZCRM_API_DOMAIN = "http://127.0.0.1:1" })
            assert.equal(0, r.status, r.err)
            assert.same({}, left())
        end)

        it("reports a bad config line with its number", function()
            local r = zcrm_run(delink_args("11", "--config", file("typo.conf", "api_domain = x\nacces_token = y\n", "600")),
                               env_token())
            assert.equal(2, r.status)
            assert.matches("typo%.conf:2: unknown key \"acces_token\"", r.err)
        end)
    end)

    describe("--dry-run", function()
        it("prints the calls with the token masked and sends nothing", function()
            local ids = h.ids(250)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local r = zcrm_run(delink_args("--ids-file", file("ids.txt", ids_to_text(ids)), "--dry-run"), env_token())
            assert.equal(0, r.status, r.err)
            local calls = lines(r.out)
            assert.equal(3, #calls)
            local base = "DELETE " .. sim.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books?ids="
            assert.equal(base .. table.concat(ids, ",", 1, 100) .. "  (Authorization: Zoho-oauthtoken ****cdef)", calls[1])
            assert.equal(base .. table.concat(ids, ",", 201, 250) .. "  (Authorization: Zoho-oauthtoken ****cdef)", calls[3])
            assert.is_nil(r.out:find(TOKEN, 1, true))
            assert.is_nil(r.err:find(TOKEN, 1, true))
            assert.matches("dry run: 250 ids in 3 calls; nothing was sent", r.err)
            local counters = sim:counters()
            assert.equal(0, counters.requests)
            assert.equal(0, #sim:log())
            assert.equal(250, #left())
        end)

        it("shows the token grant it would make, without secrets, and does not make it", function()
            sim:oauth_client { client_id = "cli-client", client_secret = "cli-secret-0123456789",
                               refresh_token = "cli-refresh-0123456789" }
            local r = zcrm_run(delink_args("11", "--dry-run"), {
                ZCRM_CLIENT_ID = "cli-client", ZCRM_CLIENT_SECRET = "cli-secret-0123456789",
                ZCRM_REFRESH_TOKEN = "cli-refresh-0123456789", ZCRM_ACCOUNTS_URL = sim.url, ZCRM_API_DOMAIN = sim.url,
            })
            assert.equal(0, r.status, r.err)
            assert.same({ "POST " .. sim.url .. "/oauth/v2/token  (refresh-token grant for client_id cli-client; "
                          .. "client secret and refresh token not shown)",
                          "DELETE " .. sim.url .. "/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books/11"
                          .. "  (Authorization: Zoho-oauthtoken <the token from the grant>)" }, lines(r.out))
            assert.is_nil((r.out .. r.err):find("0123456789", 1, true))
            local counters = sim:counters()
            assert.equal(0, counters.token_requests)
            assert.equal(0, counters.requests)
        end)
    end)

    describe("progress", function()
        it("draws a progress line under a pseudo-terminal and none when stderr is a pipe", function()
            local ids = h.ids(600)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            sim:config { latency_ms = 40 }
            local list = file("ids.txt", ids_to_text(ids))
            local p = paths()
            -- script(1) gives zcrm a terminal for stdin, stdout and stderr; stdout goes to a file,
            -- so the transcript is what zcrm drew on its (terminal) stderr.
            nginx.run(SCRUB .. "script -q -e -c " .. q(command(delink_args("--ids-file", list, "--concurrency", "1"),
                env_token()) .. " >" .. q(p.out)) .. " /dev/null </dev/null >" .. q(p.err) .. " 2>&1; echo $? >" .. q(p.rc))
            assert.equal(0, tonumber(nginx.read_file(p.rc)))
            local screen = nginx.read_file(p.err)
            assert.equal(600, #lines(nginx.read_file(p.out)))
            assert.matches("\rzcrm: 0/600 ids %(0%%%), %- ids/s, 0 failed, ETA %-\27%[K", screen)
            assert.matches("\rzcrm: 300/600 ids %(50%%%), %d+ ids/s, 0 failed, ETA %d+:%d%d\27%[K", screen)
            assert.matches("\rzcrm: 600/600 ids %(100%%%), %d+ ids/s, 0 failed, ETA 0:00\27%[K", screen)
            assert.matches("\r\27%[Kzcrm: 600 ids: 600 delinked in", screen)

            sim:seed("Products", PRODUCT, "Price_Books", ids)
            local r = zcrm_run(delink_args("--ids-file", list, "--concurrency", "1"), env_token())
            assert.equal(0, r.status)
            assert.is_nil(r.err:find("\r", 1, true))
            assert.is_nil(r.err:find("ids/s", 1, true))
            assert.matches("^zcrm: 600 ids: 600 delinked in [%d.]+ s\n$", r.err)

            -- --quiet: no progress on a terminal either.
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            nginx.run(SCRUB .. "script -q -e -c " .. q(command(delink_args("--ids-file", list, "--quiet"), env_token())
                .. " >" .. q(p.out)) .. " /dev/null </dev/null >" .. q(p.err) .. " 2>&1")
            assert.equal("", nginx.read_file(p.err))
            assert.same({}, left())
        end)
    end)

    describe("--journal", function()
        local ids, list, jpath

        before_each(function()
            ids = h.ids(1200)
            sim:seed("Products", PRODUCT, "Price_Books", ids)
            list = file("ids.txt", ids_to_text(ids))
            serial = serial + 1
            jpath = dir .. "/run" .. serial .. ".journal"
        end)

        -- ids sent and answered according to the journal records
        local function journal_state(records)
            local sent, answered, order = {}, {}, {}
            for _, rec in ipairs(records) do
                if rec.type == "sent" then
                    for _, id in ipairs(rec.ids) do sent[id] = true; order[#order + 1] = id end
                elseif rec.type == "outcome" then
                    answered[rec.id] = rec
                end
            end
            return sent, answered, order
        end

        it("resumes a killed run: every id delinked, none missed, none delinked twice", function()
            sim:config { latency_ms = 250 }
            local args = delink_args("--ids-file", list, "--concurrency", "2", "--journal", jpath, "--output", "jsonl")
            local p = zcrm_start(args, env_token())
            -- Kill it with the third chunk's two calls in flight at the server.
            wait_until("a third chunk in flight", function()
                local sent = count(journal(jpath), function(x) return x.type == "sent" end)
                return sent >= 3 and sim:counters().in_flight == 2
            end, 15)
            assert(nginx.run("kill -KILL " .. p.pid_number))
            assert.equal(137, finished(p).status)
            -- The server finishes the calls the dead client was waiting for.
            wait_until("the server's calls to end", function()
                local c = sim:counters()
                return c.in_flight == 0 and #sim:log() == c.requests
            end)

            local first_run = journal(jpath)
            local sent, answered = journal_state(first_run)
            local n_sent, n_answered, lost = 0, 0, {}
            for id in pairs(sent) do
                n_sent = n_sent + 1
                if answered[id] then
                    n_answered = n_answered + 1
                    assert.equal("success", answered[id].status)
                else
                    lost[id] = true
                end
            end
            assert.equal(600, n_sent)
            assert.equal(400, n_answered) -- the killed chunk's 200 ids have no outcome
            assert.equal(600, #left()) -- ...but the server removed them
            local log_before = #sim:log()

            sim:config { latency_ms = 0 }
            local r = zcrm_run(args, env_token())
            assert.equal(0, r.status, r.err)
            local records = decode_lines(r.out)
            assert.equal(1200, #records)
            local by_code = {}
            for _, rec in ipairs(records) do
                assert.equal("success", rec.status)
                by_code[rec.code] = (by_code[rec.code] or 0) + 1
                if lost[rec.id] then assert.equal("ALREADY_REMOVED", rec.code) end
                if answered[rec.id] then assert.equal("delinked by an earlier run (journal)", rec.message) end
            end
            assert.same({ SUCCESS = 1000, ALREADY_REMOVED = 200 }, by_code)
            assert.matches("1200 ids: 1200 delinked %(400 per the journal, 200 found removed after a lost answer%)", r.err)
            assert.same({}, left())

            -- The server's view: the re-run sent only what the journal had not seen answered;
            -- every id went out, and only the 200 lost ones twice (answered "not related" then).
            local times = {}
            for i, entry in ipairs(sim:log()) do
                for _, id in ipairs(logged_ids(entry)) do
                    times[id] = (times[id] or 0) + 1
                    if i > log_before then assert.is_nil(answered[id], "re-sent after a recorded success: " .. id) end
                end
            end
            for _, id in ipairs(ids) do
                assert.equal(lost[id] and 2 or 1, times[id], id)
            end

            -- A third run finds everything done: no call at all.
            local requests = sim:counters().requests
            r = zcrm_run(args, env_token())
            assert.equal(0, r.status)
            assert.equal(1200, count(decode_lines(r.out), function(x) return x.status == "success" end))
            assert.equal(requests, sim:counters().requests)
        end)

        it("stops after the calls in flight on SIGINT, with every sent id journaled, and exits 130", function()
            sim:config { latency_ms = 200 }
            local p = zcrm_start(delink_args("--ids-file", list, "--concurrency", "2", "--journal", jpath, "--output",
                                             "tsv"), env_token())
            wait_until("a first chunk answered", function()
                return count(journal(jpath), function(x) return x.type == "outcome" end) >= 200
            end, 15)
            assert(nginx.run("kill -INT " .. p.pid_number))
            local r = finished(p)
            assert.equal(130, r.status, r.err)
            local sent, answered, order = journal_state(journal(jpath))
            for id in pairs(sent) do assert.is_table(answered[id], "sent without an outcome: " .. id) end
            local n_sent = #order
            assert.is_true(n_sent >= 200 and n_sent < 1200 and n_sent % 200 == 0, tostring(n_sent))
            local out = lines(r.out)
            assert.equal(1200, #out)
            for i, line in ipairs(out) do
                if i <= n_sent then
                    assert.equal(ids[i] .. "\tsuccess\tSUCCESS\trelation removed", line)
                else
                    assert.equal(ids[i] .. "\terror\tNOT_SENT\tnot sent: interrupted", line)
                end
            end
            assert.matches("interrupted %(SIGINT%): stopped after the calls in flight", r.err)
            assert.matches(n_sent .. " delinked, " .. (1200 - n_sent) .. " not sent", r.err)
            assert.equal(1200 - n_sent, #left())
            assert.equal(n_sent / 100, sim:counters().requests)
        end)

        it("retries failed ids on a re-run and skips delinked ones; an answered 'not related' stays an error", function()
            sim:reset()
            sim:add_token(TOKEN, { expires_in = 3600 })
            sim:seed("Products", PRODUCT, "Price_Books", { "11", "12" })
            local args = delink_args("11", "12", "13", "14", "--journal", jpath)
            local r = zcrm_run(args, env_token())
            assert.equal(1, r.status)
            assert.matches("re%-run with %-%-journal " .. nginx.pattern_escape(jpath) .. " to retry only what is not", r.err)
            sim:seed("Products", PRODUCT, "Price_Books", { "13" }) -- 13 is related now, 14 still not
            r = zcrm_run(args, env_token())
            assert.equal(1, r.status)
            assert.same({ "11\tsuccess\tSUCCESS\tdelinked by an earlier run (journal)",
                          "12\tsuccess\tSUCCESS\tdelinked by an earlier run (journal)",
                          "13\tsuccess\tSUCCESS\trelation removed",
                          "14\terror\tINVALID_DATA\tthe related id given seems to be invalid" }, lines(r.out))
            local log = sim:log()
            assert.equal("/crm/v2.1/Products/" .. PRODUCT .. "/Price_Books?ids=13,14", log[#log].uri)
            assert.equal(2, #log)
        end)

        it("survives a journal line cut short by a kill: its ids count as unanswered", function()
            sim:reset()
            sim:add_token(TOKEN, { expires_in = 3600 })
            sim:seed("Products", PRODUCT, "Price_Books", { "13" }) -- 11 and 12 were removed by the killed run
            nginx.write_file(jpath, '{"type":"run","module":"Products","record":"' .. PRODUCT .. '","related":"Price_Books"}\n'
                .. '{"type":"sent","ids":["11","12","13"]}\n'
                .. '{"type":"outcome","id":"11","status":"success","code":"SUCCESS","message":"relation removed"}\n'
                .. '{"type":"outcome","id":"12","status":"succ')
            local r = zcrm_run(delink_args("11", "12", "13", "14", "--journal", jpath), env_token())
            assert.equal(1, r.status)
            assert.same({ "11\tsuccess\tSUCCESS\tdelinked by an earlier run (journal)",
                          "12\tsuccess\tALREADY_REMOVED\tremoved by an earlier run that stopped before its answer came",
                          "13\tsuccess\tSUCCESS\trelation removed",
                          "14\terror\tINVALID_DATA\tthe related id given seems to be invalid" }, lines(r.out))
            assert.matches("journal .*: 1 unreadable line%(s%) ignored", r.err)
            -- The cut line stays alone; every other line is whole JSON, the new run's included.
            local text = nginx.read_file(jpath)
            local bad = 0
            for line in text:gmatch("[^\n]+") do
                if not pcall(cjson.decode, line) then bad = bad + 1 end
            end
            assert.equal(1, bad)
            assert.equal(2, count(journal_lines(text), function(x) return x.type == "run" end))
        end)

        it("refuses a journal written for another record", function()
            nginx.write_file(jpath, '{"type":"run","module":"Products","record":"1","related":"Price_Books"}\n')
            local r = zcrm_run(delink_args("11", "--journal", jpath), env_token())
            assert.equal(2, r.status)
            assert.matches("is for Products 1 Price_Books, not Products " .. PRODUCT .. " Price_Books", r.err)
            assert.equal(0, sim:counters().requests)
        end)
    end)
end)
