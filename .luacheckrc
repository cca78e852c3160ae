-- luacheck configuration (make lint)
std = "lua54"
max_line_length = 120
files["spec"] = { std = "+busted", max_line_length = 140 }
-- data tables hold whole XML streams on one line each, for readability
files["spec/data"] = { max_line_length = false }
exclude_files = { "build*" }
-- the LÖVE example: LuaJIT (LÖVE 11's Lua), and LÖVE's callbacks are set on
-- its global table
files["examples/love"] = { std = "luajit", globals = { "love" } }
