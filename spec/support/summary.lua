-- busted output handler: busted's usual terminal output, then one plain line
-- "N passed, N failed" (errors count as failed; ", N skipped" for pending), which CI reads.
return function(options)
    local busted = require "busted"
    local handler = require "busted.outputHandlers.utfTerminal"(options)
    busted.subscribe({ "suite", "end" }, function()
        local line = string.format("%d passed, %d failed", #handler.successes, #handler.failures + #handler.errors)
        if #handler.pendings > 0 then line = line .. string.format(", %d skipped", #handler.pendings) end
        io.stdout:write("\n", line, "\n")
        io.stdout:flush()
        return nil, true
    end)
    return handler
end
