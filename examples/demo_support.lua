-- What the two demos (examples/demo.lua for `make demo`, examples/demo_web.lua
-- for `make demo-web`) share: printing as they go, and running the
-- dictionary bot (examples/dictbot.lua) as its own process, as a user would.

local M = {}

function M.say(fmt, ...)
  io.stdout:write(fmt:format(...), "\n")
  io.stdout:flush()
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- The interpreter running us (lua5.4 unless told otherwise by arg[-1]).
local function interpreter()
  local i, lua = -1, nil
  while arg[i] do lua, i = arg[i], i - 1 end
  return lua or "lua5.4"
end

--- The folder of the running demo script.
M.DIR = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."

--- demo_support.start_bot(jid, password, port, owner) -> the bot's stdin
-- (a pipe the demo holds; closing it waits for the bot). The server's
-- certificate is the demo's own: the bot accepts it (LXMPP_INSECURE=1).
function M.start_bot(jid, password, port, owner)
  local cmd = table.concat({
    "LXMPP_INSECURE=1", "LXMPP_OWNER=" .. owner,
    "LUA_PATH=" .. shell_quote(package.path), "LUA_CPATH=" .. shell_quote(package.cpath),
    "exec", interpreter(), shell_quote(M.DIR .. "/dictbot.lua"), jid, password, "127.0.0.1", tostring(port),
  }, " ")
  return assert(io.popen(cmd, "w"))
end

return M
