-- zcrm.cli.input: the ids of a `zcrm delink` run, with where each came from
-- ("ids.txt:12", "stdin:3", "argument 5"), checked before anything is sent.
-- Failures return nil and a message (one line per problem), for zcrm.cli to report.

local core = require "zcrm.core"

local ipairs, tonumber, tostring = ipairs, tonumber, tostring
local format, concat = string.format, table.concat

local M = {}

local MAX_PROBLEMS = 20 -- listed before "... and N more"

local function trim(s)
    return (s:gsub("^%s+", ""):gsub("%s+$", ""))
end

-- The whole text of path ('-': standard input) and the name messages give it.
local function slurp(path)
    local f, name = io.stdin, "stdin"
    if path ~= "-" then
        local err
        f, err = io.open(path, "rb")
        if not f then return nil, err end
        name = path
    end
    local text, err = f:read("*a")
    if f ~= io.stdin then f:close() end
    if not text then return nil, name .. ": " .. tostring(err) end -- a directory, an I/O error
    return text, name
end

-- One id per line; blank lines are skipped, spaces and a CR (CRLF files) trimmed.
local function read_lines(path, ids, where)
    local text, name = slurp(path)
    if not text then return nil, name end
    local n = 0
    for line in text:gmatch("([^\n]*)\n?") do
        n = n + 1
        local id = trim(line)
        if id ~= "" then
            ids[#ids + 1] = id
            where[#ids] = name .. ":" .. n
        end
    end
    return true
end

--- ok | nil, line, why = input.csv_records(text, fn): calls fn(fields, line) for each
-- record (RFC 4180: quoted fields may hold commas, doubled quotes and line breaks; line
-- is where the record starts).
function M.csv_records(text, fn)
    local pos, n, line = 1, #text, 1
    if text:sub(1, 3) == "\239\187\191" then pos = 4 end -- a spreadsheet's UTF-8 BOM
    local fields, first_line = {}, 1
    while pos <= n do
        local value
        if text:byte(pos) == 34 then -- '"'
            local parts, p = {}, pos + 1
            while true do
                local q = text:find('"', p, true)
                if not q then return nil, first_line, "a quoted field is not closed" end
                local part = text:sub(p, q - 1)
                local _, breaks = part:gsub("\n", "")
                line = line + breaks
                parts[#parts + 1] = part
                if text:byte(q + 1) ~= 34 then
                    p = q + 1
                    break
                end
                parts[#parts + 1] = '"'
                p = q + 2
            end
            value, pos = concat(parts), p
        else
            local stop = text:find("[,\r\n]", pos) or n + 1
            value, pos = text:sub(pos, stop - 1), stop
        end
        fields[#fields + 1] = value
        local c = text:sub(pos, pos)
        if c == "," then
            pos = pos + 1
            if pos > n then -- "a,b," ends with an empty field
                fields[#fields + 1] = ""
                fn(fields, first_line)
            end
        elseif c == "\r" or c == "\n" or c == "" then
            fn(fields, first_line)
            pos = pos + ((c == "\r" and text:sub(pos + 1, pos + 1) == "\n") and 2 or 1)
            line = line + 1
            fields, first_line = {}, line
        else
            return nil, line, "text after the closing quote of a field"
        end
    end
    return true
end

-- The ids of column `column` of a CSV file with a header row.
local function read_csv(path, column, ids, where, problems)
    local text, name = slurp(path)
    if not text then return nil, name end
    local index, fatal
    local ok, line, why = M.csv_records(text, function(fields, at)
        if fatal or (#fields == 1 and trim(fields[1]) == "") then return end -- blank line
        if not index then
            for i = #fields, 1, -1 do
                if trim(fields[i]) == column then index = i end
            end
            if not index then
                for i, h in ipairs(fields) do fields[i] = format("%q", trim(h)) end
                fatal = format("%s:%d: no column %q in the header row (columns: %s)", name, at, column,
                               concat(fields, ", "))
            end
            return
        end
        local id = fields[index] and trim(fields[index])
        if not id then
            problems[#problems + 1] = format("%s:%d: the row has %d field%s, column %q is field %d",
                                             name, at, #fields, #fields == 1 and "" or "s", column, index)
        elseif id == "" then
            problems[#problems + 1] = format("%s:%d: column %q is empty", name, at, column)
        else
            ids[#ids + 1] = id
            where[#ids] = name .. ":" .. at
        end
    end)
    if fatal then return nil, fatal end
    if not ok then problems[#problems + 1] = format("%s:%d: %s", name, line, why) end
    if not index and #problems == 0 then return nil, format("%s: no header row (--column needs one)", name) end
    return true
end

--- ids, where, problems | nil, message = input.read(opts, positionals)
-- opts["ids-file"], opts.column; positionals[4..] are ids given as arguments, each
-- {value=, index=} (its position in argv). problems: what is wrong with the rows.
function M.read(opts, positionals)
    local ids, where, problems = {}, {}, {}
    local ok, err = true, nil
    if opts["ids-file"] and opts.column then
        ok, err = read_csv(opts["ids-file"], opts.column, ids, where, problems)
    elseif opts["ids-file"] then
        ok, err = read_lines(opts["ids-file"], ids, where)
    else
        for i = 4, #positionals do
            ids[#ids + 1] = positionals[i].value
            where[#ids] = "argument " .. positionals[i].index
        end
    end
    if not ok then return nil, err end
    return ids, where, problems
end

--- distinct, duplicates | nil, message = input.check(client, target, ids, where, problems)
-- Every id is checked by the library's own validation (zcrm.core.plan, what
-- client:delink runs first), each bad one reported with where it came from.
-- distinct: the ids in first-seen order, each once; duplicates: how many were dropped.
function M.check(client, target, ids, where, problems)
    local module, record, related = target[1], target[2], target[3]
    local plan, _, message = core.plan(client.api_domain, client.version, module, record, related, ids)
    if not plan then
        local first = tonumber(message:match("^ids%[(%d+)%] "))
        if not first then return nil, message end -- the record id, module or related list
        -- Only on this path: each id on its own, to list every bad one.
        for i = first, #ids do
            local valid, _, why = core.plan(client.api_domain, client.version, module, record, related, ids[i])
            if not valid then problems[#problems + 1] = where[i] .. ": " .. why:gsub("^id ", "") end
        end
        if #problems == 0 then return nil, message end
    end
    if #problems > 0 then
        local shown = {}
        for i = 1, math.min(#problems, MAX_PROBLEMS) do shown[i] = problems[i] end
        if #problems > MAX_PROBLEMS then shown[#shown + 1] = format("... and %d more", #problems - MAX_PROBLEMS) end
        return nil, concat(shown, "\n")
    end
    local distinct, seen = {}, {}
    for _, id in ipairs(plan.ids) do
        if not seen[id] then
            seen[id] = true
            distinct[#distinct + 1] = id
        end
    end
    return distinct, #plan.ids - #distinct
end

return M
