-- zcrm.response: reads one delink response into an outcome for each id sent.
-- Zoho answers 200/207 (and 400 for all-failed) with {"data":[entry, ...]}, one entry
-- per id, or a flat whole-request error {"code","details","message","status"}.
-- Nothing is invented: an id the body does not account for gets BAD_RESPONSE.

local cjson = require "cjson.safe"
local errors = require "zcrm.errors"

local type, ipairs, pairs, format = type, ipairs, pairs, string.format
local null = cjson.null

local M = {}

local function str(v)
    if type(v) == "string" then return v end
    if type(v) == "number" then return format("%.0f", v) end
    return nil
end

-- The decoded entry e becomes the result entry of id (no second table per id).
local function entry_for(id, e, http_status)
    local details = type(e.details) == "table" and e.details or {}
    if e.status == "success" then
        e.id, e.code, e.message, e.details = id, str(e.code) or "SUCCESS", str(e.message) or "", details
        return e
    end
    if str(e.code) then
        return errors.as_entry(e, id, str(e.code), str(e.message) or "", http_status, details)
    end
    return errors.entry(id, "BAD_RESPONSE", "response entry has neither success nor an error code", http_status)
end

-- Maps entries to ids: by details.id first; entries without an id by position, but only
-- when the array has exactly one entry per id sent.
local function read_data(ids, data, http_status, out)
    local by_id, claimed, loose = nil, {}, {}
    for i, e in ipairs(data) do
        if type(e) == "table" then
            local id = type(e.details) == "table" and str(e.details.id)
            local k
            if id and ids[i] == id then
                k = i -- Zoho answers in the order the ids were sent
            elseif id then
                if not by_id then
                    by_id = {}
                    for j = 1, #ids do by_id[ids[j]] = j end
                end
                k = by_id[id]
            end
            if k and not claimed[k] then
                claimed[k] = entry_for(ids[k], e, http_status)
            elseif not id then
                loose[i] = e
            end
        end
    end
    if #data == #ids then
        for i, e in pairs(loose) do
            if not claimed[i] then claimed[i] = entry_for(ids[i], e, http_status) end
        end
    end
    for i = 1, #ids do
        out[ids[i]] = claimed[i] or errors.entry(ids[i], "BAD_RESPONSE",
            "response does not account for this id", http_status)
    end
end

local function all(ids, out, code, message, http_status, details)
    for i = 1, #ids do out[ids[i]] = errors.entry(ids[i], code, message, http_status, details) end
end

-- Fills out[id] for every id in ids. Returns the whole-request error when the body was
-- one (so the caller can react to INVALID_TOKEN), else nil.
function M.read(ids, status, body, out)
    local doc = cjson.decode(body)
    if type(doc) == "table" and type(doc.data) == "table" and doc.data ~= null
        and (status == 200 or status == 207 or status == 400) then
        read_data(ids, doc.data, status, out)
        return nil
    end
    if type(doc) == "table" and str(doc.code) and doc.data == nil
        and (status >= 400 or doc.status == "error") then
        local whole = errors.new(str(doc.code), str(doc.message) or "", status)
        whole.details = type(doc.details) == "table" and doc.details or {}
        all(ids, out, whole.code, whole.message, status, whole.details)
        return whole
    end
    local why
    if status >= 300 and status < 400 then
        why = format("unexpected redirect (HTTP %d); redirects are not followed", status)
    elseif doc == nil then
        why = format("HTTP %d with a body that is not JSON", status)
    else
        why = format("HTTP %d with JSON that is not a Zoho delink response", status)
    end
    all(ids, out, "BAD_RESPONSE", why, status)
    return nil
end

-- Fills out[id] for every id with a local error (transport, timeout, refresh).
function M.fail(ids, out, code, message, http_status)
    all(ids, out, code, message, http_status)
end

return M
