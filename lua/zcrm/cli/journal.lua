-- zcrm.cli.journal: the --journal file of `zcrm delink`, which makes a run resumable.
-- Append-only, one JSON object per line, each write flushed at once, so that a run
-- killed at any point loses nothing it wrote:
--
--   {"type":"run","module":…,"record":…,"related":…,"time":…,"api_domain":…,"zcrm":…}   a run starts
--   {"type":"sent","ids":[…]}                      before a chunk goes to client:delink
--   {"type":"outcome","id":…,"status":…,"code":…,"message":…}   each id of it, after
--
-- Reading it back: an id with a "success" outcome is done; an id some run sent without
-- recording an outcome was in flight when that run was killed (its answer was lost).
-- One run per journal at a time.

local cjson = require "cjson.safe"
local report = require "zcrm.cli.report"

local setmetatable, ipairs, pairs, type, tostring = setmetatable, ipairs, pairs, type, tostring
local format, concat = string.format, table.concat
local json_string = report.json_string

local M = {}

--- state | nil, message = journal.load(path, target)
-- state.done[id]: the success outcome an earlier run recorded; state.lost[id]: true when
-- a run sent id and recorded no outcome; state.bad: numbers of unreadable lines (a write
-- cut short by a kill: no outcome is taken from them, so their ids count as unanswered).
-- A journal begun for another target (module, record, related list) is refused.
function M.load(path, target)
    local state = { path = path, done = {}, lost = {}, bad = {} }
    local f = io.open(path, "rb")
    if not f then return state end -- a new journal
    local text = f:read("*a") or ""
    f:close()
    state.needs_newline = #text > 0 and text:sub(-1) ~= "\n"
    if state.needs_newline then text = text .. "\n" end
    local pending, n = {}, 0
    local function end_run()
        for id in pairs(pending) do state.lost[id] = true end
        pending = {}
    end
    for line in text:gmatch("([^\n]*)\n") do
        n = n + 1
        local rec = line == "" and {} or cjson.decode(line) -- a blank line says nothing
        if type(rec) ~= "table" then
            state.bad[#state.bad + 1] = n
        elseif rec.type == "run" then
            end_run()
            if rec.module ~= target[1] or rec.record ~= target[2] or rec.related ~= target[3] then
                return nil, format("journal %s:%d is for %s %s %s, not %s %s %s: use another journal file", path, n,
                    tostring(rec.module), tostring(rec.record), tostring(rec.related), target[1], target[2], target[3])
            end
        elseif rec.type == "sent" and type(rec.ids) == "table" then
            for _, id in ipairs(rec.ids) do pending[id] = true end
        elseif rec.type == "outcome" and type(rec.id) == "string" then
            pending[rec.id] = nil
            if rec.status == "success" then state.done[rec.id] = rec end
        end
    end
    end_run()
    return state
end

local Journal = {}
Journal.__index = Journal

--- journal | nil, message = journal.open(state, target, api_domain, version): appends a
-- "run" record to the journal state was loaded from.
function M.open(state, target, api_domain, version)
    local f, err = io.open(state.path, "ab")
    if not f then return nil, "journal: " .. tostring(err) end
    local self = setmetatable({ file = f, path = state.path }, Journal)
    local head = format('{"type":"run","module":%s,"record":%s,"related":%s,"time":%s,"api_domain":%s,"zcrm":%s}\n',
        json_string(target[1]), json_string(target[2]), json_string(target[3]),
        json_string(os.date("!%Y-%m-%dT%H:%M:%SZ")), json_string(api_domain), json_string(version))
    -- A line a kill cut short stays a line of its own instead of swallowing this one.
    local ok, werr = self:write((state.needs_newline and "\n" or "") .. head)
    if not ok then
        f:close()
        return nil, werr
    end
    return self
end

--- ok | nil, message = journal:write(text): appended and flushed to the kernel.
function Journal:write(text)
    local ok, err = self.file:write(text)
    if ok then ok, err = self.file:flush() end
    if not ok then return nil, format("cannot write the journal %s: %s", self.path, tostring(err)) end
    return true
end

--- ok | nil, message = journal:sent(ids): before the ids are handed to client:delink.
function Journal:sent(ids)
    local parts = {}
    for i, id in ipairs(ids) do parts[i] = json_string(id) end
    return self:write('{"type":"sent","ids":[' .. concat(parts, ",") .. "]}\n")
end

--- ok | nil, message = journal:outcomes(records): one line per id, in one write.
function Journal:outcomes(records)
    local lines = {}
    for i, r in ipairs(records) do lines[i] = report.json_record(r, "outcome") .. "\n" end
    return self:write(concat(lines))
end

function Journal:close()
    self.file:close()
end

return M
