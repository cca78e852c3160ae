-- The Lua interpreter the specs run under, for the specs that start Lua
-- processes of their own (bin/lxmpp, examples, helper scripts): the same
-- Lua, so `make test LUA=luajit` tests LuaJIT all the way down. LXMPP_LUA
-- (set by the Makefile from LUA) names it; else it is told from the
-- running version (the Debian names: lua5.1, lua5.3, lua5.4, luajit).
local env = os.getenv("LXMPP_LUA")
if env and env ~= "" then return env end
if type(rawget(_G, "jit")) == "table" then return "luajit" end
return "lua" .. _VERSION:match("%d+%.%d+")
