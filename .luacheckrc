-- luacheck configuration (make lint)
std = "max"
max_line_length = 130
files["spec"] = { std = "+busted" }
files["spec/simulator"] = { std = "ngx_lua" }
files["spec/nginx"] = { std = "ngx_lua" }
files["spec/support/summary.lua"] = { std = "max" }
files["examples/crm.lua"] = { std = "ngx_lua" }
