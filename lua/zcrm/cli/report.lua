-- zcrm.cli.report: what `zcrm delink` shows. Standard output carries one record per id
-- (id, status, code, message) as tsv, jsonl or json, and nothing else, so that it stays
-- machine-readable; standard error carries the progress line (only on a terminal) and
-- the summary.

local cjson = require "cjson.safe"

local setmetatable, tostring, ipairs, pairs, type = setmetatable, tostring, ipairs, pairs, type
local format, concat, floor = string.format, table.concat, math.floor
local stdout, stderr = io.stdout, io.stderr

local M = {}

M.FORMATS = { tsv = true, jsonl = true, json = true }

function M.json_string(s)
    return (cjson.encode(s):gsub("\\/", "/")) -- cjson escapes '/', which JSON allows but nobody needs
end
local json_string = M.json_string

--- text = report.json_record(r, type): {"id":…,"status":…,"code":…,"message":…} in that
-- order, with a leading "type" member when type is given (the journal's records).
function M.json_record(r, kind)
    return format('{%s"id":%s,"status":%s,"code":%s,"message":%s}', kind and '"type":"' .. kind .. '",' or "",
        json_string(r.id), json_string(r.status), json_string(r.code), json_string(r.message))
end
local json_record = M.json_record

-- ---- records on stdout -----------------------------------------------------------

local Output = {}
Output.__index = Output

--- out = report.output(format): out:write(records) as they settle, out:close() at the end.
function M.output(kind)
    return setmetatable({ kind = kind, count = 0 }, Output)
end

local function tsv_field(s)
    return (tostring(s):gsub("%c", " ")) -- a record is one line of four fields
end

function Output:write(records)
    local parts = {}
    for i, r in ipairs(records) do
        if self.kind == "tsv" then
            parts[i] = concat({ tsv_field(r.id), tsv_field(r.status), tsv_field(r.code), tsv_field(r.message) }, "\t")
                .. "\n"
        elseif self.kind == "jsonl" then
            parts[i] = json_record(r) .. "\n"
        else -- json: one array, streamed
            parts[i] = (self.count + i == 1 and "[\n" or ",\n") .. json_record(r)
        end
    end
    self.count = self.count + #records
    stdout:write(concat(parts))
    stdout:flush() -- a reader of the pipe, or a killed run, has every settled id
end

function Output:close()
    if self.kind == "json" then stdout:write(self.count == 0 and "[]\n" or "\n]\n") end
    stdout:flush()
end

-- ---- progress on stderr ----------------------------------------------------------

--- Seconds, with sub-second precision where Linux gives it (os.time counts whole seconds).
function M.now()
    local f = io.open("/proc/uptime", "rb")
    if f then
        local s = f:read("*n")
        f:close()
        if s then return s end
    end
    return os.time()
end
local now = M.now

--- Whether stderr is a terminal (Lua has no isatty: test(1) has).
function M.stderr_is_terminal()
    local a = os.execute("test -t 2")
    if type(a) == "number" then return a == 0 end -- Lua 5.1 / LuaJIT
    return a == true
end

local function duration(s)
    s = floor(s + 0.5)
    if s >= 3600 then return format("%d:%02d:%02d", floor(s / 3600), floor(s / 60) % 60, s % 60) end
    return format("%d:%02d", floor(s / 60), s % 60)
end

local Progress = {}
Progress.__index = Progress

--- progress = report.progress(total, skipped, enabled): progress:show(done, failed) redraws
-- "zcrm: done/total ids (p%), rate ids/s, failed, ETA" in place; progress:clear() erases it.
-- skipped: ids settled before sending (the journal), left out of the rate.
function M.progress(total, skipped, enabled)
    return setmetatable({ total = total, skipped = skipped, enabled = enabled, start = now() }, Progress)
end

function Progress:show(done, failed)
    if not self.enabled then return end
    local elapsed, sent = now() - self.start, done - self.skipped
    local rate, eta = "-", "-"
    if elapsed > 0 and sent > 0 then
        local per_s = sent / elapsed
        rate = format("%.0f", per_s)
        eta = duration((self.total - done) / per_s)
    end
    stderr:write(format("\rzcrm: %d/%d ids (%d%%), %s ids/s, %d failed, ETA %s\27[K", done, self.total,
        self.total > 0 and floor(100 * done / self.total) or 100, rate, failed, eta))
end

function Progress:clear()
    if self.enabled then stderr:write("\r\27[K") end
end

-- ---- the summary on stderr ------------------------------------------------------

function M.plural(n, word)
    return format("%d %s%s", n, word, n == 1 and "" or "s")
end
local plural = M.plural

--- report.summary(st): what the run did, on stderr. st: total, delinked (of which
-- skipped: per the journal, already: ALREADY_REMOVED, after an answer lost in flight), failed, codes (code -> count of
-- failures), not_sent, duplicates, start (report.now()), stop (why the run stopped
-- early, or nil), journal (its path, or nil).
function M.summary(st)
    local head = format("%s: %d delinked", plural(st.total, "id"), st.delinked)
    local notes = {}
    if st.skipped > 0 then notes[#notes + 1] = format("%d per the journal", st.skipped) end
    if st.already > 0 then notes[#notes + 1] = format("%d found removed after a lost answer", st.already) end
    if #notes > 0 then head = head .. " (" .. concat(notes, ", ") .. ")" end
    local parts = { head }
    if st.failed > 0 then
        local codes = {}
        for code in pairs(st.codes) do codes[#codes + 1] = code end
        table.sort(codes)
        for i, code in ipairs(codes) do codes[i] = format("%s %d", code, st.codes[code]) end
        parts[#parts + 1] = format("%d failed (%s)", st.failed, concat(codes, ", "))
    end
    if st.not_sent > 0 then parts[#parts + 1] = format("%d not sent", st.not_sent) end
    local line = "zcrm: " .. concat(parts, ", ") .. format(" in %.1f s", now() - st.start)
    if st.duplicates > 0 then line = line .. format("; %s given again, sent once", plural(st.duplicates, "duplicate id")) end
    stderr:write(line, "\n")
    if st.stop then stderr:write("zcrm: ", st.stop, "\n") end
    if st.not_sent > 0 or st.failed > 0 then
        stderr:write(st.journal and format("zcrm: re-run with --journal %s to retry only what is not delinked\n",
                                           st.journal)
                     or "zcrm: with --journal FILE a re-run retries only what is not delinked\n")
    end
end

return M
