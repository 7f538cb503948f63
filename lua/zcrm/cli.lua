-- zcrm.cli: the `zcrm` command (bin/zcrm): bulk delinks from the command line.
--
--   zcrm delink MODULE RECORD_ID RELATED_LIST [IDS...] [--ids-file FILE [--column NAME]] [options]
--
-- Everything that talks to Zoho or checks what Zoho accepts is the library's
-- (zcrm.new, client:delink, zcrm.oauth_refresh, zcrm.core.plan). This file parses the
-- command line, finds the settings and credentials, and runs the delinks in chunks of
-- concurrency x 100 ids, so that the journal and the progress line advance as calls
-- complete while `concurrency` calls stay in flight. zcrm.cli.input reads and checks
-- the ids, zcrm.cli.journal keeps the --journal file, zcrm.cli.report writes the
-- records, the progress line and the summary. README "Command line tool".
--
-- Exit status: 0 every id delinked, 1 some failed or were not sent, 2 usage,
-- configuration or input error (nothing sent), 128 + signal number when interrupted
-- (130 for Ctrl-C).

local zcrm = require "zcrm"
local core = require "zcrm.core"
local input = require "zcrm.cli.input"
local journal = require "zcrm.cli.journal"
local report = require "zcrm.cli.report"
local retry = require "zcrm.retry"

local type, ipairs, tostring, tonumber, setmetatable, getmetatable, error, xpcall, pcall =
    type, ipairs, tostring, tonumber, setmetatable, getmetatable, error, xpcall, pcall
local format, concat, floor = string.format, table.concat, math.floor
local stdout, stderr, getenv = io.stdout, io.stderr, os.getenv

local M = {}

local USAGE = [[
Usage: zcrm delink MODULE RECORD_ID RELATED_LIST [IDS...] [options]
       zcrm delink MODULE RECORD_ID RELATED_LIST --ids-file FILE [--column NAME] [options]
       zcrm --help | zcrm --version

Removes the relation between RECORD_ID of MODULE and each id in its RELATED_LIST
(Zoho CRM's Delink Related Records), e.g.
  zcrm delink Products 3477061000007606020 Price_Books --ids-file ids.txt --journal run.journal

Ids:
  IDS...               ids as arguments
  --ids-file FILE      one id per line (blank lines skipped); '-' reads standard input
  --column NAME        FILE is CSV with a header row: take the ids from column NAME

Options:
  --dc DC              data centre: us eu in au cn jp ca sa (API domain and accounts server)
  --api-domain URL     API domain (default: the data centre's, else https://www.zohoapis.com)
  --version V          API version (default v2.1)
  --concurrency N      calls in flight at once, 1 to 25 (default 4)
  --dry-run            print the calls it would make (token masked) and send nothing
  --output FORMAT      tsv (default), jsonl or json: one record per id on standard output
                       with id, status, code, message
  --quiet              no progress line and no summary on standard error
  --journal FILE       append every chunk's ids and outcomes to FILE (flushed as it goes);
                       re-running with the same FILE skips the ids already delinked
  --config FILE        read settings and credentials from FILE (key = value lines)
  --help               this text

Credentials never come from the command line. From the environment:
  ZCRM_ACCESS_TOKEN, or ZCRM_CLIENT_ID + ZCRM_CLIENT_SECRET + ZCRM_REFRESH_TOKEN
  (with ZCRM_DC or ZCRM_ACCOUNTS_URL); also ZCRM_API_DOMAIN, ZCRM_VERSION.
or from --config FILE, which must not be readable by group or others when it holds
secrets, with keys: access_token, client_id, client_secret, refresh_token, dc,
accounts_url, api_domain, version, concurrency (ZCRM_-prefixed names work too).
Command line options beat the config file, which beats the environment.

Credentials come whole from the config file when it holds any, else from the environment.

Each id gets one record: status success or error, and Zoho's code (SUCCESS,
INVALID_DATA, ...), or ALREADY_REMOVED (removed by an earlier run that was killed
before its answer came), or NOT_SENT (the run stopped before sending it).
Progress (ids done/total, ids/s, failures, ETA) is shown on standard error when it is
a terminal. Ctrl-C stops after the calls in flight (a second one kills).

Exit status: 0 all delinked, 1 some ids failed or were not sent (summary on standard
error), 2 usage, configuration or input error (nothing sent), 130 interrupted by
Ctrl-C (143 by SIGTERM).
]]

---------------------------------------------------------------------------
-- Planned exits: quit() unwinds to main with a status and a message.

local Exit = {}

local function quit(status, fmt, ...)
    error(setmetatable({ status = status, message = fmt and format(fmt, ...) }, Exit), 0)
end

local function usage(fmt, ...)
    quit(2, fmt .. "\n(zcrm --help shows the usage)", ...)
end

-- A message raised by the library (zcrm.new and friends raise on misconfiguration),
-- without the "file.lua:123: " position Lua adds.
local function raised(msg)
    return (tostring(msg):gsub("^[^\n]-%.lua:%d+: ", ""))
end

local function shell_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

---------------------------------------------------------------------------
-- Arguments.

local VALUE_OPTIONS = {
    ["ids-file"] = true, column = true, dc = true, ["api-domain"] = true, version = true,
    concurrency = true, output = true, config = true, journal = true,
}
local FLAG_OPTIONS = { ["dry-run"] = true, quiet = true, help = true }
local CREDENTIAL_OPTIONS = { token = true, ["access-token"] = true, ["client-id"] = true,
                             ["client-secret"] = true, ["refresh-token"] = true }

-- The delink command's arguments: positionals (with their argv index) and options.
local function parse_delink(argv, first)
    local opts, pos = {}, {}
    local i, only_positionals = first, false
    while i <= #argv do
        local a = argv[i]
        if only_positionals or a == "-" or a:sub(1, 1) ~= "-" then
            pos[#pos + 1] = { value = a, index = i }
        elseif a == "--" then
            only_positionals = true
        else
            local name, value = a:match("^%-%-([%w-]+)=(.*)$")
            name = name or a:match("^%-%-([%w-]+)$") or ({ ["-h"] = "help", ["-q"] = "quiet" })[a]
            if CREDENTIAL_OPTIONS[name] then
                usage("--%s: credentials are not taken from the command line (other users see it in ps);\n"
                      .. "set ZCRM_ACCESS_TOKEN or ZCRM_CLIENT_ID/ZCRM_CLIENT_SECRET/ZCRM_REFRESH_TOKEN, or use --config FILE",
                      name)
            elseif VALUE_OPTIONS[name] then
                if not value then
                    i = i + 1
                    value = argv[i]
                    if value == nil then usage("--%s needs a value", name) end
                end
                if opts[name] ~= nil then usage("--%s is given twice", name) end
                opts[name] = value
            elseif FLAG_OPTIONS[name] and not value then
                opts[name] = true
            else
                usage("unknown option %s", a)
            end
        end
        i = i + 1
    end
    return opts, pos
end

local function check_options(opts, pos)
    if #pos < 3 then usage("zcrm delink needs MODULE RECORD_ID RELATED_LIST, then ids or --ids-file FILE") end
    if opts["ids-file"] and #pos > 3 then usage("give ids as arguments or with --ids-file, not both") end
    if not opts["ids-file"] and #pos == 3 then usage("no ids: give them as arguments or with --ids-file FILE") end
    if opts.column and not opts["ids-file"] then usage("--column needs --ids-file (a CSV file)") end
    opts.output = opts.output or "tsv"
    if not report.FORMATS[opts.output] then usage("--output must be tsv, jsonl or json, not %q", opts.output) end
end

---------------------------------------------------------------------------
-- Settings and credentials: command line > --config file > environment.

local CONFIG_KEYS = {
    access_token = "secret", client_secret = "secret", refresh_token = "secret", client_id = "plain",
    dc = "plain", accounts_url = "plain", api_domain = "plain", version = "plain", concurrency = "plain",
}

-- Lua has no stat(2): the permission bits come from stat(1), following symlinks.
local function file_mode(path)
    local p = io.popen("stat -L -c %a -- " .. shell_quote(path) .. " 2>/dev/null")
    local out = p and p:read("*a") or ""
    if p then p:close() end
    return out:match("^(%d+)%s*$")
end

-- A file holding secrets must be readable by its owner only (as ssh asks of its keys).
local function check_private(path)
    local mode = file_mode(path)
    if not mode then quit(2, "config %s: cannot read its permissions (stat)", path) end
    local group, other = tonumber(mode:sub(-2, -2)) or 0, tonumber(mode:sub(-1)) or 0
    if group % 8 >= 4 or other % 8 >= 4 then
        quit(2, "config %s holds secrets and is readable by group or others (mode %s): refused;\n"
                .. "run: chmod 600 %s", path, mode, shell_quote(path))
    end
end

-- key = value lines; '#' comments; values may be quoted.
local function read_config(path)
    local f, err = io.open(path, "rb")
    if not f then quit(2, "config: %s", err) end
    local conf, has_secret, n = {}, false, 0
    for line in f:lines() do
        n = n + 1
        line = line:gsub("\r$", "")
        if not line:match("^%s*$") and not line:match("^%s*#") then
            local key, value = line:match("^%s*([%w_]+)%s*=%s*(.-)%s*$")
            if not key then f:close() quit(2, "%s:%d: expected key = value", path, n) end
            key = key:lower():gsub("^zcrm_", "")
            if not CONFIG_KEYS[key] then
                f:close()
                quit(2, "%s:%d: unknown key %q (known: access_token, client_id, client_secret, refresh_token, "
                        .. "dc, accounts_url, api_domain, version, concurrency)", path, n, key)
            end
            if conf[key] then f:close() quit(2, "%s:%d: %s is given twice", path, n, key) end
            value = value:match('^"(.*)"$') or value:match("^'(.*)'$") or value
            if value == "" then f:close() quit(2, "%s:%d: %s is empty", path, n, key) end
            conf[key] = value
            has_secret = has_secret or CONFIG_KEYS[key] == "secret"
        end
    end
    f:close()
    if has_secret then check_private(path) end
    return conf
end

local function env(name)
    local v = getenv(name)
    if v == "" then return nil end
    return v
end

local function integer_in(s, what, lo, hi)
    local n = tonumber(s)
    if not n or n ~= floor(n) or n < lo or n > hi then usage("%s must be an integer from %d to %d, not %q", what, lo, hi, s) end
    return n
end

-- Credentials come whole from one place: the config file when it holds any, else the
-- environment (never a token from one and a secret from the other).
local function credentials(conf, config_path)
    local src, name
    if conf.access_token or conf.client_id or conf.client_secret or conf.refresh_token then
        src = conf
        name = function(k) return k .. " in " .. config_path end
    else
        src = { access_token = env("ZCRM_ACCESS_TOKEN"), client_id = env("ZCRM_CLIENT_ID"),
                client_secret = env("ZCRM_CLIENT_SECRET"), refresh_token = env("ZCRM_REFRESH_TOKEN") }
        name = function(k) return "ZCRM_" .. k:upper() end
    end
    local oauth = src.client_id or src.client_secret or src.refresh_token
    if oauth then
        for _, k in ipairs { "client_id", "client_secret", "refresh_token" } do
            if not src[k] then
                quit(2, "%s is missing: the OAuth refresh-token grant needs client id, client secret and refresh token",
                     name(k))
            end
        end
    elseif not src.access_token then
        quit(2, "no credentials: set ZCRM_ACCESS_TOKEN, or ZCRM_CLIENT_ID, ZCRM_CLIENT_SECRET and\n"
                .. "ZCRM_REFRESH_TOKEN (with ZCRM_DC or ZCRM_ACCOUNTS_URL), or give --config FILE")
    end
    return src, oauth and true or false
end

-- The API domain and accounts server: each source (command line, config file,
-- environment) may name a data centre and override either URL; per URL, the first
-- source that says anything wins.
local function servers(opts, conf)
    local api_domain, accounts
    for _, src in ipairs {
        { where = "--dc", dc = opts.dc, api_domain = opts["api-domain"] },
        { where = "dc in " .. tostring(opts.config), dc = conf.dc, api_domain = conf.api_domain,
          accounts_url = conf.accounts_url },
        { where = "ZCRM_DC", dc = env("ZCRM_DC"), api_domain = env("ZCRM_API_DOMAIN"),
          accounts_url = env("ZCRM_ACCOUNTS_URL") },
    } do
        local centre = src.dc and zcrm.data_centres[src.dc]
        if src.dc and not centre then
            usage("unknown data centre %q (%s; known: us, eu, in, au, cn, jp, ca, sa)", src.dc, src.where)
        end
        api_domain = api_domain or src.api_domain or (centre and centre.api_domain)
        accounts = accounts or src.accounts_url or (centre and centre.accounts)
    end
    return api_domain, accounts or zcrm.data_centres.us.accounts
end

-- The client, and what a dry run says about its credentials. Nothing is sent here.
local function make_client(opts)
    local conf = opts.config and read_config(opts.config) or {}
    local api_domain, accounts = servers(opts, conf)
    local concurrency = opts.concurrency or conf.concurrency
    local creds, oauth = credentials(conf, opts.config)
    local new_opts = {
        api_domain = api_domain,
        version = opts.version or conf.version or env("ZCRM_VERSION"),
        concurrency = concurrency and integer_in(concurrency, "concurrency", 1, core.MAX_CONCURRENCY),
        token = creds.access_token,
    }
    -- zcrm.new and zcrm.oauth_refresh raise on a bad setting (an http URL, a bad version).
    local ok, client = pcall(function()
        if oauth then
            new_opts.refresh = zcrm.oauth_refresh { client_id = creds.client_id, client_secret = creds.client_secret,
                                                    refresh_token = creds.refresh_token, accounts_url = accounts }
        end
        return zcrm.new(new_opts)
    end)
    if not ok then quit(2, "%s", raised(client)) end
    return client, { token = creds.access_token, oauth = oauth, client_id = creds.client_id,
                     token_url = accounts:gsub("/$", "") .. "/oauth/v2/token" }
end

---------------------------------------------------------------------------
-- Outcomes.

-- The library-wide rule for answers lost in flight (zcrm.retry.removed_before, which
-- client:delink applies to its own retries), across runs: a run killed with calls in
-- flight never learnt whether Zoho applied them (its journal has "sent" and no
-- outcome). When such an id is sent again and Zoho now answers, for that id, that it
-- is not related (INVALID_DATA naming the id: "the related id given seems to be
-- invalid"), the lost call removed it: a success, ALREADY_REMOVED. An id not sent
-- before that is not related stays an error.
local function removed_by_lost_call(entry, answer_lost)
    return answer_lost == true and entry.status == "error" and retry.removed_before(entry)
end

local function record_of(entry, answer_lost)
    if removed_by_lost_call(entry, answer_lost) then
        return { id = entry.id, status = "success", code = "ALREADY_REMOVED",
                 message = "removed by an earlier run that stopped before its answer came" }
    end
    return { id = entry.id, status = entry.status, code = tostring(entry.code), message = tostring(entry.message or "") }
end

-- A chunk in which every id failed alike with no per-id answer: Zoho refused the calls
-- as a whole (token, permission, module, related list) or the refresh failed. The next
-- chunks would be refused too, each perhaps costing a token grant (Zoho allows 10 in 10
-- minutes): stop there.
local function refused_as_whole(entries)
    local first = entries[1]
    if not first then return nil end
    for _, e in ipairs(entries) do
        if e.status == "success" or e.code ~= first.code or e.message ~= first.message then return nil end
        if type(e.details) == "table" and e.details.id ~= nil then return nil end
    end
    return first
end

---------------------------------------------------------------------------
-- The run.

local function slice(t, from, n)
    local s = {}
    for i = from, math.min(#t, from + n - 1) do s[#s + 1] = t[i] end
    return s
end

local function mask(token)
    if #token >= 16 then return "****" .. token:sub(-4) end
    return "****"
end

local function dry_run(client, creds, target, todo, skipped, quiet)
    local size = client.concurrency * zcrm.MAX_IDS_PER_CALL
    local auth = creds.token and mask(creds.token) or "<the token from the grant>"
    local lines, calls, grant = {}, 0, ""
    if creds.oauth and not creds.token then
        grant = " after a token grant"
        lines[1] = format("POST %s  (refresh-token grant for client_id %s; client secret and refresh token not shown)",
                          creds.token_url, creds.client_id)
    end
    for first = 1, #todo, size do
        local plan = assert(core.plan(client.api_domain, client.version, target[1], target[2], target[3],
                                      slice(todo, first, size)))
        for _, batch in ipairs(plan.batches) do
            calls = calls + 1
            lines[#lines + 1] = format("DELETE %s  (Authorization: Zoho-oauthtoken %s)", batch.url, auth)
        end
    end
    if #lines > 0 then stdout:write(concat(lines, "\n"), "\n") end
    stdout:flush()
    if not quiet then
        stderr:write(format("zcrm: dry run: %s in %s%s%s; nothing was sent\n", report.plural(#todo, "id"),
            report.plural(calls, "call"), grant,
            skipped > 0 and format(" (%d more delinked already, per the journal)", skipped) or ""))
    end
    return 0
end

local SIGNALS = { [2] = "SIGINT", [15] = "SIGTERM" }

-- The ids to send, and records for those an earlier run delinked (per the journal).
local function settled_before(distinct, state)
    local todo, done = {}, {}
    for _, id in ipairs(distinct) do
        local prev = state.done[id]
        if prev then
            done[#done + 1] = { id = id, status = "success", code = tostring(prev.code),
                                message = "delinked by an earlier run (journal)" }
        else
            todo[#todo + 1] = id
        end
    end
    return todo, done
end

-- Sends one chunk through the library: a record per id (the rule for lost answers
-- applied, the counts updated), and the library's entries.
local function send_chunk(run, chunk)
    local t = run.target
    local res, err = run.client:delink(t[1], t[2], t[3], chunk)
    local entries, records, st = res or {}, {}, run.st
    for i, id in ipairs(chunk) do
        local e = entries[i]
        if not e then -- nothing was sent (no token could be had): each id gets the reason
            e = { id = id, status = "error", code = err.code, message = err.message }
            entries[i] = e
        end
        local r = record_of(e, run.lost[id])
        records[i] = r
        if r.status == "success" then
            st.delinked = st.delinked + 1
            if r.code == "ALREADY_REMOVED" then st.already = st.already + 1 end
        else
            st.failed = st.failed + 1
            st.codes[r.code] = (st.codes[r.code] or 0) + 1
        end
    end
    return records, entries
end

-- Chunks of concurrency x 100 ids: each keeps `concurrency` calls in flight, and
-- between chunks the journal, the output and the progress line catch up and an
-- interrupt is noticed. Returns the index of the first id not sent.
local function send_all(run, todo)
    local st, log = run.st, run.log
    local size = run.client.concurrency * zcrm.MAX_IDS_PER_CALL
    local next_id = 1
    while next_id <= #todo do
        run.signal = core.interrupted()
        if run.signal then
            st.stop = format("interrupted (%s): stopped after the calls in flight", SIGNALS[run.signal] or run.signal)
            break
        end
        local chunk = slice(todo, next_id, size)
        if log then
            local ok, err = log:sent(chunk)
            if not ok then
                st.stop = err
                break
            end
        end
        next_id = next_id + #chunk
        local records, entries = send_chunk(run, chunk)
        if log then
            local ok, err = log:outcomes(records)
            if not ok then st.stop = err end
        end
        run.out:write(records)
        run.progress:show(st.delinked + st.failed, st.failed)
        local whole = next_id <= #todo and refused_as_whole(entries)
        if whole then
            st.stop = format("stopped: every call of the last chunk was refused (%s: %s)", tostring(whole.code),
                             tostring(whole.message))
        end
        if st.stop then break end
    end
    return next_id
end

local function delink(opts, pos)
    local target = { pos[1].value, pos[2].value, pos[3].value }
    local client, creds = make_client(opts)
    local ids, where, problems = input.read(opts, pos)
    if not ids then quit(2, "%s", where) end
    local distinct, duplicates = input.check(client, target, ids, where, problems)
    if not distinct then
        local why = duplicates -- nil, message: a line per problem
        quit(2, "%s\nzcrm: nothing was sent", (why:gsub("\n", "\nzcrm: ")))
    end

    local quiet = opts.quiet
    local state = { done = {}, lost = {}, bad = {} }
    if opts.journal then
        local err
        state, err = journal.load(opts.journal, target)
        if not state then quit(2, "%s", err) end
        if #state.bad > 0 and not quiet then
            stderr:write(format("zcrm: journal %s: %d unreadable line(s) ignored (a write cut short by a kill?)\n",
                                opts.journal, #state.bad))
        end
    end
    local todo, done_before = settled_before(distinct, state)
    local signal = core.interrupted()
    if signal then quit(128 + signal, "interrupted before anything was sent") end
    if opts["dry-run"] then return dry_run(client, creds, target, todo, #done_before, quiet) end

    local log
    if opts.journal then
        local err
        log, err = journal.open(state, target, client.api_domain, zcrm._VERSION)
        if not log then quit(2, "%s", err) end
    end
    local run = {
        client = client, target = target, lost = state.lost, log = log,
        out = report.output(opts.output),
        progress = report.progress(#distinct, #done_before, not quiet and report.stderr_is_terminal()),
        st = { total = #distinct, delinked = #done_before, skipped = #done_before, already = 0, failed = 0,
               not_sent = 0, codes = {}, duplicates = duplicates, start = report.now(), journal = opts.journal },
    }
    run.out:write(done_before)
    run.progress:show(#done_before, 0)
    local first_unsent = send_all(run, todo)

    -- Every id gets a record: those never sent say so.
    local unsent = {}
    for i = first_unsent, #todo do
        unsent[#unsent + 1] = { id = todo[i], status = "error", code = "NOT_SENT",
                                message = "not sent: " .. (run.signal and "interrupted" or "the run stopped") }
    end
    run.st.not_sent = #unsent
    run.out:write(unsent)
    run.out:close()
    if log then log:close() end
    run.progress:clear()
    if not quiet then report.summary(run.st) end
    if run.signal then return 128 + run.signal end
    return (run.st.failed > 0 or run.st.not_sent > 0) and 1 or 0
end

---------------------------------------------------------------------------
-- Entry point.

local function run(argv)
    local command = argv[1]
    if command == nil then usage("no command") end
    if command == "--help" or command == "-h" or command == "help" then
        stdout:write(USAGE)
        return 0
    end
    if command == "--version" then
        stdout:write(format("zcrm %s (%s)\n", zcrm._VERSION, rawget(_G, "jit") and jit.version or _VERSION))
        return 0
    end
    if command ~= "delink" then usage("unknown command %q (the command is: zcrm delink ...)", command) end
    local opts, pos = parse_delink(argv, 2)
    if opts.help then
        stdout:write(USAGE)
        return 0
    end
    check_options(opts, pos)
    -- Ctrl-C / SIGTERM now set a flag, read between chunks (a second one kills).
    local trapped, why = core.trap_interrupts()
    if not trapped then quit(2, "cannot trap interrupts: %s", tostring(why)) end
    return delink(opts, pos)
end

--- status = cli.main(argv): runs the command; argv as the interpreter's `arg`.
function M.main(argv)
    local ok, result = xpcall(run, function(e)
        if getmetatable(e) == Exit then return e end
        return debug.traceback(tostring(e), 2)
    end, argv or {})
    if ok then return result end
    if getmetatable(result) == Exit then
        if result.message then stderr:write("zcrm: ", result.message, "\n") end
        return result.status
    end
    local signal = core.interrupted()
    if signal then -- e.g. a read of standard input cut short by Ctrl-C
        stderr:write("zcrm: interrupted\n")
        return 128 + signal
    end
    stderr:write("zcrm: internal error: ", result, "\n")
    return 70
end

return M
