-- zcrm.errors: the error value of the whole API.
-- An error is a table {code=, message=, http_status=|nil} (a failed result entry also
-- carries id, status = "error" and details) whose tostring is one readable line.

local setmetatable, tostring, type = setmetatable, tostring, type
local format, gsub = string.format, string.gsub

local M = {}

local mt = {}
mt.__index = mt
M.mt = mt -- also given to the C core, which builds result entries (core.read)

function mt.__tostring(e)
    local line = "zcrm: " .. tostring(e.code) .. ": " .. tostring(e.message)
    if e.http_status then line = line .. format(" (HTTP %d)", e.http_status) end
    if e.id then line = line .. " [id " .. e.id .. "]" end
    return (gsub(line, "[%c]", " ")) -- one line, whatever a server sent
end

function M.new(code, message, http_status)
    return setmetatable({ code = code, message = message, http_status = http_status }, mt)
end

function M.is(v)
    return type(v) == "table" and getmetatable(v) == mt
end

-- Makes t the failed result entry for one id: an error that also says which id.
function M.as_entry(t, id, code, message, http_status, details)
    t.id, t.status, t.code, t.message, t.http_status, t.details = id, "error", code, message, http_status, details or {}
    return setmetatable(t, mt)
end

function M.entry(id, code, message, http_status, details)
    return M.as_entry({}, id, code, message, http_status, details)
end

-- Replaces each secret (strings of 8+ bytes) found in text by "<redacted>".
function M.redact(text, secrets)
    text = tostring(text)
    for i = 1, #secrets do
        local s = secrets[i]
        if type(s) == "string" and #s >= 8 then
            local start, stop = text:find(s, 1, true)
            while start do
                text = text:sub(1, start - 1) .. "<redacted>" .. text:sub(stop + 1)
                start, stop = text:find(s, start + 10, true)
            end
        end
    end
    return text
end

return M
