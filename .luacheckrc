-- luacheck configuration (make lint)
std = "lua54"
max_line_length = 120
files["spec"] = { std = "+busted", max_line_length = 140 }
-- data tables hold whole XML streams on one line each, for readability
files["spec/data"] = { max_line_length = false }
exclude_files = { "build*" }
